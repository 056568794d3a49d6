"""Model backends: what the agent loop, the server and the console call to generate text.

A backend continues a :class:`~qvl_agent.messages.GenerationRequest`. Backends are provided by plugins through
the ``register_models`` hook; the built-in ones are the local Qwen-VL core (any checkpoint directory), the
embedded demo model and a remote OpenAI-compatible upstream.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator

from qvl_agent.messages import GenerationRequest, GenerationResult


class ModelBackend(ABC):
    """Base class of every model backend."""

    #: the name clients use for it (``model`` field of an OpenAI request)
    name: str = "model"

    @abstractmethod
    def generate(self, request: GenerationRequest) -> GenerationResult:
        """Generate the whole reply at once."""

    @abstractmethod
    def stream(self, request: GenerationRequest) -> Iterator[str]:
        """Yield the reply as text deltas. The last value returned (via ``StopIteration``) may be a
        :class:`GenerationResult`; consumers that need usage counts call :meth:`generate` or read
        ``self.last_result`` after exhausting the iterator."""

    def count_tokens(self, text: str) -> int:
        """Number of tokens ``text`` encodes to (used for usage reporting)."""
        return len(text.split())
