"""The Qwen-VL tokenizer: tiktoken byte-level BPE + 217 special tokens + 258-id image spans.

A native transformers 5 (Python-backend) reimplementation of the original Qwen-VL remote-code tokenizer,
reproducing its ids, pieces, decoding and grounding helpers exactly (see the reference vectors in
``../shared/testdata/qwen_vl``). The vocabulary file is a tiktoken ranks file (``base64(token) rank`` per
line, conventionally ``qwen.tiktoken``); the special tokens always follow the ranks, so a smaller demo
vocabulary in the same format gets its specials at ``len(ranks) + i``.

Image spans: ``<img>PATH</img>`` becomes exactly ``image_span + 2`` ids: ``<img>``, the raw UTF-8 bytes of
PATH used directly as ids 0-255, ``<imgpad>`` padding up to ``image_span`` slots, and ``</img>``. The model
overwrites the slots with image features; decoding reads the path back from the byte ids. ``image_span`` is
``IMG_TOKEN_SPAN`` (256, the released models' number of image queries) unless the tokenizer is built with
another value (saved in ``tokenizer_config.json``), for small models with fewer resampler queries.
"""

from __future__ import annotations

import base64
import colorsys
import math
import os
import unicodedata
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import tiktoken
from transformers import AddedToken, PreTrainedTokenizer

from qvl_agent.model.errors import InputError
from qvl_agent.model.image_processing import load_image

if TYPE_CHECKING:
    from PIL import Image

PAT_STR = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
ENDOFTEXT = "<|endoftext|>"
IMSTART = "<|im_start|>"
IMEND = "<|im_end|>"
EXTRAS = tuple(f"<|extra_{i}|>" for i in range(205))
SPECIAL_TOKENS = (ENDOFTEXT, IMSTART, IMEND) + EXTRAS
IMG_TOKEN_SPAN = 256
VOCAB_FILES_NAMES = {"vocab_file": "qwen.tiktoken"}

# Default grounding/image tags, in the order their ids follow the chat specials.
REF_START, REF_END = "<ref>", "</ref>"
BOX_START, BOX_END = "<box>", "</box>"
QUAD_START, QUAD_END = "<quad>", "</quad>"
IMAGE_START, IMAGE_END, IMAGE_PAD = "<img>", "</img>", "<imgpad>"

Token = bytes | str
AllowedSpecial = Literal["all"] | Collection[str]


class ImageSpanError(InputError, TypeError):
    """An ``<img>…</img>`` span holds something other than plain path text (e.g. a special token)."""


class BoxFormatError(InputError, AssertionError):
    """A ``<box>`` does not hold exactly four integers ``(x1,y1),(x2,y2)``."""


def load_tiktoken_bpe(vocab_file: str | os.PathLike[str]) -> dict[bytes, int]:
    """Read a tiktoken ranks file (``base64(token) rank`` per line) into ``{token_bytes: rank}``.

    Ranks must be exactly ``0 .. n-1`` (specials are numbered after them) and the first 256 ids must exist,
    because image-path bytes are stored as ids 0-255.
    """
    ranks: dict[bytes, int] = {}
    with open(vocab_file, "rb") as f:
        for lineno, line in enumerate(f.read().splitlines(), start=1):
            if not line.strip():
                continue
            fields = line.split()
            if len(fields) != 2:
                raise InputError(f"{vocab_file}:{lineno}: expected 'base64-token rank', got {line[:80]!r}")
            try:
                token, rank = base64.b64decode(fields[0], validate=True), int(fields[1])
            except ValueError as err:
                raise InputError(f"{vocab_file}:{lineno}: cannot parse {line[:80]!r} ({err})") from None
            if token in ranks:
                raise InputError(f"{vocab_file}:{lineno}: token {token!r} appears twice")
            ranks[token] = rank
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise InputError(f"{vocab_file}: ranks must be exactly 0..{len(ranks) - 1} without gaps or repeats")
    if len(ranks) < 256:
        raise InputError(
            f"{vocab_file}: has {len(ranks)} ranks, needs at least 256 (ids 0-255 carry image-path bytes)"
        )
    return ranks


def _list_find(items: Sequence[Any], candidates: Collection[Any], start: int = 0) -> int:
    for i in range(start, len(items)):
        if items[i] in candidates:
            return i
    return -1


def _replace_closed_tag(
    items: Sequence[Any],
    start_tags: Sequence[Any],
    end_tags: Sequence[Any],
    inclusive_replace: Callable[[Sequence[Any]], list[Any]],
    exclusive_replace: Callable[[Sequence[Any]], list[Any]] = list,
    strict: bool = True,
) -> list[Any]:
    """Rewrite every ``start … end`` run (tags included) with ``inclusive_replace`` and the rest with
    ``exclusive_replace``; the end tag searched for is the one paired with the start tag found. An unclosed
    start tag raises, unless ``strict`` is False: then the rest is treated as outside any run."""
    out: list[Any] = []
    end = 0
    while True:
        start = _list_find(items, start_tags, end)
        if start == -1:
            break
        out.extend(exclusive_replace(items[end:start]))
        end_tag = end_tags[list(start_tags).index(items[start])]
        end = _list_find(items, (end_tag,), start)
        if end == -1:
            if not strict:
                end = start
                break
            # The original says "image token" for every tag kind; kept for parity.
            raise InputError("Unclosed image token")
        out.extend(inclusive_replace(items[start : end + 1]))
        end += 1
    out.extend(exclusive_replace(items[end:]))
    return out


def _as_token_set(value: AllowedSpecial) -> Literal["all"] | frozenset[str]:
    return "all" if value == "all" else frozenset(value)


class QWenTokenizer(PreTrainedTokenizer):
    """Qwen-VL tokenizer on tiktoken, id-for-id compatible with the original remote-code tokenizer.

    ``encode``/``__call__`` allow every special surface form by default (``allowed_special="all"``); pass
    ``allowed_special=set(tokenizer.IMAGE_ST)`` to treat chat specials typed by a user as plain text. No
    bos/eos/pad/unk token is set and nothing is added around the text.
    """

    vocab_files_names = VOCAB_FILES_NAMES
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(
        self,
        vocab_file: str,
        errors: str = "replace",
        image_start_tag: str = IMAGE_START,
        image_end_tag: str = IMAGE_END,
        image_pad_tag: str = IMAGE_PAD,
        ref_start_tag: str = REF_START,
        ref_end_tag: str = REF_END,
        box_start_tag: str = BOX_START,
        box_end_tag: str = BOX_END,
        quad_start_tag: str = QUAD_START,
        quad_end_tag: str = QUAD_END,
        image_span: int = IMG_TOKEN_SPAN,
        **kwargs: Any,
    ) -> None:
        if not isinstance(image_span, int) or isinstance(image_span, bool) or image_span < 1:
            raise InputError(f"image_span must be a positive integer, got {image_span!r}")
        # how the folder was opened, not a property of the tokenizer: keep it out of a saved tokenizer_config.json
        for loader_option in ("local_files_only", "is_local"):
            kwargs.pop(loader_option, None)
        self.image_span = image_span
        self.errors = errors  # how undecodable bytes are handled by decode()
        self.image_start_tag = image_start_tag
        self.image_end_tag = image_end_tag
        self.image_pad_tag = image_pad_tag
        self.ref_start_tag = ref_start_tag
        self.ref_end_tag = ref_end_tag
        self.box_start_tag = box_start_tag
        self.box_end_tag = box_end_tag
        self.quad_start_tag = quad_start_tag
        self.quad_end_tag = quad_end_tag
        self.IMAGE_ST = (
            ref_start_tag,
            ref_end_tag,
            box_start_tag,
            box_end_tag,
            quad_start_tag,
            quad_end_tag,
            image_start_tag,
            image_end_tag,
            image_pad_tag,
        )

        self.vocab_file = str(vocab_file)
        self.mergeable_ranks = load_tiktoken_bpe(vocab_file)
        self.special_tokens = {
            token: index
            for index, token in enumerate(SPECIAL_TOKENS + self.IMAGE_ST, start=len(self.mergeable_ranks))
        }
        if len(self.special_tokens) != len(SPECIAL_TOKENS) + len(self.IMAGE_ST):
            raise InputError(
                f"image/grounding tags must be distinct from each other and the chat specials: {self.IMAGE_ST}"
            )
        self.tokenizer = tiktoken.Encoding(
            "Qwen", pat_str=PAT_STR, mergeable_ranks=self.mergeable_ranks, special_tokens=self.special_tokens
        )
        assert self.tokenizer.n_vocab == len(self.mergeable_ranks) + len(self.special_tokens)

        self.decoder: dict[int, Token] = {v: k for k, v in self.mergeable_ranks.items()}
        self.decoder.update({v: k for k, v in self.special_tokens.items()})

        self.eod_id = self.special_tokens[ENDOFTEXT]
        self.im_start_id = self.special_tokens[IMSTART]
        self.im_end_id = self.special_tokens[IMEND]
        self.img_start_id = self.special_tokens[image_start_tag]
        self.img_end_id = self.special_tokens[image_end_tag]
        self.img_pad_id = self.special_tokens[image_pad_tag]
        self.ref_start_id = self.special_tokens[ref_start_tag]
        self.ref_end_id = self.special_tokens[ref_end_tag]
        self.box_start_id = self.special_tokens[box_start_tag]
        self.box_end_id = self.special_tokens[box_end_tag]
        self.quad_start_id = self.special_tokens[quad_start_tag]
        self.quad_end_id = self.special_tokens[quad_end_tag]
        # Kept by decode(skip_special_tokens=True, keep_image_special=True).
        self.image_special_tokens = {
            self.ref_start_id,
            self.ref_end_id,
            self.box_start_id,
            self.box_end_id,
            self.quad_start_id,
            self.quad_end_id,
        }

        kwargs.setdefault("model_max_length", 8192)
        kwargs.setdefault("clean_up_tokenization_spaces", False)
        super().__init__(
            errors=errors,
            image_start_tag=image_start_tag,
            image_end_tag=image_end_tag,
            image_pad_tag=image_pad_tag,
            ref_start_tag=ref_start_tag,
            ref_end_tag=ref_end_tag,
            box_start_tag=box_start_tag,
            box_end_tag=box_end_tag,
            quad_start_tag=quad_start_tag,
            quad_end_tag=quad_end_tag,
            image_span=image_span,
            **kwargs,
        )

    # -- pickling: tiktoken objects are rebuilt rather than serialised ------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["tokenizer"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.tokenizer = tiktoken.Encoding(
            "Qwen", pat_str=PAT_STR, mergeable_ranks=self.mergeable_ranks, special_tokens=self.special_tokens
        )

    # -- vocabulary -----------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.tokenizer.n_vocab

    @property
    def vocab_size(self) -> int:
        """Number of ids the tokenizer can produce: BPE ranks + specials (the model pads its matrices further)."""
        return self.tokenizer.n_vocab

    def get_vocab(self) -> dict[Token, int]:
        """Every token → id: BPE tokens as ``bytes``, specials as ``str``."""
        vocab: dict[Token, int] = dict(self.mergeable_ranks)
        vocab.update(self.special_tokens)
        return vocab

    def get_added_vocab(self) -> dict[str, int]:
        return {}

    def _add_tokens(self, new_tokens: Sequence[str | AddedToken] | None, special_tokens: bool = False) -> int:
        """The vocabulary is fixed: only the existing special tokens may be "added" (a no-op)."""
        if not new_tokens:
            return 0
        if not special_tokens:
            raise InputError("QWenTokenizer has a fixed vocabulary: adding regular tokens is not supported")
        for token in new_tokens:
            surface = token.content if isinstance(token, AddedToken) else token
            if surface not in self.special_tokens:
                raise InputError(
                    f"cannot add special token {surface!r}: only the built-in Qwen specials exist"
                )
        return 0

    def convert_tokens_to_ids(self, tokens: Token | Iterable[Token]) -> int | list[int]:
        """Map a token (``bytes`` piece or special ``str``) or a list of them to ids."""
        if isinstance(tokens, (str, bytes)):
            return self._convert_token_to_id(tokens)
        return [self._convert_token_to_id(token) for token in tokens]

    def _convert_token_to_id(self, token: Token) -> int:
        if isinstance(token, str):
            if token in self.special_tokens:
                return self.special_tokens[token]
        elif token in self.mergeable_ranks:
            return self.mergeable_ranks[token]
        raise InputError(f"unknown token {token!r}: not a BPE piece (bytes) nor a special token (str)")

    def _convert_token_to_id_with_added_voc(self, token: Token) -> int:
        return self._convert_token_to_id(token)

    def _convert_id_to_token(self, index: int) -> Token:
        if index in self.decoder:
            return self.decoder[index]
        raise InputError(f"unknown token id {index}: valid ids are 0..{len(self) - 1}")

    def build_inputs_with_special_tokens(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None
    ) -> list[int]:
        """Nothing is added around the text (as the original)."""
        return token_ids_0 + (token_ids_1 or [])

    def get_special_tokens_mask(
        self,
        token_ids_0: list[int],
        token_ids_1: list[int] | None = None,
        already_has_special_tokens: bool = False,
    ) -> list[int]:
        if already_has_special_tokens:
            return [int(i >= self.eod_id) for i in token_ids_0 + (token_ids_1 or [])]
        return [0] * (len(token_ids_0) + len(token_ids_1 or []))

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str]:
        """Write the ranks file (``base64(token) rank`` per line, in rank order)."""
        if not os.path.isdir(save_directory):
            raise InputError(f"save_vocabulary: {save_directory!r} is not a directory")
        name = (f"{filename_prefix}-" if filename_prefix else "") + VOCAB_FILES_NAMES["vocab_file"]
        path = os.path.join(save_directory, name)
        with open(path, "w", encoding="utf-8") as f:
            for token, rank in sorted(self.mergeable_ranks.items(), key=lambda kv: kv[1]):
                f.write(f"{base64.b64encode(token).decode('ascii')} {rank}\n")
        return (path,)

    # -- encoding -------------------------------------------------------------------------------------------

    def tokenize(
        self,
        text: str,
        allowed_special: AllowedSpecial = "all",
        disallowed_special: AllowedSpecial = (),
        **kwargs: Any,
    ) -> list[Token]:
        """Split ``text`` (NFC-normalised) into pieces: ``bytes`` for BPE tokens, ``str`` for specials.

        Special surface forms in ``allowed_special`` become special tokens, the others plain text; one found
        in ``disallowed_special`` raises ``ValueError``. Image spans come out as 258 pieces (see module doc).
        """
        if kwargs.get("split_special_tokens"):  # the transformers switch for "specials are plain text"
            allowed_special = ()
        text = unicodedata.normalize("NFC", text)
        ids = self.tokenizer.encode(
            text,
            allowed_special=_as_token_set(allowed_special),
            disallowed_special=_as_token_set(disallowed_special),
        )
        tokens = [self.decoder[i] for i in ids]
        return _replace_closed_tag(
            tokens, (self.image_start_tag,), (self.image_end_tag,), self._encode_image_span
        )

    def _encode_image_span(self, span: Sequence[Token]) -> list[Token]:
        inner = span[1:-1]
        for token in inner:
            if isinstance(token, str):
                raise ImageSpanError(
                    f"special token {token!r} inside {self.image_start_tag}…{self.image_end_tag}: "
                    "an image span may only hold a path or URL"
                )
        path_bytes = b"".join(inner)  # type: ignore[arg-type]
        if len(path_bytes) > self.image_span:
            raise InputError(
                f"The content in {self.image_start_tag}..{self.image_end_tag} is too long: {len(path_bytes)} bytes, "
                f"at most {self.image_span}. For a data URL, long URL or in-memory picture, write a short reference "
                "inside the tags and pass the picture beside the text (images=[...])"
            )
        # Quirk kept from the original: each byte value b is stored as id b (not the BPE id of the byte).
        pieces: list[Token] = [self.decoder[b] for b in path_bytes]
        pieces.extend([self.image_pad_tag] * (self.image_span - len(pieces)))
        return [self.image_start_tag, *pieces, self.image_end_tag]

    def _tokenize(self, text: str, **kwargs: Any) -> list[Token]:
        """Unused by ``tokenize`` (which handles specials itself); kept so the base-class contract holds."""
        return self.tokenize(text, **kwargs)

    # -- decoding -------------------------------------------------------------------------------------------

    def convert_tokens_to_string(self, tokens: Sequence[Token]) -> str:
        """Join pieces into text; consecutive byte pieces are decoded together (``errors=self.errors``)."""
        text = ""
        pending = b""
        for token in tokens:
            if isinstance(token, str):
                if pending:
                    text += pending.decode("utf-8", errors=self.errors)
                    pending = b""
                text += token
            elif isinstance(token, bytes):
                pending += token
            else:
                raise TypeError(f"token should be bytes or str, got {type(token).__name__}: {token!r}")
        if pending:
            text += pending.decode("utf-8", errors=self.errors)
        return text

    def _decode_image_span(self, span: Sequence[int]) -> list[int]:
        inner = list(span[1:-1])
        if self.img_pad_id not in inner:
            raise InputError(
                f"cannot decode image span: no {self.image_pad_tag} (id {self.img_pad_id}) marks the end of the "
                f"path (a path of exactly {self.image_span} bytes fills the span and cannot be read back)"
            )
        path_ids = inner[: inner.index(self.img_pad_id)]
        if any(not 0 <= i < 256 for i in path_ids):
            raise InputError(
                f"cannot decode image span: path ids must be byte values 0-255, got {path_ids[:16]}"
            )
        try:
            path = bytes(path_ids).decode("utf-8")
        except UnicodeDecodeError as err:
            raise InputError(
                f"cannot decode image span: the path bytes are not valid UTF-8 ({err})"
            ) from None
        # encode_ordinary: special-looking text in a path stays text (the original would raise here).
        return [self.img_start_id, *self.tokenizer.encode_ordinary(path), self.img_end_id]

    def _decode(
        self,
        token_ids: int | Sequence[int],
        skip_special_tokens: bool = False,
        errors: str | None = None,
        keep_image_special: bool = False,
        strict_image_spans: bool = True,
        **kwargs: Any,
    ) -> str:
        if isinstance(token_ids, int):
            token_ids = [token_ids]
        ids = [int(i) for i in token_ids]
        ids = _replace_closed_tag(
            ids, (self.img_start_id,), (self.img_end_id,), self._decode_image_span, strict=strict_image_spans
        )
        if skip_special_tokens:
            if keep_image_special:
                ids = [i for i in ids if i < self.eod_id or i in self.image_special_tokens]
            else:
                ids = [i for i in ids if i < self.eod_id]
        try:
            return self.tokenizer.decode(ids, errors=errors or self.errors)
        except KeyError:
            bad = [i for i in ids if i not in self.decoder]
            raise InputError(f"unknown token id(s) {bad[:8]}: valid ids are 0..{len(self) - 1}") from None

    def decode(
        self,
        token_ids: Any,
        skip_special_tokens: bool = False,
        keep_image_special: bool = False,
        errors: str | None = None,
        strict_image_spans: bool = True,
        **kwargs: Any,
    ) -> str | list[str]:
        """Ids → text. ``<img>`` spans give back their path; ``skip_special_tokens`` drops every special id,
        except the six grounding tags when ``keep_image_special`` is set; ``errors`` as in ``bytes.decode``.

        An unclosed ``<img>`` raises (as the original) unless ``strict_image_spans=False``, which decodes it as
        plain tokens: generated text is decoded that way, so a model that writes ``<img>`` never breaks a stream.
        """
        return super().decode(
            token_ids,
            skip_special_tokens=skip_special_tokens,
            keep_image_special=keep_image_special,
            errors=errors,
            strict_image_spans=strict_image_spans,
            **kwargs,
        )

    # -- list format and grounding helpers --------------------------------------------------------------------

    def from_list_format(self, list_format: Sequence[dict[str, Any]]) -> str:
        """Build a query from ``[{"image": path}, {"text": ...}, {"ref": ..., "box": [[x1, y1, x2, y2], ...]}]``.

        Images are numbered ``Picture N: <img>path</img>\\n``; boxes are written with ``%d`` (floats truncated).
        """
        text = ""
        num_images = 0
        for ele in list_format:
            if not isinstance(ele, dict):
                raise InputError(f"list format elements must be dicts, got {type(ele).__name__}: {ele!r}")
            if "image" in ele:
                if not isinstance(ele["image"], str):
                    raise InputError(
                        f"'image' must be a path or URL string, got {type(ele['image']).__name__}; pass decoded "
                        "pictures beside the text (images=[...]) with a short reference here"
                    )
                num_images += 1
                text += f"Picture {num_images}: "
                text += self.image_start_tag + ele["image"] + self.image_end_tag + "\n"
            elif "text" in ele:
                if not isinstance(ele["text"], str):
                    raise InputError(f"'text' must be a string, got {type(ele['text']).__name__}: {ele!r}")
                text += ele["text"]
            elif "box" in ele:
                if "ref" in ele:
                    text += self.ref_start_tag + ele["ref"] + self.ref_end_tag
                for box in ele["box"]:
                    if len(box) != 4:
                        raise InputError(f"a box needs 4 numbers [x1, y1, x2, y2], got {box!r} in {ele!r}")
                    # %d (not int()) to match the original exactly: floats truncate, strings are rejected
                    coords = "(%d,%d),(%d,%d)" % tuple(box)  # noqa: UP031
                    text += self.box_start_tag + coords + self.box_end_tag
            else:
                raise InputError("Unsupport element: " + str(ele))
        return text

    def to_list_format(self, text: str) -> list[dict[str, str]]:
        """Split text into ``{"text"|"image"|"ref"|"box"|"quad": str}`` elements (inverse of from_list_format)."""
        text = unicodedata.normalize("NFC", text)
        # Chat specials (other than <|endoftext|>) stay plain text here; the original raised on them.
        token_ids = self.tokenizer.encode(
            text, allowed_special=set(self.IMAGE_ST + (ENDOFTEXT,)), disallowed_special=()
        )
        tags = {
            self.img_start_id: (self.img_end_id, "image"),
            self.ref_start_id: (self.ref_end_id, "ref"),
            self.box_start_id: (self.box_end_id, "box"),
            self.quad_start_id: (self.quad_end_id, "quad"),
        }

        def to_text(ids: Sequence[int]) -> str:
            pieces = (self.decoder[i] for i in ids)
            return b"".join(p.encode("utf-8") if isinstance(p, str) else p for p in pieces).decode("utf-8")

        def encode_vl_info(ids: Sequence[int]) -> list[dict[str, str]]:
            if not ids:
                return []
            if ids[0] in tags and tags[ids[0]][0] == ids[-1] and len(ids) >= 2:
                return [{tags[ids[0]][1]: to_text(ids[1:-1])}]
            return [{"text": to_text(ids)}]

        starts = tuple(tags)
        ends = tuple(end for end, _ in tags.values())
        return _replace_closed_tag(token_ids, starts, ends, encode_vl_info, encode_vl_info)

    def _fetch_latest_picture(
        self, response: str, history: Sequence[Sequence[str | None]] | None = None
    ) -> str | None:
        """The last image path in ``response``, else in the history (newest turn first), else None."""
        turns: list[Sequence[str | None]] = [*(history or []), (response, None)]
        for query, _ in reversed(turns):
            if query is None:
                continue
            for ele in reversed(self.to_list_format(query)):
                if "image" in ele:
                    return ele["image"]
        return None

    def _fetch_all_box_with_ref(self, text: str) -> list[dict[str, Any]]:
        """Every ``<box>`` as ``{"box": (x1, y1, x2, y2), "ref": str}``; a ref only attaches to the box right
        after it (so the second box of ``<ref>a</ref><box>…</box><box>…</box>`` has no ref)."""
        list_format = self.to_list_format(text)
        output: list[dict[str, Any]] = []
        for i, ele in enumerate(list_format):
            if "box" not in ele:
                continue
            numbers = ele["box"].replace("(", "").replace(")", "").split(",")
            try:
                box = tuple(int(n) for n in numbers)
            except ValueError:
                box = ()
            if len(box) != 4:
                raise BoxFormatError(f"box {ele['box']!r} must hold exactly 4 integers, like (x1,y1),(x2,y2)")
            output.append({"box": box})
            if i > 0 and "ref" in list_format[i - 1]:
                output[-1]["ref"] = list_format[i - 1]["ref"].strip()
        return output

    fetch_latest_picture = _fetch_latest_picture
    fetch_all_box_with_ref = _fetch_all_box_with_ref

    def draw_bbox_on_latest_picture(
        self,
        response: str,
        history: Sequence[Sequence[str | None]] | None = None,
        image: Image.Image | None = None,
    ) -> Image.Image | None:
        """Draw the response's boxes (coordinates in [0, 1000)) and refs on the latest picture.

        The picture is ``image`` when given, else the latest ``<img>`` path of response/history (a local file
        or URL, as :func:`~qvl_agent.model.image_processing.load_image` reads it). Returns a new RGB image, or None
        when there is no picture or no box.
        """
        from PIL import ImageDraw, ImageFont

        boxes = self._fetch_all_box_with_ref(response)
        if image is None:
            source = self._fetch_latest_picture(response, history)
            if source is None or not boxes:
                return None
            image = load_image(source)
        elif not boxes:
            return None
        else:
            image = image.convert("RGB")  # always a copy: the caller's picture is left untouched

        w, h = image.size
        draw = ImageDraw.Draw(image)
        font_size = max(int(math.sqrt(w * h) // 45), 10)
        line_width = max(font_size // 8, 1)
        try:
            font = ImageFont.load_default(size=font_size)
        except TypeError:  # Pillow < 10.1: fixed-size bitmap font only
            font = ImageFont.load_default()
        color_index = 0
        color = _PALETTE[color_index]
        for box in boxes:
            if "ref" in box:  # each new referring expression gets the next colour
                color_index += 1
                color = _PALETTE[color_index % len(_PALETTE)]
            x1, y1, x2, y2 = box["box"]
            x1, y1, x2, y2 = int(x1 / 1000 * w), int(y1 / 1000 * h), int(x2 / 1000 * w), int(y2 / 1000 * h)
            draw.rectangle(
                (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)), outline=color, width=line_width
            )
            if "ref" in box:  # label on a filled tab at the box's top-left corner
                left, top = min(x1, x2), min(y1, y2)
                tab = draw.textbbox((left + line_width, top + line_width), box["ref"], font=font)
                draw.rectangle((left, top, tab[2] + line_width, tab[3] + line_width), fill=color)
                draw.text((left + line_width, top + line_width), box["ref"], fill=(255, 255, 255), font=font)
        return image


def _palette(n: int = 10) -> list[tuple[int, int, int]]:
    colors = []
    for k in range(n):
        r, g, b = colorsys.hsv_to_rgb((k * 0.618034) % 1.0, 0.85, 0.95)
        colors.append((int(r * 255), int(g * 255), int(b * 255)))
    return colors


_PALETTE = _palette()


__all__ = [
    "IMG_TOKEN_SPAN",
    "PAT_STR",
    "SPECIAL_TOKENS",
    "BoxFormatError",
    "ImageSpanError",
    "QWenTokenizer",
    "load_tiktoken_bpe",
]
