"""Chat API of the original Qwen-VL (filled in below)."""

from __future__ import annotations


class QWenChatMixin:
    """``chat`` / ``chat_stream`` for QWenLMHeadModel."""
