"""Chat completions: OpenAI request → qvl_agent messages → protocol → backend → OpenAI response / chunks.

This module holds the logic of ``POST /v1/chat/completions``; :mod:`qvl_agent.server.app` only wires it to
HTTP. Everything blocking (image fetching, prompt rendering, generation, tools) runs on worker threads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlparse

from PIL import Image

from qvl_agent.backends import ModelBackend
from qvl_agent.messages import (
    Box,
    FunctionCall,
    FunctionSpec,
    GenerationRequest,
    GenerationResult,
    ImageLimits,
    ImagePart,
    Message,
    ParsedReply,
    TextPart,
)
from qvl_agent.protocols import FunctionCallProtocol
from qvl_agent.server import schemas as s
from qvl_agent.server.errors import APIError, from_exception
from qvl_agent.server.limiter import Limiter
from qvl_agent.server.streaming import CallSplitter, StreamEvent, ThreadedStream

log = logging.getLogger("qvl_agent.server")

CallStyle = Literal["functions", "tools"]


@dataclass
class Prepared:
    """A validated request, ready for the backend."""

    request: s.ChatCompletionRequest
    messages: list[Message]
    functions: list[FunctionSpec] | None
    style: CallStyle | None
    generation: GenerationRequest
    #: text already put in the assistant's mouth to force a call (ReAct); parsed together with the output
    prefix: str = ""
    pictures: list[Image.Image] = field(default_factory=list)


@dataclass
class Outcome:
    """What one generation produced, in the response's terms."""

    content: str | None
    call: FunctionCall | None
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    boxes: list[Box] = field(default_factory=list)
    trace: list[s.AgentStep] | None = None


class Slot:
    """A generation slot taken for one streamed response; freed exactly once."""

    def __init__(self, limiter: Limiter) -> None:
        self.limiter = limiter
        self.released = False
        self.worker: ThreadedStream | None = None

    def hand_to(self, worker: ThreadedStream) -> ThreadedStream:
        """From now on ``worker`` frees the slot when its thread ends."""
        self.worker = worker
        worker.start()
        return worker

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.limiter.release()

    def close(self) -> None:
        """The response is over: stop the worker (it frees the slot when it stops), or free it now."""
        if self.worker is not None:
            self.worker.cancel()
        else:
            self.release()


class ChatService:
    """Serves chat completions from one backend through one function-calling protocol."""

    def __init__(
        self,
        backend: ModelBackend,
        protocol: FunctionCallProtocol,
        limiter: Limiter,
        image_limits: ImageLimits,
        model_names: list[str],
    ) -> None:
        self.backend = backend
        self.protocol = protocol
        self.limiter = limiter
        self.image_limits = image_limits
        self.model_names = model_names

    # -- request → messages ------------------------------------------------------------------------------

    def check_model(self, name: str) -> None:
        if name not in self.model_names:
            raise APIError(
                404,
                f"the model {name!r} does not exist on this server; available: {', '.join(self.model_names)}",
                param="model",
                code="model_not_found",
            )

    def prepare(self, request: s.ChatCompletionRequest) -> Prepared:
        """Validate and convert a request (blocking: fetches images). Raises :class:`APIError`."""
        problem = request.unsupported()
        if problem is not None:
            raise APIError(400, problem[1], param=problem[0], code="unsupported_value")
        if request.agent is not None:
            self._check_agent_tools(request.agent.tools)
        messages = _to_messages(request.messages)
        messages = [self._resolve_images(m, i) for i, m in enumerate(messages)]
        pictures = [p.image for m in messages for p in m.images() if p.image is not None]
        functions, style, forced = _functions_of(request)

        try:
            generation = self.protocol.build_request(messages, functions)
        except APIError:
            raise
        except ValueError as exc:  # includes InputError / ReactFormatError
            raise APIError(400, str(exc), param="messages") from None
        if len(generation.images) != len(pictures):
            # protocols decode nothing themselves: they get the pictures from the messages, in order
            generation = generation.model_copy(update={"images": pictures})

        prefix = ""
        if forced is not None and functions and self.protocol.name == "react":
            prefix = _react_force_prefix(forced)
            if generation.query is None:
                history = list(generation.history)
                user, assistant = history[-1]
                history[-1] = (user, assistant + prefix)
            else:
                history = [*generation.history, (generation.query, prefix)]
            generation = generation.model_copy(update={"history": history, "query": None})

        stops = _stop_words(request.stop_list, self.protocol.stop_words(functions), generation.stop)
        generation = generation.model_copy(
            update={
                "stop": stops,
                "max_new_tokens": request.max_new_tokens,
                "temperature": request.temperature,
                "top_p": request.top_p,
                "seed": request.seed,
                # <img>PATH-or-URL</img> typed in the text obeys the server's image settings too
                "image_limits": self.image_limits,
            }
        )
        return Prepared(request, messages, functions, style, generation, prefix, pictures)

    def _resolve_images(self, message: Message, index: int) -> Message:
        if not message.images():
            return message
        from qvl_agent import plugins

        parts: list[TextPart | ImagePart] = []
        for part in message.content:  # type: ignore[union-attr]
            if isinstance(part, ImagePart) and part.image is None:
                url = part.url or ""
                self._check_image_source(url, index)
                try:
                    image = plugins.fetch_image(url, self.image_limits)
                except ValueError as exc:
                    raise APIError(
                        400,
                        f"messages[{index}]: cannot load image: {exc}",
                        param=f"messages[{index}].content",
                    ) from None
                part = part.model_copy(update={"image": image})
            parts.append(part)
        return message.model_copy(update={"content": parts})

    def _check_image_source(self, url: str, index: int) -> None:
        scheme = urlparse(url).scheme.lower() if "://" in url or url.startswith("data:") else ""
        param = f"messages[{index}].content"
        if scheme in ("http", "https"):
            if not self.image_limits.allow_http:
                raise APIError(400, "images by http(s) URL are disabled on this server", param=param)
        elif scheme == "data":
            if not self.image_limits.allow_data:
                raise APIError(400, "images by data: URL are disabled on this server", param=param)
        elif scheme in ("", "file"):
            if not self.image_limits.allow_local:
                raise APIError(
                    400,
                    f"local image files are disabled on this server (got {url[:100]!r}); send an http(s) or "
                    "data: URL, or start the server with --allow-local-images",
                    param=param,
                )
        else:
            raise APIError(400, f"unsupported image URL scheme {scheme!r} in {url[:100]!r}", param=param)

    # -- generation --------------------------------------------------------------------------------------

    def _outcome(self, prepared: Prepared, result: GenerationResult) -> Outcome:
        text = prepared.prefix + result.text
        if prepared.functions:
            parsed = self.protocol.parse_reply(text, prepared.functions)
        else:
            parsed = ParsedReply(content=text)
        finish = result.finish_reason
        if parsed.function_call is not None:
            finish = "function_call" if prepared.style == "functions" else "tool_calls"
        content = parsed.content
        return Outcome(
            content=content if content or parsed.function_call is None else None,
            call=parsed.function_call,
            finish_reason=finish,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            boxes=self._boxes(content or "", prepared) if parsed.function_call is None else [],
        )

    def _boxes(self, text: str, prepared: Prepared) -> list[Box]:
        """Grounding boxes of an answer, from the ``postprocess_response`` plugins."""
        if "<box>" not in text and "<quad>" not in text:
            return []
        from qvl_agent import plugins
        from qvl_agent.messages import AgentResponse, ResponseContext

        try:
            response = AgentResponse(text=text, images=prepared.pictures)
            processed = plugins.postprocess(response, ResponseContext(messages=prepared.messages))
        except Exception:  # a broken post-processor must not lose the answer
            log.exception("postprocess_response failed")
            return []
        return list(getattr(processed or response, "boxes", []) or [])

    def generate(self, prepared: Prepared) -> Outcome:
        """Blocking: one whole generation."""
        steps = self._generation(prepared)
        while True:
            try:
                next(steps)
            except StopIteration as stop:
                return stop.value

    def _generation(self, prepared: Prepared) -> Iterator[None]:
        """One whole generation as a blocking generator that yields between deltas (so a worker running it
        can stop it there, which closes the model's stream); returns the :class:`Outcome`."""
        if prepared.request.agent is not None:
            events = self._agent_events(prepared)
            try:
                for item in events:
                    if isinstance(item, Outcome):
                        return item
                    yield None
            finally:
                events.close()
            raise RuntimeError("the agent loop ended without an answer")  # pragma: no cover
        chunks = self.backend.stream(prepared.generation)
        text, returned = "", None
        try:
            while True:
                try:
                    delta = next(chunks)
                except StopIteration as stop:
                    returned = stop.value
                    break
                if isinstance(delta, str):
                    text += delta
                yield None
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        return self._outcome(prepared, self._final_result(prepared, returned, text))

    def _final_result(self, prepared: Prepared, returned: Any, text: str) -> GenerationResult:
        """The :class:`GenerationResult` of a streamed generation whose deltas added up to ``text``: the one
        the backend returned (or kept in ``last_result``) for its finish reason and usage, else counted."""
        result = returned if isinstance(returned, GenerationResult) else None
        if result is None:
            last = getattr(self.backend, "last_result", None)
            result = last if isinstance(last, GenerationResult) and last.text == text else None
        result = (result or GenerationResult(text=text)).model_copy(update={"text": text})
        return _with_usage(self.backend, prepared.generation, result)

    async def _generate_watching(
        self, prepared: Prepared, is_disconnected: Callable[[], Awaitable[bool]] | None
    ) -> Outcome | None:
        """Run :meth:`generate` on a worker thread; None when the client went away (generation stopped)."""
        worker = ThreadedStream(lambda: self._generation(prepared))
        worker.start()
        drained = asyncio.ensure_future(_drain(worker))
        try:
            while not drained.done():
                done, _ = await asyncio.wait({drained}, timeout=_DISCONNECT_POLL_S)
                if not done and is_disconnected is not None and await is_disconnected():
                    log.info("client disconnected; stopping its generation")
                    return None
            return drained.result()
        finally:
            if not drained.done():
                worker.cancel()
                drained.cancel()
                # the slot is given back only once the model has really stopped
                await asyncio.shield(worker.finished.wait())

    @property
    def passthrough(self) -> bool:
        """True when the backend takes whole OpenAI requests itself (an upstream in ``passthrough`` mode)."""
        return getattr(self.backend, "mode", None) == "passthrough" and hasattr(
            self.backend, "chat_completion"
        )

    def _forward_body(self, request: s.ChatCompletionRequest) -> dict[str, Any]:
        problem = request.unsupported()
        if problem is not None:
            raise APIError(400, problem[1], param=problem[0], code="unsupported_value")
        if request.agent is not None:
            raise APIError(400, "agent mode is not available when requests are passed through", param="agent")
        return request.model_dump(exclude_none=True, exclude={"agent", "stream", "stream_options"})

    async def complete(
        self,
        request: s.ChatCompletionRequest,
        is_disconnected: Callable[[], Awaitable[bool]] | None = None,
    ) -> dict[str, Any] | None:
        """Non-streaming completion: the response body, or None when ``is_disconnected()`` turned true while
        generating (the generation is then stopped and its slot freed)."""
        self.check_model(request.model)
        if self.passthrough:
            body = self._forward_body(request)
            async with self.limiter.slot():
                try:
                    answer = await asyncio.to_thread(self.backend.chat_completion, body)  # type: ignore[attr-defined]
                except Exception as exc:
                    raise from_exception(exc) from None
            return {**answer, "model": request.model}
        prepared = await asyncio.to_thread(self.prepare, request)
        async with self.limiter.slot():
            try:
                outcome = await self._generate_watching(prepared, is_disconnected)
            except Exception as exc:
                raise from_exception(exc) from None
        if outcome is None:
            return None
        message = s.ResponseMessage(content=outcome.content, boxes=outcome.boxes or None)
        if outcome.call is not None:
            if prepared.style == "functions":
                message.function_call = s.FunctionCallOut(**outcome.call.model_dump())
            else:
                message.tool_calls = [
                    s.ToolCallOut(
                        id=s.tool_call_id(), function=s.FunctionCallOut(**outcome.call.model_dump())
                    )
                ]
        if outcome.trace is not None:
            message.agent_trace = outcome.trace
        completion = s.ChatCompletion(
            model=request.model,
            choices=[s.Choice(message=message, finish_reason=outcome.finish_reason)],
            usage=s.Usage.of(outcome.prompt_tokens, outcome.completion_tokens),
        )
        return dump_completion(completion)

    # -- streaming ---------------------------------------------------------------------------------------

    async def open_stream(
        self, request: s.ChatCompletionRequest
    ) -> tuple[AsyncIterator[dict[str, Any]], Slot]:
        """Validate and take a slot; return the SSE events and the slot (errors before this raise APIError).

        Whoever serves the events must call ``slot.close()`` when the response is over: it frees the slot
        unless a generation thread still holds it (that thread frees it when it stops)."""
        self.check_model(request.model)
        if self.passthrough:
            body = self._forward_body(request)
            if request.stream_options is not None:
                body["stream_options"] = request.stream_options.model_dump()
            await self.limiter.acquire()
            slot = Slot(self.limiter)
            return self._forwarded_events(body, request.model, slot), slot
        prepared = await asyncio.to_thread(self.prepare, request)
        await self.limiter.acquire()
        slot = Slot(self.limiter)
        return self._events(prepared, slot), slot

    async def _forwarded_events(
        self, body: dict[str, Any], model: str, slot: Slot
    ) -> AsyncIterator[dict[str, Any]]:
        """The upstream's chunks, relayed (passthrough mode)."""
        try:
            worker = slot.hand_to(
                ThreadedStream(lambda: self.backend.chat_completion_stream(body), on_exit=slot.release)  # type: ignore[attr-defined]
            )
            async for chunk in worker:
                yield {"data": _json({**chunk, "model": model})}
            yield {"data": "[DONE]"}
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            yield {"data": _json(from_exception(exc).body())}
        finally:
            slot.close()

    async def _events(self, prepared: Prepared, slot: Slot) -> AsyncIterator[dict[str, Any]]:
        request = prepared.request
        chunk_id, created = s.completion_id(), s.now()
        call_id = s.tool_call_id()

        def chunk(delta: s.Delta, finish: str | None = None, usage: s.Usage | None = None) -> dict[str, Any]:
            choices = [s.ChunkChoice(delta=delta, finish_reason=finish)] if usage is None else []
            body = s.ChatCompletionChunk(
                id=chunk_id, created=created, model=request.model, choices=choices, usage=usage
            )
            return {"data": dump_chunk(body)}

        def delta_of(event: StreamEvent) -> s.Delta:
            if event.kind == "content":
                return s.Delta(content=event.text)
            if prepared.style == "functions":
                if event.kind == "call":
                    return s.Delta(function_call=s.FunctionCallDelta(name=event.text, arguments=""))
                return s.Delta(function_call=s.FunctionCallDelta(arguments=event.text))
            if event.kind == "call":
                fn = s.FunctionCallDelta(name=event.text, arguments="")
                return s.Delta(
                    tool_calls=[s.ToolCallDelta(index=0, id=call_id, type="function", function=fn)]
                )
            return s.Delta(
                tool_calls=[s.ToolCallDelta(index=0, function=s.FunctionCallDelta(arguments=event.text))]
            )

        worker: ThreadedStream | None = None
        try:
            yield chunk(s.Delta(role="assistant", content=""))
            if request.agent is not None:
                worker = slot.hand_to(
                    ThreadedStream(lambda: self._agent_events(prepared), on_exit=slot.release)
                )
                outcome: Outcome | None = None
                async for item in worker:
                    if isinstance(item, Outcome):
                        outcome = item
                    elif item:
                        yield chunk(s.Delta(content=item))
                assert outcome is not None
            else:
                worker = slot.hand_to(
                    ThreadedStream(lambda: self.backend.stream(prepared.generation), on_exit=slot.release)
                )
                splitter = CallSplitter(prepared.prefix, react=self.protocol.name == "react")
                text = ""
                async for delta in worker:
                    if not isinstance(delta, str) or not delta:
                        continue
                    text += delta
                    if prepared.functions:
                        for event in splitter.feed(delta):
                            yield chunk(delta_of(event))
                    else:
                        yield chunk(s.Delta(content=delta))
                result = self._final_result(prepared, worker.result, text)
                outcome = await asyncio.to_thread(self._outcome, prepared, result)
                if prepared.functions:
                    parsed = ParsedReply(content=outcome.content, function_call=outcome.call)
                    for event in splitter.finish(parsed):
                        yield chunk(delta_of(event))
            yield chunk(
                s.Delta(boxes=outcome.boxes or None, agent_trace=outcome.trace), finish=outcome.finish_reason
            )
            if request.stream_options is not None and request.stream_options.include_usage:
                yield chunk(s.Delta(), usage=s.Usage.of(outcome.prompt_tokens, outcome.completion_tokens))
            yield {"data": "[DONE]"}
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = from_exception(exc)
            log.info("stream %s failed: %s", chunk_id, error.message)
            yield {"data": _json(error.body())}
        finally:
            # Client gone or stream over: stop generation; the slot is freed when the worker has stopped.
            slot.close()

    # -- agent mode --------------------------------------------------------------------------------------

    def _check_agent_tools(self, names: list[str]) -> None:
        from qvl_agent import plugins

        installed = plugins.get_tools()
        unknown = [n for n in names if n not in installed]
        if unknown:
            raise APIError(
                400,
                f"unknown tool(s) {unknown} for agent mode; installed tools: {', '.join(sorted(installed)) or 'none'}",
                param="agent.tools",
                code="unknown_tool",
            )

    def _agent(self, prepared: Prepared) -> Any:
        from qvl_agent.agent import Agent

        options = prepared.request.agent
        assert options is not None
        try:
            return Agent(
                model=self.backend,
                tools=options.tools,
                protocol=self.protocol,
                max_steps=options.max_steps,
                image_limits=self.image_limits,
            )
        except ValueError as exc:
            raise APIError(400, str(exc), param="agent.tools", code="unknown_tool") from None

    def _agent_gen(self, prepared: Prepared) -> dict[str, Any]:
        g = prepared.generation
        gen = {
            "max_new_tokens": g.max_new_tokens,
            "temperature": g.temperature,
            "top_p": g.top_p,
            "seed": g.seed,
        }
        gen = {k: v for k, v in gen.items() if v is not None}
        if prepared.request.stop_list:
            gen["stop"] = prepared.request.stop_list
        return gen

    def _agent_outcome(self, result: Any) -> Outcome:
        trace = [
            s.AgentStep(
                thought=step.thought,
                tool=step.tool,
                arguments=step.arguments or "",
                observation=step.observation or "",
                is_error=step.is_error,
            )
            for step in result.steps
            if step.tool is not None
        ]
        finish = result.finish_reason if result.finish_reason in ("stop", "length") else "stop"
        return Outcome(
            content=result.text,
            call=None,
            finish_reason=finish,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            boxes=list(result.boxes or []),
            trace=trace,
        )

    def _agent_events(self, prepared: Prepared) -> Iterator[str | Outcome]:
        """Agent mode, streamed: the final answer's text, then the :class:`Outcome`."""
        from qvl_agent.agent import FinalAnswer

        agent = self._agent(prepared)
        events = agent.stream(prepared.messages, **self._agent_gen(prepared))
        try:
            for event in events:
                if isinstance(event, FinalAnswer):
                    yield event.text
                    yield self._agent_outcome(event.result)
                    return
        finally:
            events.close()


_DISCONNECT_POLL_S = 0.25


async def _drain(worker: ThreadedStream) -> Any:
    """Consume a worker's items; its return value (``StopIteration.value``)."""
    async for _ in worker:
        pass
    return worker.result


# -- conversion helpers ---------------------------------------------------------------------------------


def _text_of(content: str | list[Any] | None) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(p.text for p in content if isinstance(p, s.TextContent))


def _parts_of(message: s.ChatMessageIn) -> str | list[TextPart | ImagePart] | None:
    if message.content is None or isinstance(message.content, str):
        return message.content
    parts: list[TextPart | ImagePart] = []
    for part in message.content:
        if isinstance(part, s.TextContent):
            parts.append(TextPart(text=part.text))
        else:
            detail = None if isinstance(part.image_url, str) else part.image_url.detail
            parts.append(ImagePart(url=part.url(), detail=detail))
    return parts


def _to_messages(messages: list[s.ChatMessageIn]) -> list[Message]:
    """OpenAI messages → qvl_agent messages; ``tools``-style calls become the legacy function-call turns the
    protocols understand (one assistant call + one function result per tool call, in call order)."""
    out: list[Message] = []
    i = 0
    while i < len(messages):
        m = messages[i]
        role = "system" if m.role == "developer" else m.role
        if role == "tool":
            raise APIError(
                400,
                f"messages[{i}]: a 'tool' message must follow an assistant message with 'tool_calls' "
                f"(tool_call_id {m.tool_call_id!r} answers no earlier call)",
                param=f"messages[{i}]",
            )
        if role == "assistant" and m.tool_calls:
            results: dict[str, tuple[int, s.ChatMessageIn]] = {}
            j = i + 1
            while j < len(messages) and messages[j].role == "tool":
                call_id = messages[j].tool_call_id
                if call_id not in {c.id for c in m.tool_calls}:
                    raise APIError(
                        400,
                        f"messages[{j}]: tool_call_id {call_id!r} does not match any call of messages[{i}]",
                        param=f"messages[{j}].tool_call_id",
                    )
                results[call_id] = (j, messages[j])
                j += 1
            for n, call in enumerate(m.tool_calls):
                fc = FunctionCall(name=call.function.name, arguments=call.function.arguments)
                content = _text_of(m.content) if n == 0 else None
                out.append(Message(role="assistant", content=content or None, function_call=fc))
                if call.id in results:
                    out.append(
                        Message(
                            role="function",
                            name=call.function.name,
                            content=_text_of(results[call.id][1].content),
                        )
                    )
                elif j < len(messages):
                    raise APIError(
                        400,
                        f"messages[{i}]: tool call {call.id!r} has no 'tool' message with its result",
                        param=f"messages[{i}].tool_calls",
                    )
            i = j
            continue
        if role == "function":
            out.append(Message(role="function", name=m.name, content=_text_of(m.content)))
        elif role == "assistant":
            fc = FunctionCall(**m.function_call.model_dump()) if m.function_call else None
            out.append(Message(role="assistant", content=_text_of(m.content) or None, function_call=fc))
        else:
            out.append(Message(role=role, content=_parts_of(m), name=m.name))
        i += 1
    return out


def _functions_of(
    request: s.ChatCompletionRequest,
) -> tuple[list[FunctionSpec] | None, CallStyle | None, str | None]:
    """(offered functions, call style, forced call: a name, ``""`` for any, None for not forced)."""
    if request.functions:
        defs, style = request.functions, "functions"
        choice = request.function_call
        forced = choice.name if isinstance(choice, s.NamedFunction) else None
        none = choice == "none"
    elif request.tools:
        defs, style = [t.function for t in request.tools], "tools"
        choice = request.tool_choice
        if isinstance(choice, s.NamedToolChoice):
            forced = choice.function.name
        else:
            forced = "" if choice == "required" else None
        none = choice == "none"
    else:
        return None, None, None
    specs = [FunctionSpec.from_any(d.model_dump(exclude_none=True)) for d in defs]
    names = [f.name for f in specs]
    if len(set(names)) != len(names):
        raise APIError(400, f"function names must be unique, got {names}", param=style)
    if none:
        return None, style, None
    if forced:
        if forced not in names:
            param = "function_call" if style == "functions" else "tool_choice"
            raise APIError(
                400, f"{param} names {forced!r}, which is not among the functions {names}", param=param
            )
        specs = [f for f in specs if f.name == forced]
    return specs, style, forced


def _react_force_prefix(forced: str) -> str:
    """The start of an assistant turn that leaves the model only the call's arguments (or the name) to write."""
    if forced:
        return f"\nAction: {forced}\nAction Input:"
    return "\nAction:"


def _stop_words(request_stop: list[str], protocol_stop: list[str], built: list[str]) -> list[str]:
    """The request's stops, each also without its leading newlines (as the original server), then the
    protocol's."""
    words: list[str] = []
    for word in [*request_stop, *(w.lstrip("\n") for w in request_stop), *built, *protocol_stop]:
        if word and word not in words:
            words.append(word)
    return words


def _with_usage(
    backend: ModelBackend, request: GenerationRequest, result: GenerationResult
) -> GenerationResult:
    """Fill usage counts a backend left at zero from its own tokenizer."""
    if result.prompt_tokens and result.completion_tokens:
        return result
    prompt = result.prompt_tokens
    if not prompt:
        prompt_text = request.system + "".join(u + a for u, a in request.history) + (request.query or "")
        prompt = backend.count_tokens(prompt_text)
    completion = result.completion_tokens or (backend.count_tokens(result.text) if result.text else 0)
    return result.model_copy(update={"prompt_tokens": prompt, "completion_tokens": completion})


# -- serialisation ----------------------------------------------------------------------------------------


def _json(body: Any) -> str:
    import json

    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def _drop_none(d: dict[str, Any], keep: tuple[str, ...] = ()) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None or k in keep}


def dump_completion(completion: s.ChatCompletion) -> dict[str, Any]:
    body = completion.model_dump(mode="json")
    for choice in body["choices"]:
        choice["message"] = _drop_none(choice["message"], keep=("content", "refusal"))
    return _drop_none(body)


def dump_chunk(chunk: s.ChatCompletionChunk) -> str:
    body = chunk.model_dump(mode="json")
    for choice in body["choices"]:
        delta = _drop_none(choice["delta"])
        for key in ("function_call",):
            if key in delta:
                delta[key] = _drop_none(delta[key])
        if "tool_calls" in delta:
            delta["tool_calls"] = [
                {**_drop_none(tc), "function": _drop_none(tc["function"])} for tc in delta["tool_calls"]
            ]
        choice["delta"] = delta
    body = _drop_none(body, keep=())
    return _json(body)
