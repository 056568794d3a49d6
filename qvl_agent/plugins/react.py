"""Built-in plugin: the "react" function-calling protocol (the original Qwen-VL ``openai_api.py`` format).

Messages are flattened to the original server's text form: image parts become ``Picture N: <img>image-N</img>\\n``
(numbered across the conversation, their decoded pictures go to ``request.images`` in the same order),
``tools``-style messages (assistant ``tool_calls``, ``tool`` results) are mapped to the legacy
``function_call``/``function`` form, then :func:`qvl_agent.prompting.react.parse_messages` renders the ReAct
prompt. Replies are read with the original ``parse_response`` and never raise.
"""

from __future__ import annotations

from typing import Any

from qvl_agent.hookspecs import hookimpl
from qvl_agent.messages import (
    FunctionCall,
    FunctionSpec,
    GenerationRequest,
    ImagePart,
    Message,
    ParsedReply,
    TextPart,
)
from qvl_agent.model.errors import InputError
from qvl_agent.prompting import react
from qvl_agent.protocols import FunctionCallProtocol


def image_reference(index: int) -> str:
    """The text that stands for picture ``index`` (1-based) inside ``<img>…</img>``."""
    return f"image-{index}"


def function_dict(spec: FunctionSpec | dict[str, Any]) -> dict[str, Any]:
    """A function definition as the original server saw it (OpenAI shape plus optional ``name_for_human``)."""
    spec = FunctionSpec.from_any(spec)
    func: dict[str, Any] = {"name": spec.name, "description": spec.description, "parameters": spec.parameters}
    if spec.name_for_human:
        func["name_for_human"] = spec.name_for_human
    return func


class ReactProtocol(FunctionCallProtocol):
    """ReAct prompting exactly as Qwen-VL-Chat was served by its ``openai_api.py``."""

    name = "react"

    def build_request(
        self, messages: list[Message], functions: list[FunctionSpec] | None = None
    ) -> GenerationRequest:
        """Render ``messages`` (+ ``functions``) into a request. Raises :class:`ReactFormatError` (an
        :class:`InputError`) with the original server's detail for malformed conversations."""
        if not messages:
            raise react.ReactFormatError("Invalid request: Expecting at least one user message.")
        images = []
        plain: list[dict[str, Any]] = []
        pending_calls: list[FunctionCall] = []
        for position, message in enumerate(messages):
            if isinstance(message, dict):
                message = Message.model_validate(message)
            text = self._render_content(message, images, position)
            role = message.role
            if role == "tool":
                plain.append({"role": "function", "content": text})
                if pending_calls:  # the next call of a multi-call assistant turn
                    plain.append(
                        {"role": "assistant", "content": None, "function_call": _call(pending_calls.pop(0))}
                    )
                continue
            if role == "function":
                plain.append({"role": "function", "content": text})
                continue
            call = message.function_call
            if role == "assistant" and message.tool_calls:
                calls = [tc.function for tc in message.tool_calls]
                call, pending_calls = calls[0], calls[1:]
            plain.append(
                {
                    "role": role,
                    "content": text if text or call is None else None,
                    "function_call": _call(call),
                }
            )
        funcs = [function_dict(f) for f in functions] if functions else None
        query, history = react.parse_messages(plain, funcs)
        return GenerationRequest(
            query=query,
            history=history,
            images=images,
            stop=react.stop_words(None, bool(funcs)) or [],
        )

    def parse_reply(self, text: str, functions: list[FunctionSpec] | None = None) -> ParsedReply:
        """Read model text: a function call (``thought`` = the text before ``Action:``) or plain content."""
        if not isinstance(text, str):
            text = "" if text is None else str(text)
        parsed = react.parse_response(text)
        call = parsed["function_call"]
        if call is None:
            return ParsedReply(content=parsed["content"])
        return ParsedReply(
            content=parsed["content"],
            function_call=FunctionCall(name=call["name"], arguments=call["arguments"]),
            thought=react.split_thought(parsed["content"]) or parsed["content"].strip() or None,
        )

    def stop_words(self, functions: list[FunctionSpec] | None = None) -> list[str]:
        return react.stop_words(None, bool(functions)) or []

    @staticmethod
    def _render_content(message: Message, images: list, position: int) -> str:
        if message.content is None or isinstance(message.content, str):
            return message.content or ""
        pieces = []
        for part in message.content:
            if isinstance(part, TextPart):
                pieces.append(part.text)
            elif isinstance(part, ImagePart):
                image = part.image
                if image is None:
                    if not part.url:
                        raise InputError(f"message {position}: an image part has neither a picture nor a url")
                    from qvl_agent import plugins

                    image = plugins.fetch_image(part.url)
                images.append(image)
                n = len(images)
                pieces.append(f"Picture {n}: <img>{image_reference(n)}</img>\n")
        return "".join(pieces)


def _call(call: FunctionCall | None) -> dict[str, str] | None:
    return None if call is None else {"name": call.name, "arguments": call.arguments}


@hookimpl
def function_call_protocols() -> list[FunctionCallProtocol]:
    return [ReactProtocol()]
