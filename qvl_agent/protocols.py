"""Function-calling protocols: how tools are shown to the model and how its replies are read back.

Protocols are provided by plugins through the ``function_call_protocols`` hook; the built-in default is ReAct
in the exact format of the original Qwen-VL ``openai_api.py``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from qvl_agent.messages import FunctionSpec, GenerationRequest, Message, ParsedReply


class FunctionCallProtocol(ABC):
    """Turns OpenAI-style messages + function specs into a model request, and model text into a reply."""

    #: the name used to pick this protocol (``Agent(protocol="react")``, server config)
    name: str = "protocol"

    @abstractmethod
    def build_request(
        self, messages: list[Message], functions: list[FunctionSpec] | None = None
    ) -> GenerationRequest:
        """Render the conversation (and the tool descriptions, if any) into a request.

        Raises :class:`ValueError` with a clear message for malformed conversations."""

    @abstractmethod
    def parse_reply(self, text: str, functions: list[FunctionSpec] | None = None) -> ParsedReply:
        """Read generated text back into content or a function call. Never raises."""

    def stop_words(self, functions: list[FunctionSpec] | None = None) -> list[str]:
        """Extra stop strings needed while tools are offered."""
        return []
