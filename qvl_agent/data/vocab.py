"""A small byte-level BPE vocabulary in the ``qwen.tiktoken`` file format, trained on the synthetic corpus.

The file has one ``base64(token bytes) rank`` line per token: the 256 single bytes first (rank = byte value),
then the learned merges in the order they were learned, which is the order tiktoken applies them. The same
``QWenTokenizer`` class loads it; its special tokens (``<|endoftext|>``, ``<|im_start|>``, …, ``<img>``) take
the ids right after the ranks. Training uses Hugging Face ``tokenizers`` with Qwen's own pre-tokenisation
pattern (``PAT_STR``: digits split one by one), so merges never cross the boundaries tiktoken will see.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Iterator
from importlib import resources
from pathlib import Path

#: the vocabulary shipped with the package (trained by ``qvl-agent data vocab`` with the defaults)
DEFAULT_VOCAB_NAME = "synthetic.tiktoken"
DEFAULT_VOCAB_SIZE = 3000

_IMG_SPAN = re.compile(r"<img>.*?</img>", re.DOTALL)
_SPECIAL_TAGS = re.compile(r"</?(ref|box|quad|img|imgpad)>")
CHATML_SCAFFOLD = ("system\nYou are a helpful assistant.", "user\n", "assistant\n", "\n")


def default_vocab_path() -> Path:
    """Path of the packaged small vocabulary file."""
    return Path(str(resources.files("qvl_agent") / "assets" / "vocab" / DEFAULT_VOCAB_NAME))


def plain_text(value: str) -> str:
    """Conversation text as BPE sees it: picture spans and the special grounding tags removed."""
    return _SPECIAL_TAGS.sub(" ", _IMG_SPAN.sub(" ", value))


def corpus_texts(records: Iterable[dict]) -> Iterator[str]:
    """Every conversation value of fine-tuning records, as plain text, plus the ChatML scaffolding."""
    yield from CHATML_SCAFFOLD
    for record in records:
        for turn in record["conversations"]:
            yield plain_text(turn["value"])


def train_ranks(
    texts: Iterable[str], vocab_size: int = DEFAULT_VOCAB_SIZE, min_frequency: int = 2
) -> dict[bytes, int]:
    """Learn ``vocab_size`` byte-level BPE ranks (256 bytes + merges) from ``texts``."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

    from qvl_agent.model.tokenization_qwen import PAT_STR

    if vocab_size < 257:
        raise ValueError(f"vocab_size must exceed the 256 single bytes, got {vocab_size}")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PAT_STR), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    merges = json.loads(tokenizer.to_str())["model"]["merges"]

    decode = _byte_level_decoder()
    ranks: dict[bytes, int] = {bytes([b]): b for b in range(256)}
    for merge in merges:
        left, right = merge if isinstance(merge, list) else merge.split(" ")
        token = decode(left) + decode(right)
        if token not in ranks:
            ranks[token] = len(ranks)
        if len(ranks) >= vocab_size:
            break
    return ranks


def _byte_level_decoder():
    """Inverse of the GPT-2 byte -> printable-character table used by ``ByteLevel``."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    table: dict[str, int] = {chr(b): b for b in printable}
    extra = 0
    for b in range(256):
        if b not in printable:
            table[chr(256 + extra)] = b
            extra += 1
    return lambda text: bytes(table[c] for c in text)


def write_tiktoken(ranks: dict[bytes, int], path: str | Path) -> Path:
    """Write ranks in the ``qwen.tiktoken`` format (sorted by rank)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        f"{base64.b64encode(token).decode()} {rank}"
        for token, rank in sorted(ranks.items(), key=lambda kv: kv[1])
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_tiktoken(path: str | Path) -> dict[bytes, int]:
    """Read a ``qwen.tiktoken``-format file."""
    ranks: dict[bytes, int] = {}
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
        except ValueError as exc:
            raise ValueError(f"{path}:{n}: not a 'base64 rank' line: {line[:60]!r}") from exc
    return ranks


def build_vocab(
    out: str | Path,
    n_samples: int = 20000,
    seed: int = 0,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    config=None,
) -> Path:
    """Generate ``n_samples`` training conversations and train a vocabulary on them; returns the file path."""
    from qvl_agent.data.synthetic import SyntheticDataset

    records = (s.record() for s in SyntheticDataset(n_samples, "train", seed, config))
    return write_tiktoken(train_ranks(corpus_texts(records), vocab_size), out)
