"""The trainer behind ``qvl-agent train``: full fine-tuning or LoRA on conversations in the Qwen-VL format.

Data is either a fine-tuning JSON file (validated up front) or the synthetic generator, sampled on the fly.
Each optimizer step takes ``batch_size * grad_accum`` conversations whose indices depend only on the step, so a
run resumed from a checkpoint sees exactly the data it would have seen. Checkpoints hold the weights
(``save_pretrained``, safetensors; the adapter only with LoRA), the tokenizer, and ``trainer_state.pt``
(optimizer, scheduler, step, RNG states, config). ``log.jsonl`` gets one line per logged step / evaluation.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from qvl_agent.data.format import Conversation, load_conversations
from qvl_agent.model.errors import InputError
from qvl_agent.model.loading import resolve_device
from qvl_agent.training.encoding import IGNORE_INDEX, EncodedConversation, collate, encode_conversation

STATE_FILE = "trainer_state.pt"
FREEZABLE = ("vit", "resampler", "lm")
LORA_TARGETS = r"transformer\.h\.\d+\.(attn\.c_attn|attn\.c_proj|mlp\.w1|mlp\.w2|mlp\.c_proj)"


@dataclass
class TrainConfig:
    """Everything a run needs; saved in each checkpoint so ``--resume`` needs nothing else."""

    output_dir: str
    #: checkpoint directory to fine-tune (a real Qwen-VL one, or one of ours)
    model: str | None = None
    #: ``QWenConfig`` keyword arguments for a from-scratch model (``visual`` as a dict)
    model_config: dict[str, Any] | None = None
    #: ranks file for a from-scratch model (default: the packaged small vocabulary)
    vocab_file: str | None = None
    #: training data JSON/JSONL in the Qwen-VL format; None = synthetic samples generated on the fly
    data: str | None = None
    eval_data: str | None = None
    #: ``DataConfig`` fields for synthetic data
    synthetic: dict[str, Any] = field(default_factory=dict)
    synthetic_seed: int = 0
    eval_samples: int = 32
    max_steps: int = 100
    batch_size: int = 4
    grad_accum: int = 1
    lr: float = 1e-3
    #: learning-rate multiplier for the vision side (``transformer.visual``)
    visual_lr_scale: float = 1.0
    weight_decay: float = 0.0
    warmup_steps: int = 10
    min_lr_ratio: float = 0.1
    max_grad_norm: float = 1.0
    max_length: int = 2048
    freeze: list[str] = field(default_factory=list)
    lora: bool = False
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    merge_lora: bool = True
    mask_observations: bool = True
    system: str = "You are a helpful assistant."
    log_every: int = 10
    eval_every: int = 50
    save_every: int = 50
    save_total_limit: int = 2
    seed: int = 0
    device: str = "auto"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if (self.model is None) == (self.model_config is None):
            raise InputError(
                "give exactly one of a model checkpoint (--model) or a from-scratch config (--config)"
            )
        bad = [f for f in self.freeze if f not in FREEZABLE]
        if bad:
            raise InputError(f"cannot freeze {bad}; choose from {list(FREEZABLE)}")
        if self.max_steps < 1 or self.batch_size < 1 or self.grad_accum < 1:
            raise InputError("max_steps, batch_size and grad_accum must be >= 1")
        small = [
            name
            for name in ("log_every", "eval_every", "save_every", "save_total_limit", "lora_r", "max_length")
            if getattr(self, name) < 1
        ]
        if small:
            raise InputError(f"{', '.join(small)} must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------- data


class ConversationSource:
    """Indexable conversations with their pictures: a validated file, or the synthetic generator."""

    def __init__(
        self,
        conversations: list[Conversation] | None = None,
        synthetic: Callable[[int], Any] | None = None,
        length: int | None = None,
    ) -> None:
        self.conversations = conversations
        self.synthetic = synthetic
        self.length = len(conversations) if conversations is not None else length

    @classmethod
    def from_file(cls, path: str | Path) -> ConversationSource:
        return cls(conversations=load_conversations(path))

    @classmethod
    def from_synthetic(
        cls, split: str, seed: int, data_config: dict[str, Any], length: int | None = None
    ) -> ConversationSource:
        from qvl_agent.data.synthetic import DataConfig, generate_sample

        config = DataConfig.from_dict(data_config)
        return cls(synthetic=lambda i: generate_sample(i, split, seed, config), length=length)

    def get(self, index: int) -> tuple[list[dict[str, str]], dict[str, Image.Image | str]]:
        """Turns and ``{reference: picture or path}`` of conversation ``index``."""
        if self.synthetic is not None:
            sample = self.synthetic(index)
            return sample.conversations, dict(sample.images)
        conv = self.conversations[index % self.length]  # type: ignore[index,operator]
        return conv.turns, dict(conv.images)


# --------------------------------------------------------------------------------------------- model


def load_checkpoint(path: str | Path):
    """``(model, tokenizer)`` from a checkpoint directory (through ``qvl_agent.model.load_model``)."""
    from qvl_agent.model import load_model

    return load_model(str(path))


def build_model(config: TrainConfig):
    """``(model, tokenizer)``: loaded from ``config.model`` or built from ``config.model_config``."""
    if config.model is not None:
        if not Path(config.model).is_dir():
            raise InputError(f"--model {config.model!r} is not a checkpoint directory")
        return load_checkpoint(config.model)
    from qvl_agent.data.vocab import default_vocab_path
    from qvl_agent.model.configuration_qwen import QWenConfig
    from qvl_agent.model.modeling_qwen import QWenLMHeadModel
    from qvl_agent.model.tokenization_qwen import QWenTokenizer

    kwargs = json.loads(json.dumps(config.model_config))
    # an <img> span has one slot per resampler query (256 in the released models)
    n_queries = (kwargs.get("visual") or {}).get("n_queries") or 256
    tokenizer = QWenTokenizer(config.vocab_file or str(default_vocab_path()), image_span=n_queries)
    kwargs.setdefault("vocab_size", -(-len(tokenizer) // 64) * 64)
    if kwargs["vocab_size"] < len(tokenizer):
        raise InputError(
            f"config vocab_size {kwargs['vocab_size']} is smaller than the tokenizer ({len(tokenizer)} ids)"
        )
    visual = dict(kwargs.get("visual") or {})
    if visual.get("image_start_id", tokenizer.img_start_id) != tokenizer.img_start_id:
        raise InputError(
            f"visual.image_start_id {visual['image_start_id']} does not match the tokenizer's <img> id {tokenizer.img_start_id}"
        )
    visual["image_start_id"] = tokenizer.img_start_id
    kwargs["visual"] = visual
    model_config = QWenConfig(**kwargs)
    check_memory(model_config, config)
    torch.manual_seed(config.seed)
    model = QWenLMHeadModel(model_config)
    chat_generation_config(model, tokenizer)
    return model, tokenizer


def count_parameters(model_config: Any) -> int:
    """Parameters of a ``QWenConfig``'s model, counted without allocating it (meta device)."""
    from qvl_agent.model.modeling_qwen import QWenLMHeadModel

    state = torch.get_rng_state()
    try:
        with torch.device("meta"):
            model = QWenLMHeadModel(model_config)
    finally:
        torch.set_rng_state(state)
    return sum(p.numel() for p in model.parameters())


def available_memory(device: torch.device) -> int | None:
    """Bytes free for training on ``device`` (CUDA: free GPU memory; CPU: Linux ``MemAvailable``), or None."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_memory(model_config: Any, config: TrainConfig) -> None:
    """Refuse a from-scratch config whose weights, gradients and Adam moments cannot fit in memory.

    An empty ``--config {}`` means the full-size Qwen-VL (billions of parameters): without this check the
    process would be killed by the operating system with no message.
    """
    try:
        n = count_parameters(model_config)
    except Exception:  # a config the meta device cannot build: the real build reports the problem
        return
    need = 4 * n * torch.tensor([], dtype=getattr(torch, config.dtype)).element_size()
    free = available_memory(resolve_device(config.device))
    if free is not None and need > free:
        raise InputError(
            f"the --config model has {n / 1e6:,.0f}M parameters and needs about {need / 2**30:.1f} GiB to train "
            f"(weights, gradients, optimizer), but only {free / 2**30:.1f} GiB is free; give a smaller config "
            "(hidden_size, num_hidden_layers, visual width/layers; an empty {} is the full-size Qwen-VL)"
        )


def chat_generation_config(model: torch.nn.Module, tokenizer) -> None:
    """Greedy ChatML generation settings (what ``model.chat`` and the backends read) for a new model."""
    gc = model.generation_config
    gc.chat_format = "chatml"
    gc.max_window_size = model.config.seq_length
    gc.eos_token_id = tokenizer.eod_id
    gc.pad_token_id = tokenizer.eod_id
    gc.do_sample = False
    gc.max_new_tokens = 256
    # saved as a config of its own: loading must not rebuild it from the model config (losing chat_format)
    gc._from_model_config = False


def freeze_parts(model: torch.nn.Module, parts: list[str]) -> None:
    """Freeze ``vit`` (ViT: ``transformer.visual`` minus the resampler), ``resampler``
    (``transformer.visual.attn_pool`` + ``ln_post`` + ``proj``) and/or ``lm`` (everything else)."""
    for name, param in model.named_parameters():
        if part_of(name) in parts:
            param.requires_grad_(False)


def part_of(name: str) -> str:
    name = re.sub(r"^(base_model\.model\.)", "", name)
    if name.startswith("transformer.visual."):
        rest = name[len("transformer.visual.") :]
        if rest.startswith(("attn_pool.", "ln_post.", "proj")):
            return "resampler"
        return "vit"
    return "lm"


def apply_lora(model: torch.nn.Module, config: TrainConfig) -> torch.nn.Module:
    """Wrap the language model's linear layers with LoRA adapters (peft)."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=LORA_TARGETS,
    )
    return get_peft_model(model, lora)


# --------------------------------------------------------------------------------------------- trainer


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Learning-rate factor of ``step``: linear warm-up over ``warmup`` steps, then cosine down to ``min_ratio``
    at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class Trainer:
    """Runs (or resumes) a training run described by a :class:`TrainConfig`."""

    def __init__(
        self, config: TrainConfig, resume_from: str | Path | None = None, progress: bool = True
    ) -> None:
        self.config = config
        self.out = Path(config.output_dir)
        self.progress = progress
        self.device = resolve_device(config.device)
        self.step = 0

        self.train_source = (
            ConversationSource.from_file(config.data)
            if config.data
            else ConversationSource.from_synthetic("train", config.synthetic_seed, config.synthetic)
        )
        if config.eval_data:
            self.eval_source: ConversationSource | None = ConversationSource.from_file(config.eval_data)
        elif config.data is None:
            self.eval_source = ConversationSource.from_synthetic(
                "heldout", config.synthetic_seed, config.synthetic, length=config.eval_samples
            )
        else:
            self.eval_source = None

        self.model, self.tokenizer = build_model(config)
        from qvl_agent.model.image_processing import QWenImageProcessor

        self.image_processor = QWenImageProcessor(image_size=self.model.config.visual["image_size"])
        if config.lora:
            self.model = apply_lora(self.model, config)
        freeze_parts(self.model, config.freeze)
        if resume_from is not None:
            self._load_weights(Path(resume_from))
        dtype = getattr(torch, config.dtype)
        self.model.to(self.device, dtype=dtype)

        self.optimizer = self._make_optimizer()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        if resume_from is not None:
            self._load_state(Path(resume_from))

    # -- setup ------------------------------------------------------------------------------------------

    def _make_optimizer(self) -> torch.optim.Optimizer:
        groups: dict[tuple[bool, float], list[torch.nn.Parameter]] = {}
        for name, param in self.model.named_parameters():
            if not param.requires_grad:
                continue
            visual = part_of(name) != "lm"
            decay = param.dim() >= 2 and "wte" not in name
            groups.setdefault((visual, decay), []).append(param)
        if not groups:
            raise InputError("nothing to train: every parameter is frozen")
        param_groups = [
            {
                "params": params,
                "lr": self.config.lr * (self.config.visual_lr_scale if visual else 1.0),
                "weight_decay": self.config.weight_decay if decay else 0.0,
            }
            for (visual, decay), params in groups.items()
        ]
        return torch.optim.AdamW(param_groups, betas=(0.9, 0.95))

    def _lr_factor(self, step: int) -> float:
        c = self.config
        return warmup_cosine(step, c.warmup_steps, c.max_steps, c.min_lr_ratio)

    # -- batches ----------------------------------------------------------------------------------------

    def _encode(
        self, source: ConversationSource, index: int
    ) -> tuple[EncodedConversation, list[Image.Image | str]]:
        turns, images = source.get(index)
        encoded = encode_conversation(
            self.tokenizer, turns, self.config.system, self.config.max_length, self.config.mask_observations
        )
        return encoded, [images.get(ref, ref) for ref in encoded.image_refs]

    def make_batch(self, source: ConversationSource, indices: list[int]) -> dict[str, torch.Tensor]:
        """Model inputs for conversations ``indices``: ids, mask, labels and ``pixel_values`` (span order)."""
        encoded, pictures = [], []
        for i in indices:
            enc, pics = self._encode(source, i)
            encoded.append(enc)
            pictures.extend(pics)
        batch = collate(encoded, self.tokenizer.eod_id)
        if pictures:
            batch["pixel_values"] = self.image_processor(pictures)
        return {k: v.to(self.device) for k, v in batch.items()}

    def _train_indices(self, step: int, micro: int) -> list[int]:
        """Conversation indices of micro-batch ``micro`` of optimizer step ``step`` (a function of both only)."""
        per_step = self.config.batch_size * self.config.grad_accum
        start = step * per_step + micro * self.config.batch_size
        positions = range(start, start + self.config.batch_size)
        n = self.train_source.length
        if n is None:  # endless synthetic stream
            return list(positions)
        out = []
        for pos in positions:
            epoch, offset = divmod(pos, n)
            order = torch.randperm(
                n, generator=torch.Generator().manual_seed(self.config.seed * 1000003 + epoch)
            )
            out.append(int(order[offset]))
        return out

    # -- loop -------------------------------------------------------------------------------------------

    def train(self) -> dict[str, Any]:
        """Run until ``max_steps``; returns the last logged metrics."""
        c = self.config
        self.out.mkdir(parents=True, exist_ok=True)
        log_path = self.out / "log.jsonl"
        self.model.train()
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=c.max_steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True)
        last: dict[str, Any] = {}
        running, seen, tokens, t0 = 0.0, 0, 0, time.time()
        while self.step < c.max_steps:
            self.optimizer.zero_grad(set_to_none=True)
            step_loss = 0.0
            for micro in range(c.grad_accum):
                batch = self.make_batch(self.train_source, self._train_indices(self.step, micro))
                loss = self.model(**batch).loss
                (loss / c.grad_accum).backward()
                step_loss += loss.item() / c.grad_accum
                tokens += int((batch["labels"] != IGNORE_INDEX).sum())
            if c.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(
                    [p for p in self.model.parameters() if p.requires_grad], c.max_grad_norm
                )
            self.optimizer.step()
            self.scheduler.step()
            self.step += 1
            running += step_loss
            seen += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{step_loss:.3f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
            if self.step % c.log_every == 0 or self.step == c.max_steps:
                last = {
                    "step": self.step,
                    "loss": running / seen,
                    "lr": self.scheduler.get_last_lr()[0],
                    "supervised_tokens": tokens,
                    "seconds": round(time.time() - t0, 2),
                }
                _append_jsonl(log_path, last)
                running, seen = 0.0, 0
            if self.eval_source is not None and (self.step % c.eval_every == 0 or self.step == c.max_steps):
                metrics = {"step": self.step, **self.evaluate()}
                _append_jsonl(log_path, metrics)
                last = {**last, **metrics}
                if bar is not None:
                    bar.write(
                        f"step {self.step}: held-out loss {metrics['eval_loss']:.4f}, token acc {metrics['eval_token_acc']:.3f}"
                    )
                self.model.train()
            if self.step % c.save_every == 0 and self.step < c.max_steps:
                self.save_checkpoint()
        if bar is not None:
            bar.close()
        self.save_checkpoint()
        self.save_final()
        return last

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Held-out loss and next-token accuracy on supervised tokens."""
        assert self.eval_source is not None
        self.model.eval()
        n = self.eval_source.length or self.config.eval_samples
        total_loss, total_tokens, correct = 0.0, 0, 0
        for start in range(0, n, self.config.batch_size):
            batch = self.make_batch(
                self.eval_source, list(range(start, min(n, start + self.config.batch_size)))
            )
            out = self.model(**batch)
            labels = batch["labels"][:, 1:]
            mask = labels != IGNORE_INDEX
            count = int(mask.sum())
            total_loss += out.loss.item() * count
            total_tokens += count
            correct += int(((out.logits[:, :-1].argmax(-1) == labels) & mask).sum())
        return {
            "eval_loss": total_loss / max(1, total_tokens),
            "eval_token_acc": correct / max(1, total_tokens),
        }

    # -- checkpoints ------------------------------------------------------------------------------------

    def save_checkpoint(self) -> Path:
        """Write ``checkpoint-{step}`` (weights or adapter, tokenizer, trainer state); prune old ones."""
        path = self.out / f"checkpoint-{self.step}"
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path, safe_serialization=True)
        self.tokenizer.save_pretrained(path)
        state = {
            "step": self.step,
            "config": self.config.to_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "python": random.getstate()},
        }
        torch.save(state, path / STATE_FILE)
        checkpoints = sorted(self.out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
        for old in checkpoints[: max(0, len(checkpoints) - self.config.save_total_limit)]:
            shutil.rmtree(old, ignore_errors=True)
        return path

    def save_final(self) -> Path:
        """Write ``final/``: a loadable checkpoint (LoRA merged into the weights when ``merge_lora``)."""
        path = self.out / "final"
        model = self.model
        if self.config.lora and self.config.merge_lora:
            model = self.model.merge_and_unload()
        model.save_pretrained(path, safe_serialization=True)
        self.tokenizer.save_pretrained(path)
        if self.config.lora and not self.config.merge_lora:
            _pin_adapter_base(path, self.config)
        return path

    def _load_weights(self, path: Path) -> None:
        if self.config.lora:
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file

            set_peft_model_state_dict(self.model, load_file(str(path / "adapter_model.safetensors")))
        else:
            from safetensors.torch import load_file

            state = {}
            for file in sorted(path.glob("*.safetensors")):
                state.update(load_file(str(file)))
            missing, unexpected = self.model.load_state_dict(state, strict=False)
            missing = [k for k in missing if not k.endswith("inv_freq")]
            if missing or unexpected:
                raise InputError(
                    f"checkpoint {path} does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
                )

    def _load_state(self, path: Path) -> None:
        state = torch.load(path / STATE_FILE, weights_only=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(state["rng"]["python"])


def _pin_adapter_base(path: Path, config: TrainConfig) -> None:
    """Point an adapter folder's ``base_model_name_or_path`` at the base checkpoint's absolute path."""
    file = path / "adapter_config.json"
    if config.model is None or not file.is_file():
        return
    data = json.loads(file.read_text(encoding="utf-8"))
    data["base_model_name_or_path"] = str(Path(config.model).resolve())
    file.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The ``checkpoint-N`` folder with the highest N, or None."""
    found = [p for p in Path(output_dir).glob("checkpoint-*") if (p / STATE_FILE).exists()]
    return max(found, key=lambda p: int(p.name.split("-")[1]), default=None)


def resume_config(checkpoint: str | Path, **overrides: Any) -> TrainConfig:
    """The :class:`TrainConfig` saved in a checkpoint, with ``overrides`` (e.g. a larger ``max_steps``)."""
    file = Path(checkpoint) / STATE_FILE
    if not file.is_file():
        raise InputError(f"{checkpoint} is not a training checkpoint (no {STATE_FILE} in it)")
    state = torch.load(file, weights_only=False)
    data = {**state["config"], **{k: v for k, v in overrides.items() if v is not None}}
    return TrainConfig(**data)


def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def iter_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            yield json.loads(line)
