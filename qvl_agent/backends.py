"""Model backends: what the agent loop, the server and the console call to generate text.

A backend continues a :class:`~qvl_agent.messages.GenerationRequest`. Backends are provided by plugins through
the ``register_models`` hook; the built-in ones are the local Qwen-VL core (any checkpoint directory), the
embedded demo model and a remote OpenAI-compatible upstream.
"""

from __future__ import annotations

import contextlib
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

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


_IM_START = "<|im_start|>"
_IM_END = "<|im_end|>"
_DEFAULT_MAX_NEW_TOKENS = 512
_UNLIMITED = 2**31 - 1


class LocalQwenBackend(ModelBackend):
    """The Qwen-VL model core running in this process.

    Generation is what ``model.chat`` / ``model.chat_stream`` do (ChatML context built by ``make_context``,
    ``<|im_end|>`` / ``<|im_start|>`` ending the turn), plus the request's stop strings, ``max_new_tokens``
    (``finish_reason="length"`` when reached) and sampling settings. ``request.images`` are handed to the
    model as ``images=`` and matched, in order, to the ``<img>…</img>`` spans of the prompt.

    A lock serialises generation, so one backend can be shared by threads (server workers, console). A
    streaming call can be cancelled with ``stop_event`` or by closing its iterator; generation then stops at
    the next token and the lock is released.
    """

    def __init__(self, model: Any, tokenizer: Any, name: str = "qwen-vl") -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.last_result: GenerationResult | None = None
        self._lock = threading.Lock()
        config = getattr(model, "generation_config", None)
        self.chat_format: str = getattr(config, "chat_format", None) or "chatml"
        self.max_window_size: int = getattr(config, "max_window_size", None) or 6144
        if self.chat_format != "chatml":
            raise ValueError(
                f"LocalQwenBackend needs a chat model (generation_config.chat_format='chatml'), "
                f"got chat_format={self.chat_format!r}"
            )
        self._end_ids = {tokenizer.im_end_id, tokenizer.im_start_id, tokenizer.eod_id}

    @classmethod
    def from_pretrained(
        cls, path_or_name: str = "demo", name: str | None = None, **kwargs: Any
    ) -> LocalQwenBackend:
        """Load a checkpoint directory (or ``"demo"``) with :func:`qvl_agent.model.load_model`."""
        from qvl_agent.model import load_model

        model, tokenizer = load_model(path_or_name, **kwargs)
        return cls(model, tokenizer, name=name or str(path_or_name))

    # -- prompt -------------------------------------------------------------------------------------------

    def build_context(self, request: GenerationRequest) -> list[int]:
        """The prompt token ids for ``request`` (ChatML; completion mode when ``request.query`` is None)."""
        from qvl_agent.prompting.chatml import make_context

        if request.query is not None:
            _, tokens = make_context(
                self.tokenizer,
                request.query,
                history=list(request.history),
                system=request.system,
                max_window_size=self.max_window_size,
                chat_format="chatml",
            )
            return list(tokens)
        return list(self.tokenizer.encode(completion_prompt(request)))

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text))

    # -- generation ---------------------------------------------------------------------------------------

    def generate(self, request: GenerationRequest) -> GenerationResult:
        chunks = self.stream(request)
        while True:
            try:
                next(chunks)
            except StopIteration as stop:
                result = stop.value
                break
        assert isinstance(result, GenerationResult)
        return result

    def stream(self, request: GenerationRequest, stop_event: threading.Event | None = None) -> Iterator[str]:
        """Yield text deltas as tokens are generated; returns (``StopIteration.value``) the
        :class:`GenerationResult`, also kept in ``self.last_result``."""
        context = self.build_context(request)
        self._check_length(context)
        # never generate past the context window (dynamic NTK does not stop a runaway max_new_tokens)
        max_new = min(request.max_new_tokens or self._default_max_new_tokens(), self._room(context))
        generated: list[int] = []
        emitted = ""
        finish = "stop"
        with self._lock:
            token_ids = self._token_ids(context, request, max_new)
            # closing the iterator (also when our consumer goes away) stops the model at its next step
            with contextlib.closing(token_ids):
                for item in token_ids:
                    if item in self._end_ids:
                        break
                    generated.append(item)
                    text = self._decode(generated)
                    cut = _find_stop(text, request.stop)
                    if cut is not None:
                        text = text[:cut]
                        if len(text) > len(emitted):
                            yield text[len(emitted) :]
                            emitted = text
                        break
                    safe = _safe_prefix(text, request.stop)
                    if len(safe) > len(emitted):
                        yield safe[len(emitted) :]
                        emitted = safe
                    if stop_event is not None and stop_event.is_set():
                        break
                else:
                    if len(generated) >= max_new:
                        finish = "length"
            if _find_stop(self._decode(generated), request.stop) is None:
                # nothing more will come: show what was held back (it did not become a stop string)
                text = self._decode(generated).rstrip("\ufffd")
                if len(text) > len(emitted) and text.startswith(emitted):
                    yield text[len(emitted) :]
                    emitted = text

        result = GenerationResult(
            text=emitted,
            finish_reason=finish,
            prompt_tokens=len(context),
            completion_tokens=len(generated),
        )
        self.last_result = result
        return result

    def _default_max_new_tokens(self) -> int:
        config = getattr(self.model, "generation_config", None)
        return getattr(config, "max_new_tokens", None) or _DEFAULT_MAX_NEW_TOKENS

    def _room(self, context: list[int]) -> int:
        """How many tokens fit after ``context`` in the model's context window."""
        limit = getattr(self.model.config, "max_position_embeddings", None)
        return max(limit - len(context), 1) if limit else _UNLIMITED

    def _check_length(self, context: list[int]) -> None:
        from qvl_agent.model.errors import ContextLengthError

        # seq_length is not a hard limit (dynamic NTK stretches it); max_position_embeddings is.
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if limit and len(context) >= limit:
            raise ContextLengthError(
                f"prompt is {len(context)} tokens, the model's context window is {limit} tokens"
            )

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(
            ids, skip_special_tokens=True, keep_image_special=True, errors="replace", strict_image_spans=False
        )

    def _token_ids(
        self, context: list[int], request: GenerationRequest, max_new_tokens: int
    ) -> Iterator[int]:
        import torch

        kwargs = self._generation_kwargs(request, max_new_tokens)
        if request.seed is not None:
            torch.manual_seed(request.seed)
        device = next(self.model.parameters()).device
        input_ids = torch.tensor([context], dtype=torch.long, device=device)
        images = self._span_images(context, request)
        if images:
            kwargs["images"] = images
        return self.model.stream_token_ids(input_ids, attention_mask=torch.ones_like(input_ids), **kwargs)

    def _span_images(self, context: list[int], request: GenerationRequest) -> list[Any]:
        """One picture per ``<img>`` span of ``context``: the protocol's pictures (``image-N`` references to
        ``request.images``), and, under ``request.image_limits``, the paths/URLs written in the text itself."""
        images = list(request.images)
        if request.image_limits is None:
            return images  # the model matches them to the spans, or loads the references (no pictures given)
        import torch

        from qvl_agent import plugins
        from qvl_agent.model.modeling_qwen import find_image_spans, image_reference

        start_id = self.model.config.image_start_id
        spans = find_image_spans(torch.tensor([context]), start_id, self.model.transformer.visual.n_queries)
        if len(spans) == len(images):
            return images  # every span is one of the protocol's pictures
        out: list[Any] = []
        for _, start, end in spans:
            reference = image_reference(context[start + 1 : end], start_id + 2)
            picture = re.fullmatch(r"image-(\d+)", reference)
            if picture and 1 <= int(picture.group(1)) <= len(images):
                out.append(images[int(picture.group(1)) - 1])
            else:
                out.append(plugins.fetch_image(reference, request.image_limits))
        return out

    def _generation_kwargs(self, request: GenerationRequest, max_new_tokens: int) -> dict[str, Any]:
        import copy

        config = copy.deepcopy(self.model.generation_config)
        config.max_new_tokens = max_new_tokens
        config.eos_token_id = sorted(self._end_ids)
        config.pad_token_id = self.tokenizer.eod_id
        # Any stop_words_ids kept in the checkpoint's config are replaced by eos ids above.
        if hasattr(config, "stop_words_ids"):
            config.stop_words_ids = None
        if request.temperature is not None and request.temperature <= 0:
            config.do_sample = False
        elif request.temperature is not None:
            config.do_sample = True
            config.temperature = request.temperature
        if config.do_sample:
            if request.top_p is not None:
                config.top_p = request.top_p
            if request.top_k is not None:
                config.top_k = request.top_k
        else:
            config.temperature, config.top_p, config.top_k = None, None, None
        if getattr(config, "max_length", None) is not None:
            config.max_length = None
        return {"generation_config": config}


def completion_prompt(request: GenerationRequest) -> str:
    """The ChatML text of a completion-mode request (``query=None``), as the original ``openai_api.py``'s
    ``text_complete_last_message``: the last assistant turn is left open so the model continues it."""
    from qvl_agent.model.errors import InputError

    if not request.history:
        raise InputError("completion mode (query=None) needs a history ending with the turn to continue")
    prompt = f"{_IM_START}system\n{request.system}{_IM_END}"
    for user, assistant in request.history:
        prompt += f"\n{_IM_START}user\n{user.lstrip(chr(10)).rstrip()}{_IM_END}"
        prompt += f"\n{_IM_START}assistant\n{assistant.lstrip(chr(10)).rstrip()}{_IM_END}"
    return prompt[: -len(_IM_END)]


def _find_stop(text: str, stops: list[str]) -> int | None:
    """Index of the earliest stop string in ``text``, or None."""
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(hits) if hits else None


def _safe_prefix(text: str, stops: list[str]) -> str:
    """The part of ``text`` that can be shown now: no partly decoded character at the end, and no tail that
    could still grow into a stop string."""
    text = text.rstrip("\ufffd")
    hold = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:k]):
                hold = max(hold, k)
                break
    return text[: len(text) - hold]
