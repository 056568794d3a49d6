"""Bad input to ``qvl-agent train`` / ``eval`` / ``data`` gives a clear error, never a traceback or a kill."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from PIL import Image

from qvl_agent.model.errors import InputError
from qvl_agent.testing import ScriptedBackend, cli_error_line
from qvl_agent.training import eval_cli, evaluate, trainer
from qvl_agent.training.trainer import TrainConfig

#: a very small from-scratch model (built for real in one test; counted on the meta device in others)
TINY = {
    "hidden_size": 16,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "kv_channels": 8,
    "intermediate_size": 32,
    "seq_length": 256,
    "visual": {"heads": 2, "image_size": 28, "layers": 1, "output_dim": 16, "patch_size": 14, "width": 16},
}


@pytest.mark.parametrize("option", ["--max-steps", "--log-every", "--eval-every", "--save-every", "--lora-r"])
def test_train_rejects_zero_counts(tmp_path, option):
    # --max-steps 0 used to become the default 100, and --log-every 0 a ZeroDivisionError traceback mid-run
    result = CliRunner().invoke(_train(), [option, "0", "-o", str(tmp_path), "--quiet"])
    assert option in cli_error_line(result)


def _train():
    from qvl_agent.training.cli import train

    return train


def test_config_rejects_zero_intervals(tmp_path):
    for name in ("log_every", "eval_every", "save_every", "lora_r"):
        with pytest.raises(InputError, match=name):
            TrainConfig(output_dir=str(tmp_path), model_config=TINY, **{name: 0})


def test_parameters_are_counted_without_allocating():
    from qvl_agent.model.configuration_qwen import QWenConfig
    from qvl_agent.model.modeling_qwen import QWenLMHeadModel

    config = QWenConfig(**{**TINY, "vocab_size": 640})
    real = sum(p.numel() for p in QWenLMHeadModel(config).parameters())
    assert trainer.count_parameters(config) == real
    full = trainer.count_parameters(QWenConfig(vocab_size=640))  # the default is the full-size Qwen-VL
    assert full > 7e9


def test_a_config_too_big_for_memory_is_refused_before_it_is_built(tmp_path, monkeypatch):
    """``--config {}`` is the 9B-parameter Qwen-VL: it must not be allocated only to be killed by the OS."""
    monkeypatch.setattr(trainer, "available_memory", lambda device: 2**10)  # 1 KiB free
    config = TrainConfig(output_dir=str(tmp_path), model_config=TINY)
    with pytest.raises(InputError, match=r"parameters and needs about .* GiB to train"):
        trainer.build_model(config)
    monkeypatch.setattr(trainer, "available_memory", lambda device: None)  # unknown: no check
    model, _ = trainer.build_model(config)
    assert sum(p.numel() for p in model.parameters()) == trainer.count_parameters(model.config)


def test_train_cli_too_big_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(trainer, "available_memory", lambda device: 64 * 2**30)
    result = CliRunner().invoke(_train(), ["--config", "{}", "-o", str(tmp_path / "run"), "--quiet"])
    line = cli_error_line(result)
    assert "GiB" in line and "64.0 GiB is free" in line and "full-size Qwen-VL" in line


def test_resume_from_a_folder_that_is_not_a_checkpoint(tmp_path):
    result = CliRunner().invoke(
        _train(), ["--resume-from", str(tmp_path), "-o", str(tmp_path / "run"), "--quiet"]
    )
    assert "is not a training checkpoint (no trainer_state.pt" in cli_error_line(result)


def test_eval_model_failure_is_one_line_naming_the_question(monkeypatch):
    def explode(request):
        raise ConnectionError("upstream answered 503: no free slot\nsecond line")

    monkeypatch.setattr(eval_cli, "resolve_backend", lambda spec: ScriptedBackend([explode]))
    result = CliRunner().invoke(
        eval_cli.eval_command, ["--task", "vqa", "--limit", "1", "--n-samples", "4", "--quiet"]
    )
    line = cli_error_line(result)
    assert "the model failed: ConnectionError: upstream answered 503: no free slot" in line
    assert "question heldout-" in line and "(vqa)" in line and "second line" not in result.output


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--grounding-prompt", "Find {object}."], "--grounding-prompt"),
        (["--limit", "0"], "--limit"),
        (["--n-samples", "0"], "--n-samples"),
    ],
)
def test_eval_rejects_bad_options(args, option):
    result = CliRunner().invoke(eval_cli.eval_command, [*args, "--quiet"])
    assert option in cli_error_line(result)


def test_data_generate_rejects_negative_counts(tmp_path):
    from qvl_agent.data.cli import data

    result = CliRunner().invoke(data, ["generate", "--out", str(tmp_path / "d"), "--n", "-3"])
    assert "--n" in cli_error_line(result)
    result = CliRunner().invoke(
        data, ["generate", "--out", str(tmp_path / "d"), "--n", "0", "--n-heldout", "0"]
    )
    assert "nothing to generate" in cli_error_line(result)
    assert not (tmp_path / "d").exists()


def test_report_draws_multi_image_boxes_on_the_picture_the_question_names():
    first, second = Image.new("RGB", (40, 40), "white"), Image.new("RGB", (80, 20), "white")
    header = "Picture 1: <img>a.png</img>\nPicture 2: <img>b.png</img>\n"
    box = "<ref>the red star</ref><box>(100,100),(300,300)</box>"
    items = [
        evaluate.EvalItem(
            "m1#0", "multi-image", header + "Find the red star in Picture 1.", box, [], [first, second]
        ),
        evaluate.EvalItem(
            "m2#0", "multi-image", header + "Find the red star in Picture 2.", box, [], [first, second]
        ),
        evaluate.EvalItem("g#0", "grounding", header + "Find the red star.", box, [], [first, second]),
    ]
    results = [evaluate.ItemResult(i.id, i.task, True, box, box) for i in items]
    sizes = [e["image"].size for e in evaluate.sample_boxes(items, results)]
    assert sizes == [(40, 40), (80, 20), (80, 20)]  # named picture, named picture, else the latest


def test_learning_curve_reads_losses_and_heldout_scores(tmp_path):
    """Training logs may carry held-out answer scores (``q_<task>``); the report plots them beside the loss."""
    import json

    from qvl_agent.training.report import _learning_curve, save_report

    log = tmp_path / "log.jsonl"
    records = [
        {"phase": "vision", "step": 50, "aux_loss": 3.0},
        {"phase": "joint", "step": 100, "loss": 2.0},
        {"phase": "joint", "step": 200, "loss": 1.0, "eval_loss": 1.5},
        {"phase": "joint", "step": 200, "q_grounding": 0.25, "q_tools": 0.5},
        {"final": True, "q_grounding": 0.3},
    ]
    log.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    train, held, scores = _learning_curve(log)
    assert train == [(100, 2.0), (200, 1.0)]
    assert held == [(200, 1.5)]
    assert scores == {"q_grounding": [(200, 0.25)], "q_tools": [(200, 0.5)]}
    png = save_report(tmp_path / "r.png", {"vqa": {"n": 2, "accuracy": 0.5}}, train_log=log)
    assert png.stat().st_size > 5_000
