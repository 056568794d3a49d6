"""ChatML prompt building and response decoding for Qwen-VL, as pure functions of a tokenizer.

The tokenizer is passed in (a ``QWenTokenizer`` or anything with the same ``encode``/``decode`` and
``im_start_id``/``im_end_id``/``eod_id``/``IMAGE_ST`` attributes), so this module depends on nothing else.
Prompt layout (chatml)::

    <|im_start|>system\\n{system}<|im_end|>\\n
    <|im_start|>user\\n{q1}<|im_end|>\\n<|im_start|>assistant\\n{a1}<|im_end|>\\n   (history, oldest first)
    <|im_start|>user\\n{query}<|im_end|>\\n<|im_start|>assistant\\n
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, overload

from qvl_agent.model.errors import InputError

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
ENDOFTEXT = "<|endoftext|>"
DEFAULT_SYSTEM = "You are a helpful assistant."

ChatFormat = Literal["chatml", "raw"]
History = Sequence[Sequence[str | None]]


class UnknownChatFormatError(InputError, NotImplementedError):
    """``chat_format`` is neither ``"chatml"`` nor ``"raw"``."""

    def __init__(self, chat_format: object) -> None:
        super().__init__(f"Unknown chat format {chat_format!r}: expected 'chatml' or 'raw'")


def build_chatml_text(system: str, history: History | None, query: str) -> str:
    """The chatml prompt text for ``query`` after all of ``history`` (no window truncation)."""
    text = f"{IM_START}system\n{system}{IM_END}"
    for turn_query, turn_response in history or []:
        text += f"\n{IM_START}user\n{turn_query}{IM_END}\n"
        if turn_response is not None:
            text += f"{IM_START}assistant\n{turn_response}{IM_END}"
    return text + f"\n{IM_START}user\n{query}{IM_END}\n{IM_START}assistant\n"


def make_context(
    tokenizer: Any,
    query: str,
    history: History | None = None,
    system: str = "",
    max_window_size: int = 6144,
    chat_format: str = "chatml",
) -> tuple[str, list[int]]:
    """Render a prompt: returns ``(raw_text, context_tokens)``.

    chatml: contents are encoded with only the image/grounding tags allowed as specials, so a literal
    ``<|im_start|>`` typed by a user stays plain text. History turns are kept newest-first while the context
    stays below ``max_window_size`` tokens; older turns are dropped. raw: ``query`` alone, all specials
    allowed, history and system ignored.
    """
    history = [] if history is None else history
    _check_text("query", query)
    if chat_format == "raw":
        return query, list(tokenizer.encode(query))
    if chat_format != "chatml":
        raise UnknownChatFormatError(chat_format)
    _check_text("system", system)

    im_start_tokens = [tokenizer.im_start_id]
    im_end_tokens = [tokenizer.im_end_id]
    nl_tokens = list(tokenizer.encode("\n"))
    image_st = set(tokenizer.IMAGE_ST)

    def tokenize_turn(role: str, content: str) -> tuple[str, list[int]]:
        ids = tokenizer.encode(role, allowed_special=image_st) + nl_tokens
        return f"{role}\n{content}", ids + tokenizer.encode(content, allowed_special=image_st)

    system_text, system_part = tokenize_turn("system", system)
    system_tokens = im_start_tokens + system_part + im_end_tokens

    raw_text = ""
    context_tokens: list[int] = []
    for turn in reversed(history):
        if len(turn) != 2:
            raise InputError(f"each history turn must be a (query, response) pair, got {turn!r}")
        turn_query, turn_response = turn
        _check_text("a history query", turn_query)
        if turn_response is not None:
            _check_text("a history response", turn_response)
        query_text, query_part = tokenize_turn("user", turn_query)
        query_tokens = im_start_tokens + query_part + im_end_tokens
        if turn_response is not None:
            response_text, response_part = tokenize_turn("assistant", turn_response)
            response_tokens = im_start_tokens + response_part + im_end_tokens
            next_context_tokens = nl_tokens + query_tokens + nl_tokens + response_tokens
            prev_chat = f"\n{IM_START}{query_text}{IM_END}\n{IM_START}{response_text}{IM_END}"
        else:
            next_context_tokens = nl_tokens + query_tokens + nl_tokens
            prev_chat = f"\n{IM_START}{query_text}{IM_END}\n"

        if len(system_tokens) + len(next_context_tokens) + len(context_tokens) < max_window_size:
            context_tokens = next_context_tokens + context_tokens
            raw_text = prev_chat + raw_text
        else:
            break

    context_tokens = system_tokens + context_tokens
    raw_text = f"{IM_START}{system_text}{IM_END}" + raw_text
    context_tokens += (
        nl_tokens
        + im_start_tokens
        + tokenize_turn("user", query)[1]
        + im_end_tokens
        + nl_tokens
        + im_start_tokens
        + tokenizer.encode("assistant")
        + nl_tokens
    )
    raw_text += f"\n{IM_START}user\n{query}{IM_END}\n{IM_START}assistant\n"
    return raw_text, context_tokens


def _check_text(what: str, value: object) -> None:
    if not isinstance(value, str):
        hint = (
            " (build one from image/text/box elements with tokenizer.from_list_format)"
            if what == "query"
            else ""
        )
        raise InputError(f"{what} must be a str, got {type(value).__name__}: {value!r:.80}{hint}")


def get_stop_words_ids(chat_format: str, tokenizer: Any) -> list[list[int]]:
    """Token sequences that end a generation: chatml ``[[im_end], [im_start]]``, raw ``["Human:", [eod]]``."""
    if chat_format == "raw":
        return [list(tokenizer.encode("Human:")), [tokenizer.eod_id]]
    if chat_format == "chatml":
        return [[tokenizer.im_end_id], [tokenizer.im_start_id]]
    raise UnknownChatFormatError(chat_format)


@overload
def decode_tokens(
    tokens: Any,
    tokenizer: Any,
    raw_text_len: int,
    context_length: int,
    chat_format: str,
    verbose: bool = ...,
    return_end_reason: Literal[False] = ...,
    errors: str = ...,
) -> str: ...


@overload
def decode_tokens(
    tokens: Any,
    tokenizer: Any,
    raw_text_len: int,
    context_length: int,
    chat_format: str,
    verbose: bool = ...,
    *,
    return_end_reason: Literal[True],
    errors: str = ...,
) -> tuple[str, str]: ...


def decode_tokens(
    tokens: Any,
    tokenizer: Any,
    raw_text_len: int,
    context_length: int,
    chat_format: str,
    verbose: bool = False,
    return_end_reason: bool = False,
    errors: str = "replace",
) -> str | tuple[str, str]:
    """Decode the answer out of ``tokens`` (context + generation; a list or a 1-D tensor).

    chatml: the answer ends at the first ``<|im_start|>``/``<|im_end|>`` after the context. As in the
    original, when neither was generated the *last* generated token is dropped (so an answer ending in
    ``<|endoftext|>`` loses exactly that, and a max-length answer loses its final token). raw: the text after
    the prompt, cut at ``<|endoftext|>``. The end reason is ``"Gen '<|im_end|>'"``-style or
    ``"Gen length N"``.
    """
    if hasattr(tokens, "tolist"):  # torch / numpy
        tokens = tokens.tolist()
    tokens = [int(t) for t in tokens]
    if chat_format == "chatml":
        response, end_reason = _decode_chatml(
            tokens,
            eod_token_ids=(tokenizer.im_start_id, tokenizer.im_end_id),
            tokenizer=tokenizer,
            raw_text_len=raw_text_len,
            context_length=context_length,
            verbose=verbose,
            errors=errors,
        )
    elif chat_format == "raw":
        response, end_reason = _decode_default(
            tokens,
            stop_words=[ENDOFTEXT],
            eod_words=[ENDOFTEXT],
            tokenizer=tokenizer,
            raw_text_len=raw_text_len,
            verbose=verbose,
            errors=errors,
        )
    else:
        raise UnknownChatFormatError(chat_format)
    return (response, end_reason) if return_end_reason else response


def _decode_chatml(
    tokens: list[int],
    *,
    eod_token_ids: Sequence[int],
    tokenizer: Any,
    raw_text_len: int,
    context_length: int,
    verbose: bool,
    errors: str,
) -> tuple[str, str]:
    end_reason = f"Gen length {len(tokens)}"
    eod_token_idx = context_length
    # Quirk 2: if no end token is found the loop variable is left on the last index, dropping that token.
    for eod_token_idx in range(context_length, len(tokens)):
        if tokens[eod_token_idx] in eod_token_ids:
            end_reason = f"Gen {tokenizer.decode([tokens[eod_token_idx]])!r}"
            break
    response = tokenizer.decode(tokens[:eod_token_idx], errors=errors)[raw_text_len:]
    if verbose:
        print("\nRaw Generate w/o EOD:", tokenizer.decode(tokens, errors=errors)[raw_text_len:])
        print("\nRaw Generate:", response)
        print("\nEnd Reason:", end_reason)
    response = response.strip()
    if verbose:
        print("\nGenerate:", response)
    return response, end_reason


def _decode_default(
    tokens: list[int],
    *,
    stop_words: Sequence[str],
    eod_words: Sequence[str],
    tokenizer: Any,
    raw_text_len: int,
    verbose: bool,
    errors: str,
) -> tuple[str, str]:
    response = tokenizer.decode(tokens, errors=errors)[raw_text_len:]
    if verbose:
        print("\nRaw Generate:", response)
    end_reason = f"Gen length {len(tokens)}"
    for stop_word in stop_words:
        response = response.replace(stop_word, "").strip()
    for eod_word in eod_words:
        if eod_word in response:
            end_reason = f"Gen {eod_word!r}"
        response = response.split(eod_word)[0]
    response = response.strip()
    if verbose:
        print("\nEnd Reason:", end_reason)
        print("\nGenerate:", response)
    return response, end_reason


__all__ = [
    "DEFAULT_SYSTEM",
    "UnknownChatFormatError",
    "build_chatml_text",
    "decode_tokens",
    "get_stop_words_ids",
    "make_context",
]
