"""Exceptions raised for bad input anywhere in qvl_agent, each naming the problem in its message."""

from __future__ import annotations


class QwenVLError(Exception):
    """Base class of qvl_agent's own errors."""


class InputError(QwenVLError, ValueError):
    """The caller's input is wrong (text, ids, arguments): the message says what and where."""


class ImageLoadError(InputError):
    """A picture could not be found, fetched or decoded."""


class ContextLengthError(InputError):
    """A prompt does not fit the model's context window."""
