"""The trainer on a tiny from-scratch config: loss goes down, resume is exact, LoRA save/load/merge, freezing."""

from __future__ import annotations

import json

import pytest
import torch

from qvl_agent.data.synthetic import DataConfig, write_dataset
from qvl_agent.training.encoding import IGNORE_INDEX, encode_conversation
from qvl_agent.training.trainer import TrainConfig, Trainer, latest_checkpoint, resume_config

TINY = {
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "kv_channels": 16,
    "intermediate_size": 64,
    "seq_length": 1024,
    "visual": {
        "heads": 2,
        "image_size": 28,
        "layers": 1,
        "mlp_ratio": 2.0,
        "output_dim": 32,
        "patch_size": 14,
        "width": 16,
    },
}


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    config = DataConfig(
        scene=DataConfig().scene.__class__(width=64, height=64),
        max_turns=1,
        task_weights={"vqa": 1.0, "grounding": 1.0},
    )
    return str(write_dataset(folder, 4, "train", seed=0, config=config))


def config(tmp_path, data_file, **kw):
    base = dict(
        output_dir=str(tmp_path / "run"),
        model_config=TINY,
        data=data_file,
        eval_data=data_file,
        batch_size=2,
        lr=1e-2,
        warmup_steps=1,
        log_every=1,
        eval_every=1000,
        save_every=1000,
        seed=0,
    )
    return TrainConfig(**{**base, **kw})


def test_labels_cover_only_answers_and_not_observations():
    from qvl_agent.data.vocab import default_vocab_path
    from qvl_agent.model.tokenization_qwen import QWenTokenizer

    tok = QWenTokenizer(str(default_vocab_path()))
    answer = 'Thought: t\nAction: calculator\nAction Input: {"expression": "2*3"}\nObservation: 6\nThought: I now know the final answer\nFinal Answer: 6'
    enc = encode_conversation(
        tok,
        [{"from": "user", "value": "Picture 1: <img>x.png</img>\nq"}, {"from": "assistant", "value": answer}],
    )
    supervised = tok.decode([t for t in enc.labels if t != IGNORE_INDEX])
    assert supervised == answer.replace(" 6\nThought: I now", "\nThought: I now") + "<|im_end|>"
    assert enc.image_refs == ["x.png"]
    assert len(enc.input_ids) == len(enc.labels)


def test_a_few_steps_lower_the_loss(tmp_path, data_file, device):
    trainer = Trainer(config(tmp_path, data_file, max_steps=12, device=str(device)), progress=False)
    assert next(trainer.model.parameters()).device.type == device.type
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    after = trainer.evaluate()["eval_loss"]
    assert after < before * 0.8, (before, after)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == list(range(1, 13))
    assert any("eval_loss" in r for r in log)
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()


def test_resume_continues_from_the_saved_step_exactly(tmp_path, data_file):
    straight = Trainer(
        config(tmp_path / "a", data_file, max_steps=4, save_every=2, grad_accum=2), progress=False
    )
    straight.train()
    checkpoint = latest_checkpoint(tmp_path / "a" / "run")
    assert checkpoint.name == "checkpoint-4"
    half = tmp_path / "a" / "run" / "checkpoint-2"
    resumed_config = resume_config(half, output_dir=str(tmp_path / "b"))
    resumed = Trainer(resumed_config, resume_from=half, progress=False)
    assert resumed.step == 2
    resumed.train()
    for (name, a), (_, b) in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    assert resumed.scheduler.last_epoch == straight.scheduler.last_epoch == 4


def test_freezing_keeps_parts_fixed(tmp_path, data_file):
    trainer = Trainer(config(tmp_path, data_file, max_steps=2, freeze=["vit", "resampler"]), progress=False)
    visual_before = {k: v.clone() for k, v in trainer.model.transformer.visual.state_dict().items()}
    lm_before = trainer.model.lm_head.weight.detach().clone()
    trainer.train()
    for k, v in trainer.model.transformer.visual.state_dict().items():
        assert torch.equal(v, visual_before[k]), k
    assert not torch.equal(trainer.model.lm_head.weight, lm_before)


def test_lora_adapters_save_load_and_merge(tmp_path, data_file):
    from peft import PeftModel

    from qvl_agent.model import load_model

    base_run = Trainer(config(tmp_path / "base", data_file, max_steps=1), progress=False)
    base_run.train()
    base_dir = tmp_path / "base" / "run" / "final"

    lora = Trainer(
        config(
            tmp_path / "lora",
            data_file,
            model=str(base_dir),
            model_config=None,
            lora=True,
            max_steps=3,
            save_every=3,
        ),
        progress=False,
    )
    trainable = [n for n, p in lora.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    lora.train()
    checkpoint = tmp_path / "lora" / "run" / "checkpoint-3"
    assert (checkpoint / "adapter_model.safetensors").is_file() and not (
        checkpoint / "model.safetensors"
    ).exists()

    batch = lora.make_batch(lora.train_source, [0, 1])
    batch.pop("labels")
    lora.model.eval()
    with torch.no_grad():
        adapted = lora.model(**batch).logits

    merged, _ = load_model(str(tmp_path / "lora" / "run" / "final"))
    base, _ = load_model(str(base_dir))
    reloaded = PeftModel.from_pretrained(base, str(checkpoint)).merge_and_unload()
    base_plain, _ = load_model(str(base_dir))
    with torch.no_grad():
        torch.testing.assert_close(merged.eval()(**batch).logits, adapted, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(reloaded.eval()(**batch).logits, adapted, rtol=1e-4, atol=1e-5)
        assert not torch.allclose(base_plain.eval()(**batch).logits, adapted, atol=1e-4)


def test_unmerged_lora_final_is_loadable_by_load_model_and_eval_from_anywhere(
    tmp_path, data_file, monkeypatch
):
    """``--lora --no-merge``: final/ holds only the adapter; ``load_model`` (so ``serve``, ``chat``, the console)
    and ``qvl-agent eval`` merge it into its base, even when the base was given as a relative path and they run
    from another folder."""
    from qvl_agent.model import load_model
    from qvl_agent.model.loading import CheckpointNotFoundError, is_adapter_folder
    from qvl_agent.training.eval_cli import resolve_backend

    Trainer(config(tmp_path / "base", data_file, max_steps=1), progress=False).train()
    monkeypatch.chdir(tmp_path)
    lora = Trainer(
        config(
            tmp_path / "lora",
            data_file,
            model="base/run/final",  # relative to the working directory
            model_config=None,
            lora=True,
            merge_lora=False,
            max_steps=2,
        ),
        progress=False,
    )
    lora.train()
    final = tmp_path / "lora" / "run" / "final"
    assert is_adapter_folder(final) and not (final / "model.safetensors").exists()

    batch = lora.make_batch(lora.train_source, [0, 1])
    batch.pop("labels")
    with torch.no_grad():
        adapted = lora.model.eval()(**batch).logits
    monkeypatch.chdir(tmp_path / "lora")  # elsewhere: "base/run/final" no longer resolves from here
    backend = resolve_backend(str(final))
    model, _ = load_model(final)
    with torch.no_grad():
        torch.testing.assert_close(backend.model(**batch).logits, adapted, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(model(**batch).logits, adapted, rtol=1e-4, atol=1e-5)

    # an adapter whose base is gone: a clear error naming it, not a half-loaded model
    orphan = tmp_path / "orphan"
    orphan.mkdir()
    for f in final.iterdir():
        (orphan / f.name).write_bytes(f.read_bytes())
    config_file = orphan / "adapter_config.json"
    config_file.write_text(config_file.read_text().replace(str(tmp_path / "base"), str(tmp_path / "gone")))
    with pytest.raises(CheckpointNotFoundError, match="base checkpoint"):
        load_model(orphan)


def test_bad_settings_are_rejected(tmp_path):
    from qvl_agent.model.errors import InputError

    with pytest.raises(InputError, match="exactly one"):
        TrainConfig(output_dir=str(tmp_path))
    with pytest.raises(InputError, match="cannot freeze"):
        TrainConfig(output_dir=str(tmp_path), model_config=TINY, freeze=["everything"])


def test_train_and_eval_commands_end_to_end(tmp_path, data_file):
    from click.testing import CliRunner

    from qvl_agent.training.cli import train
    from qvl_agent.training.eval_cli import eval_command

    runner = CliRunner()
    out = tmp_path / "run"
    result = runner.invoke(
        train,
        [
            "--config",
            json.dumps(TINY),
            "--data",
            data_file,
            "-o",
            str(out),
            "--max-steps",
            "2",
            "--batch-size",
            "2",
            "--save-every",
            "1",
            "--log-every",
            "1",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(train, ["-o", str(out), "--resume", "--max-steps", "3", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "at step 2" in result.output
    steps = [
        json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines() if "loss" in line
    ]
    assert steps == [1, 2, 3]

    results = tmp_path / "eval" / "results.json"
    result = runner.invoke(
        eval_command,
        [
            "--model",
            str(out / "final"),
            "--task",
            "grounding",
            "--limit",
            "2",
            "--n-samples",
            "6",
            "--max-new-tokens",
            "4",
            "--output",
            str(results),
            "--train-log",
            str(out / "log.jsonl"),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "grounding" in result.output and "acc@IoU0.5" in result.output
    payload = json.loads(results.read_text())
    assert payload["scores"]["grounding"]["n"] == 2 and len(payload["predictions"]) == 2
    assert results.with_suffix(".png").stat().st_size > 10_000
