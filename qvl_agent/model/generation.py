"""The original Qwen-VL chat API (``model.chat`` / ``model.chat_stream``) and its stop-word handling.

Semantics follow the original remote code: prompts are rendered by ``prompting.chatml.make_context``; stop words
(``<|im_end|>``, ``<|im_start|>`` for chatml) do not end generation themselves -- once one has been generated, the
next step's ``<|endoftext|>`` score is forced to 2**15, so outputs end ``... <|im_end|> <|endoftext|>`` (quirk 4);
the answer is cut out by ``prompting.chatml.decode_tokens`` (quirk 2 included).
"""

from __future__ import annotations

import contextlib
import copy
import queue
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers.generation.streamers import BaseStreamer

from qvl_agent.model.errors import ContextLengthError, InputError
from qvl_agent.prompting.chatml import decode_tokens, get_stop_words_ids, make_context

DEFAULT_SYSTEM = "You are a helpful assistant."
History = list[tuple[str, str]]


class StopWordsLogitsProcessor(LogitsProcessor):
    """Once a row's ids end with any stop sequence, force ``eos_token_id`` (score 2**15) on the next step.

    Sequences equal to ``[eos_token_id]`` are dropped (eos already ends generation).
    """

    def __init__(self, stop_words_ids: Sequence[Sequence[int]], eos_token_id: int | Sequence[int]):
        if isinstance(eos_token_id, Sequence):
            eos_token_id = eos_token_id[0]
        self.eos_token_id = int(eos_token_id)
        self.stop_words_ids = [list(seq) for seq in stop_words_ids if list(seq) != [self.eos_token_id]]

    def _ends_with_stop_word(self, ids: list[int]) -> bool:
        return any(len(seq) <= len(ids) and ids[len(ids) - len(seq) :] == seq for seq in self.stop_words_ids)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for row, ids in enumerate(input_ids.tolist()):
            if self._ends_with_stop_word(ids):
                scores[row, self.eos_token_id] = float(2**15)
        return scores


class _TokenQueue(BaseStreamer):
    """Collects the generated ids of a threaded ``generate`` call (the first ``put`` is the prompt)."""

    def __init__(self) -> None:
        self.queue: queue.Queue[int | None | BaseException] = queue.Queue()
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        # one new token per row; a batch is streamed by its first row only
        self.queue.put(int(value.reshape(value.shape[0], -1)[0, -1]))

    def end(self) -> None:
        pass  # the worker thread puts the end marker, also when generate raises


class _Cancelled(StoppingCriteria):
    """Stops a threaded generation once its consumer has gone away."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any
    ) -> torch.BoolTensor:
        return torch.full(
            (input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device
        )


class QWenChatMixin:
    """``chat`` and ``chat_stream`` as on the original ``QWenLMHeadModel``, plus ``stop_words_ids`` in ``generate``."""

    def generate(
        self,
        inputs: torch.Tensor | None = None,
        generation_config: GenerationConfig | None = None,
        **kwargs: Any,
    ):
        """``GenerationMixin.generate`` that also takes ``stop_words_ids`` (list of id sequences, see
        ``StopWordsLogitsProcessor``) and ``images`` / ``pixel_values`` (used at the prefill step only)."""
        config = generation_config if generation_config is not None else self.generation_config
        stop_words_ids = kwargs.pop("stop_words_ids", None)
        if stop_words_ids is None:
            stop_words_ids = getattr(config, "stop_words_ids", None)
        if stop_words_ids:
            eos_token_id = kwargs.get("eos_token_id", config.eos_token_id)
            if eos_token_id is None:
                raise InputError(
                    "stop_words_ids need an eos_token_id (in the generation config or as argument)"
                )
            processor = StopWordsLogitsProcessor(stop_words_ids, eos_token_id=eos_token_id)
            kwargs["logits_processor"] = LogitsProcessorList(
                [*(kwargs.get("logits_processor") or []), processor]
            )
        if generation_config is not None:
            kwargs["generation_config"] = generation_config
        return super().generate(inputs, **kwargs)

    def _chat_context(
        self,
        tokenizer: Any,
        query: str,
        history: Sequence[Sequence[str]] | None,
        system: str,
        stop_words_ids: list[list[int]] | None,
        generation_config: GenerationConfig | None,
        kwargs: dict[str, Any],
    ) -> tuple[GenerationConfig, str, list[int], list[list[int]], dict[str, Any]]:
        """Render the prompt and settle the generation config; returns it with the kwargs left for the model."""
        base = generation_config if generation_config is not None else self.generation_config
        generation_config = copy.deepcopy(base)
        max_window_size = kwargs.pop("max_window_size", None)
        model_kwargs = generation_config.update(**kwargs)  # sampling settings etc. override the config
        chat_format = getattr(generation_config, "chat_format", "chatml")
        if chat_format != "chatml":
            raise InputError(
                f"chat() needs a generation config with chat_format 'chatml', got {chat_format!r}"
            )
        if max_window_size is None:
            max_window_size = getattr(generation_config, "max_window_size", 6144)
        raw_text, context_tokens = make_context(
            tokenizer,
            query,
            history=history,
            system=system,
            max_window_size=max_window_size,
            chat_format=chat_format,
        )
        limit = self.config.max_position_embeddings
        if len(context_tokens) > limit:
            raise ContextLengthError(
                f"the prompt is {len(context_tokens)} tokens long but the model's context holds at most {limit} "
                f"(max_position_embeddings; trained on seq_length={self.config.seq_length})"
            )
        stop_words_ids = list(stop_words_ids or []) + get_stop_words_ids(chat_format, tokenizer)
        return generation_config, raw_text, context_tokens, stop_words_ids, model_kwargs

    def chat(
        self,
        tokenizer: Any,
        query: str,
        history: History | None = None,
        system: str = DEFAULT_SYSTEM,
        append_history: bool = True,
        stream: bool = False,
        stop_words_ids: list[list[int]] | None = None,
        generation_config: GenerationConfig | None = None,
        images: Sequence[Any] | None = None,
        **kwargs: Any,
    ) -> tuple[str, History]:
        """One chat turn: returns ``(response, history)``; ``history`` gains ``(query, response)`` (in place for a
        list, as the original; any other sequence of turns is copied into a new list).

        ``images``: one picture (PIL image, path, URL, data URL) per ``<img>...</img>`` span of the rendered
        prompt, history included, in order; the text inside each span is then only a reference. Without it each
        span's text is loaded as a path/URL. Other keyword arguments go to ``generate`` (e.g. ``max_new_tokens``).
        """
        if stream:
            raise InputError("chat(stream=True) is not supported: use chat_stream() for streaming")
        if history is None:
            history = []
        elif not isinstance(history, list):  # a tuple (or other sequence) of turns: extend a list copy
            history = list(history)
        generation_config, raw_text, context_tokens, stop_words_ids, model_kwargs = self._chat_context(
            tokenizer, query, history, system, stop_words_ids, generation_config, kwargs
        )
        input_ids = torch.tensor([context_tokens], device=self.device)
        generation_config.return_dict_in_generate = False
        outputs = self.generate(
            input_ids,
            stop_words_ids=stop_words_ids,
            generation_config=generation_config,
            images=images,
            **model_kwargs,
        )
        response = decode_tokens(
            outputs[0],
            tokenizer,
            raw_text_len=len(raw_text),
            context_length=len(context_tokens),
            chat_format=getattr(generation_config, "chat_format", "chatml"),
            verbose=False,
            errors="replace",
        )
        if append_history:
            history.append((query, response))
        return response, history

    def chat_stream(
        self,
        tokenizer: Any,
        query: str,
        history: History | None = None,
        system: str = DEFAULT_SYSTEM,
        stop_words_ids: list[list[int]] | None = None,
        logits_processor: LogitsProcessorList | None = None,
        generation_config: GenerationConfig | None = None,
        images: Sequence[Any] | None = None,
        **kwargs: Any,
    ) -> Iterator[str]:
        """Yield the response decoded so far after every generated token (special tokens skipped, grounding tags
        kept), like the original. The prompt is checked before the first token is produced."""
        stopping_criteria = StoppingCriteriaList(kwargs.pop("stopping_criteria", None) or [])
        generation_config, _, context_tokens, stop_words_ids, model_kwargs = self._chat_context(
            tokenizer, query, history, system, stop_words_ids, generation_config, kwargs
        )
        input_ids = torch.tensor([context_tokens], device=self.device)
        token_ids = self.stream_token_ids(
            input_ids,
            stop_words_ids=stop_words_ids,
            logits_processor=logits_processor,
            generation_config=generation_config,
            images=images,
            stopping_criteria=stopping_criteria,
            **model_kwargs,
        )

        def texts() -> Iterator[str]:
            generated: list[int] = []
            with contextlib.closing(token_ids):
                for token in token_ids:
                    generated.append(token)
                    yield tokenizer.decode(
                        generated,
                        skip_special_tokens=True,
                        errors="ignore",
                        keep_image_special=True,
                        strict_image_spans=False,
                    )

        return texts()

    def stream_token_ids(self, input_ids: torch.Tensor, **generate_kwargs: Any) -> Iterator[int]:
        """Run :meth:`generate` (same arguments) on a worker thread and yield each new token id of the first row
        as soon as it is produced. Closing the iterator stops generation at the next step; an exception raised
        by ``generate`` is re-raised in the consumer."""
        tokens = _TokenQueue()
        cancelled = threading.Event()
        criteria = StoppingCriteriaList(generate_kwargs.pop("stopping_criteria", None) or [])
        criteria.append(_Cancelled(cancelled))

        def run() -> None:
            try:
                self.generate(input_ids, streamer=tokens, stopping_criteria=criteria, **generate_kwargs)
            except BaseException as err:  # handed to the consumer, re-raised there
                tokens.queue.put(err)
            finally:
                tokens.queue.put(None)

        def consume() -> Iterator[int]:
            thread = threading.Thread(target=run, name="qwen-generate", daemon=True)
            thread.start()
            try:
                while (item := tokens.queue.get()) is not None:
                    if isinstance(item, BaseException):
                        raise item
                    yield item
            finally:
                cancelled.set()
                thread.join()

        return consume()


__all__ = ["QWenChatMixin", "StopWordsLogitsProcessor"]
