"""Streaming helpers: run a backend's ``stream()`` in a worker thread, and split tool-calling output live.

:class:`ThreadedStream` moves a blocking iterator onto a worker thread and hands its items to the event loop,
so generation never blocks the loop; ``cancel()`` stops it between two deltas (and closes the backend's
iterator, which stops a local model at the next token).

:class:`CallSplitter` turns a growing ReAct reply into stream events: plain content, the start of a function
call (its name), and argument fragments, as soon as each is certain. When the generation ends, the
protocol's own ``parse_reply`` result is the reference and only what was not sent yet is added, so a
streamed reply reassembles to the same message as a non-streamed one.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from qvl_agent.messages import ParsedReply

_ACTION = "\nAction:"
_ACTION_INPUT = "\nAction Input:"
_OBSERVATION = "\nObservation:"
_FINAL_ANSWER = "\nFinal Answer: "


@dataclass
class StreamEvent:
    kind: Literal["content", "call", "arguments"]
    text: str


class CallSplitter:
    """Incremental reader of model output while functions are offered.

    ``react=True`` reads the ReAct format live (``Final Answer:`` text streams as content; after
    ``Action:``/``Action Input:`` the arguments stream as they are generated). With another protocol the
    reply is held until the end and then split by the protocol's parse.
    """

    def __init__(self, prefix: str = "", react: bool = True) -> None:
        self.text = prefix
        self.react = react
        self.mode: Literal["undecided", "answer", "call"] = "undecided"
        self.sent_content = ""
        self.sent_arguments = ""
        self.call_name: str | None = None
        self._answer_start = 0
        self._arguments_start = 0

    def feed(self, delta: str) -> list[StreamEvent]:
        self.text += delta
        if not self.react:
            return []
        events: list[StreamEvent] = []
        if self.mode == "undecided":
            i = self.text.find(_ACTION)
            j = self.text.find(_ACTION_INPUT, i + 1) if i >= 0 else -1
            z = self.text.find(_FINAL_ANSWER)
            if i >= 0 and j > i and (z < 0 or z > i) and self.text[i + len(_ACTION) : j].strip():
                self.mode = "call"
                self.call_name = self.text[i + len(_ACTION) : j].strip()
                self._arguments_start = j + len(_ACTION_INPUT)
                if self.text[:i]:
                    events += self._content(self.text[:i])
                events.append(StreamEvent("call", self.call_name))
            elif z >= 0 and (i < 0 or i > z):
                self.mode = "answer"
                self._answer_start = z + len(_FINAL_ANSWER)
        if self.mode == "answer":
            events += self._content(self.text[self._answer_start :])
        elif self.mode == "call":
            events += self._arguments(self._safe_arguments())
        return events

    def finish(self, parsed: ParsedReply) -> list[StreamEvent]:
        """Events for what the final parse has and was not sent yet."""
        events: list[StreamEvent] = []
        call = parsed.function_call
        if call is not None:
            if self.mode != "call":
                if parsed.content:
                    events += self._content(parsed.content)
                events.append(StreamEvent("call", call.name))
                self.mode, self.call_name = "call", call.name
            events += self._arguments(call.arguments)
        else:
            events += self._content(parsed.content or "")
        return events

    def _content(self, full: str) -> list[StreamEvent]:
        # what was sent cannot be taken back: only a continuation of it is streamed
        if not full.startswith(self.sent_content) or len(full) == len(self.sent_content):
            return []
        piece = full[len(self.sent_content) :]
        self.sent_content = full
        return [StreamEvent("content", piece)]

    def _arguments(self, full: str) -> list[StreamEvent]:
        if not full.startswith(self.sent_arguments) or len(full) == len(self.sent_arguments):
            return []
        piece = full[len(self.sent_arguments) :]
        self.sent_arguments = full
        return [StreamEvent("arguments", piece)]

    def _safe_arguments(self) -> str:
        """The arguments text that cannot change any more: stripped, and short of a possible Observation."""
        raw = self.text[self._arguments_start :]
        cut = raw.find(_OBSERVATION)
        if cut >= 0:
            raw = raw[:cut]
        else:
            for k in range(len(_OBSERVATION) - 1, 0, -1):
                if raw.endswith(_OBSERVATION[:k]):
                    raw = raw[:-k]
                    break
        return raw.strip()


_DONE = object()


class ThreadedStream:
    """Iterate a blocking iterator on a worker thread; ``async for`` over it on the event loop.

    The iterator's return value (``StopIteration.value``) is kept in :attr:`result`. ``on_exit`` runs on the
    event loop once the worker has finished (normally, with an error, or after :meth:`cancel`).
    """

    def __init__(self, make_iterator: Callable[[], Iterator[Any]], on_exit: Callable[[], None] | None = None):
        self._make_iterator = make_iterator
        self._on_exit = on_exit
        self._cancel = threading.Event()
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self.result: Any = None
        self.finished = asyncio.Event()
        self._thread = threading.Thread(target=self._work, name="qvl-server-stream", daemon=True)
        self._started = False

    def start(self) -> None:
        self._started = True
        self._thread.start()

    @property
    def started(self) -> bool:
        return self._started

    def cancel(self) -> None:
        """Ask the worker to stop at the next delta (thread-safe, idempotent)."""
        self._cancel.set()

    def _post(self, item: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the loop is gone (server shutting down)
            pass

    def _work(self) -> None:
        iterator: Iterator[Any] | None = None
        try:
            iterator = self._make_iterator()
            while not self._cancel.is_set():
                try:
                    item = next(iterator)
                except StopIteration as stop:
                    self.result = stop.value
                    break
                self._post(("item", item))
        except BaseException as exc:  # handed to the consumer
            self._post(("error", exc))
        finally:
            if iterator is not None and hasattr(iterator, "close"):
                try:
                    iterator.close()  # stops a local model's generation thread
                except Exception:
                    pass
            self._post(("done", None))
            try:
                self._loop.call_soon_threadsafe(self._exited)
            except RuntimeError:
                pass

    def _exited(self) -> None:
        self.finished.set()
        if self._on_exit is not None:
            self._on_exit()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        if not self._started:
            self.start()
        while True:
            kind, item = await self._queue.get()
            if kind == "item":
                yield item
            elif kind == "error":
                raise item
            else:
                return
