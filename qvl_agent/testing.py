"""Test helpers for plugin authors and for qvl_agent's own tests.

:class:`ScriptedBackend` is a model backend that answers from a script instead of a neural network, so the
agent loop, protocols, server and console can be tested for their logic. It records every request it got.
:func:`cli_error_line` checks that a failed command said so in one ``Error:`` line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from qvl_agent.backends import ModelBackend
from qvl_agent.messages import GenerationRequest, GenerationResult

Reply = str | Callable[[GenerationRequest], str]


class ScriptedBackend(ModelBackend):
    """Answers with the given replies in turn (the last one repeats); a reply may be a function of the request.

    Stop strings in the request are honoured like a real model: the reply is cut before the first one.
    """

    def __init__(self, replies: list[Reply] | Reply, name: str = "scripted", chunk_size: int = 4) -> None:
        self.replies = replies if isinstance(replies, list) else [replies]
        self.name = name
        self.chunk_size = chunk_size
        self.requests: list[GenerationRequest] = []

    def _next_text(self, request: GenerationRequest) -> tuple[str, str]:
        self.requests.append(request)
        reply = self.replies[min(len(self.requests) - 1, len(self.replies) - 1)]
        text = reply(request) if callable(reply) else reply
        finish = "stop"
        cut = min((i for i in (text.find(s) for s in request.stop) if i >= 0), default=-1)
        if cut >= 0:
            text = text[:cut]
        if request.max_new_tokens is not None and self.count_tokens(text) > request.max_new_tokens:
            text = " ".join(text.split(" ")[: request.max_new_tokens])
            finish = "length"
        return text, finish

    def generate(self, request: GenerationRequest) -> GenerationResult:
        text, finish = self._next_text(request)
        return GenerationResult(
            text=text,
            finish_reason=finish,
            prompt_tokens=self.count_tokens(request.query or ""),
            completion_tokens=self.count_tokens(text),
        )

    def stream(self, request: GenerationRequest) -> Iterator[str]:
        result = self.generate(request)
        for i in range(0, len(result.text), self.chunk_size):
            yield result.text[i : i + self.chunk_size]
        return result


def cli_error_line(result: Any) -> str:
    """The ``Error: …`` line of a failed click command run by ``CliRunner`` (asserts a non-zero exit, exactly
    one such line and no traceback)."""
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output, result.output
    (line,) = [x for x in result.output.splitlines() if x.startswith("Error:")]
    return line
