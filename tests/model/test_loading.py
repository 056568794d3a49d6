"""Loading checkpoints: Auto classes without remote code, weight layouts, dtypes, clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from qvl_agent.model import (
    CheckpointLoadError,
    CheckpointNotFoundError,
    InputError,
    QWenConfig,
    QWenLMHeadModel,
    QWenTokenizer,
    load_model,
)
from qvl_agent.model import loading as loading_module

pytestmark = pytest.mark.testdata

IDS = torch.tensor([[151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198]])
ORIGINAL_CODE = ("configuration_qwen.py", "modeling_qwen.py", "tokenization_qwen.py", "visual.py")


def _copy_checkpoint(source: Path, target: Path, weights: bool = True) -> Path:
    target.mkdir()
    for name in ("config.json", "generation_config.json", "qwen.tiktoken"):
        shutil.copyfile(source / name, target / name)
    if weights:
        shutil.copyfile(source / "model.safetensors", target / "model.safetensors")
    return target


@pytest.fixture(scope="module")
def reference_logits(tiny_checkpoint) -> torch.Tensor:
    model, _ = load_model(tiny_checkpoint)
    with torch.no_grad():
        return model(IDS).logits


def _logits(model: QWenLMHeadModel) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits


@pytest.fixture
def downloaded_checkpoint(tiny_checkpoint, tmp_path) -> Path:
    """A folder as downloaded from the Hub: the original's *.py files (booby-trapped) and auto_map entries."""
    folder = _copy_checkpoint(tiny_checkpoint, tmp_path / "Qwen-VL-Chat")
    marker = tmp_path / "remote-code-ran"
    for name in ORIGINAL_CODE:
        (folder / name).write_text(
            f"open({str(marker)!r}, 'w').write({name!r})\nraise RuntimeError('remote code executed: {name}')\n"
        )
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "model_max_length": 8192,
                "tokenizer_class": "QWenTokenizer",
                "auto_map": {"AutoTokenizer": ["tokenization_qwen.QWenTokenizer", None]},
            }
        )
    )
    config = json.loads((folder / "config.json").read_text())
    assert "auto_map" in config  # the official config points at configuration_qwen / modeling_qwen
    return folder


def test_auto_classes_ignore_original_code(downloaded_checkpoint, reference_logits):
    folder = downloaded_checkpoint
    config = AutoConfig.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert type(config) is QWenConfig
    assert type(model) is QWenLMHeadModel
    assert type(tokenizer) is QWenTokenizer
    assert not hasattr(config, "auto_map")
    assert torch.equal(_logits(model), reference_logits)
    # even an explicit opt-in does not pick the folder's code for config and model: ours are registered locally
    assert type(AutoConfig.from_pretrained(folder, trust_remote_code=True)) is QWenConfig
    assert type(AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)) is QWenLMHeadModel
    assert not (folder.parent / "remote-code-ran").exists()


def test_load_model_ignores_original_code(downloaded_checkpoint, reference_logits):
    model, tokenizer = load_model(downloaded_checkpoint)
    assert type(tokenizer) is QWenTokenizer
    assert not model.training
    assert torch.equal(_logits(model), reference_logits)
    assert not (downloaded_checkpoint.parent / "remote-code-ran").exists()


def test_folder_without_original_code_loads_the_same(tiny_checkpoint, tmp_path, reference_logits):
    folder = _copy_checkpoint(tiny_checkpoint, tmp_path / "plain")
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert type(AutoTokenizer.from_pretrained(folder)) is QWenTokenizer
    assert torch.equal(_logits(model), reference_logits)


def test_sharded_safetensors_roundtrip(tiny_checkpoint, tmp_path, reference_logits):
    model, _ = load_model(tiny_checkpoint)
    folder = tmp_path / "sharded"
    model.save_pretrained(folder, max_shard_size="20MB")
    shutil.copyfile(tiny_checkpoint / "qwen.tiktoken", folder / "qwen.tiktoken")
    assert (folder / "model.safetensors.index.json").is_file()
    assert len(list(folder.glob("model-*.safetensors"))) > 1
    assert "auto_map" not in json.loads((folder / "config.json").read_text())
    reloaded, _ = load_model(folder)
    assert torch.equal(_logits(reloaded), reference_logits)


def test_bin_and_sharded_bin(tiny_checkpoint, tmp_path, reference_logits):
    state = load_file(tiny_checkpoint / "model.safetensors")
    single = _copy_checkpoint(tiny_checkpoint, tmp_path / "bin", weights=False)
    torch.save(state, single / "pytorch_model.bin")
    model, _ = load_model(single)
    assert torch.equal(_logits(model), reference_logits)

    sharded = _copy_checkpoint(tiny_checkpoint, tmp_path / "bin_sharded", weights=False)
    names = sorted(state)
    halves = {"pytorch_model-00001-of-00002.bin": names[::2], "pytorch_model-00002-of-00002.bin": names[1::2]}
    weight_map = {}
    for file_name, keys in halves.items():
        torch.save({k: state[k] for k in keys}, sharded / file_name)
        weight_map.update(dict.fromkeys(keys, file_name))
    (sharded / "pytorch_model.bin.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    model, _ = load_model(sharded)
    assert torch.equal(_logits(model), reference_logits)


def test_dtypes(tiny_checkpoint, tmp_path, reference_logits):
    model, _ = load_model(tiny_checkpoint, dtype="bf16")
    assert model.dtype == torch.bfloat16
    logits = _logits(model)
    assert logits.dtype == torch.bfloat16
    assert (logits.float() - reference_logits).abs().max() < 0.5
    out = model.generate(IDS, max_new_tokens=3, do_sample=False)
    assert out.shape == (1, IDS.shape[1] + 3)

    # the config's precision flag is the default when no dtype is asked for
    folder = _copy_checkpoint(tiny_checkpoint, tmp_path / "bf16flag")
    config = json.loads((folder / "config.json").read_text())
    config.update(fp32=False, bf16=True)
    (folder / "config.json").write_text(json.dumps(config))
    assert load_model(folder)[0].dtype == torch.bfloat16
    assert AutoModelForCausalLM.from_pretrained(folder).dtype == torch.bfloat16
    assert load_model(folder, dtype=torch.float32)[0].dtype == torch.float32


def test_missing_folder_and_weights_are_clear_errors(tiny_checkpoint, tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="no checkpoint folder"):
        load_model(tmp_path / "does-not-exist")
    empty = _copy_checkpoint(tiny_checkpoint, tmp_path / "noweights", weights=False)
    with pytest.raises(CheckpointNotFoundError, match="holds no weights"):
        load_model(empty)
    (empty / "model.safetensors").write_bytes(b"")
    (empty / "qwen.tiktoken").unlink()
    with pytest.raises(CheckpointNotFoundError, match="qwen.tiktoken"):
        load_model(empty)
    with pytest.raises(ValueError, match="unknown dtype"):
        load_model(tiny_checkpoint, dtype="float8")


def test_demo_missing_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(loading_module, "demo_checkpoint_dir", lambda: tmp_path / "assets" / "demo")
    with pytest.raises(CheckpointNotFoundError, match="demo model is not installed"):
        load_model("demo")
    with pytest.raises(FileNotFoundError):  # also a FileNotFoundError for generic handlers
        load_model()


def test_precision_flags_choose_the_default_dtype():
    base = dict(hidden_size=64, num_attention_heads=2, kv_channels=32)
    assert QWenConfig(**base, fp32=True, torch_dtype="float16").dtype == torch.float32
    assert QWenConfig(**base, bf16=True).dtype == torch.bfloat16
    assert QWenConfig(**base, fp16=True).dtype == torch.float16
    if not torch.cuda.is_available():  # like the original: fp32 on a CPU-only machine when no flag is set
        assert QWenConfig(**base).dtype == torch.float32
    with pytest.raises(ValueError, match="at most one"):
        QWenConfig(**base, bf16=True, fp16=True)
    with pytest.raises(ValueError, match="num_attention_heads"):
        QWenConfig(hidden_size=64, num_attention_heads=3, kv_channels=32)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_load_runs_images(tiny_checkpoint, dtype):
    """``load_model(dtype=...)`` gives the same model as loading in fp32 then ``.to(dtype)``, images included
    (the resampler's sin-cos table is a float32 buffer that from_pretrained does not cast)."""
    ids = torch.tensor(
        [QWenTokenizer.from_pretrained(tiny_checkpoint).encode("<img>images/img_a.png</img>hi")]
    )
    picture = tiny_checkpoint / "images" / "img_a.png"
    loaded, _ = load_model(tiny_checkpoint, dtype=dtype)
    cast = load_model(tiny_checkpoint)[0].to(dtype)
    with torch.no_grad():
        logits = loaded(ids, images=[picture]).logits
        assert logits.dtype == dtype
        assert torch.equal(logits, cast(ids, images=[picture]).logits)


def test_unusable_checkpoints_are_clear_errors(tiny_checkpoint, tmp_path):
    folder = _copy_checkpoint(tiny_checkpoint, tmp_path / "broken", weights=False)
    weights = (tiny_checkpoint / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(weights[:1000])
    with pytest.raises(CheckpointLoadError, match=r"cannot load the weights of checkpoint folder .*broken"):
        load_model(folder)

    (folder / "model.safetensors").write_bytes(weights)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "qwen2_vl"}))
    with pytest.raises(CheckpointLoadError, match="model_type 'qwen2_vl'.*Qwen2-VL"):
        load_model(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointLoadError, match="cannot read .*config.json"):
        load_model(folder)
    (folder / "config.json").write_text(json.dumps({**config, "hidden_size": 256, "kv_channels": 128}))
    with pytest.raises(CheckpointLoadError, match=r"does not match its config.json.* is \[151936, 128\]"):
        load_model(folder)


def test_missing_weights_are_refused_not_initialised(tiny_checkpoint, tmp_path):
    """A checkpoint without the vision tower (e.g. a text-only Qwen) must not load with random visual weights."""
    folder = _copy_checkpoint(tiny_checkpoint, tmp_path / "text_only", weights=False)
    state = load_file(tiny_checkpoint / "model.safetensors")
    save_file(
        {k: v for k, v in state.items() if not k.startswith("transformer.visual.")},
        folder / "model.safetensors",
    )
    with pytest.raises(CheckpointLoadError, match=r"lacks \d+ weight\(s\) .*transformer\.visual\."):
        load_model(folder)


def test_unavailable_device_is_a_clear_error(tiny_checkpoint):
    with pytest.raises(InputError, match="unknown device 'tpu9'"):
        load_model(tiny_checkpoint, device="tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA is not available"):
            load_model(tiny_checkpoint, device="cuda")
