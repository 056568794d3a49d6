"""``recipes/demo/train.py`` end to end on a tiny model: both phases, every attention target, stop and resume."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from qvl_agent.model.loading import load_model

TRAIN = Path(__file__).resolve().parents[2] / "recipes" / "demo" / "train.py"

TINY = {
    "seed": 0,
    "log_every": 1,
    "save_every": 100,
    "model_config": {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "kv_channels": 8,
        "intermediate_size": 64,
        "seq_length": 2048,
        "visual": {
            "image_size": 64,
            "patch_size": 8,
            "width": 16,
            "layers": 1,
            "heads": 2,
            "mlp_ratio": 2.0,
            "output_dim": 32,
            "n_queries": 64,
            "resampler_heads": 1,
        },
    },
    "spatial_init": {"alpha": 3.0, "pos_scale": 0.5},
    "vision": {"steps": 2, "batch_size": 2, "lr": 1e-3, "warmup": 1},
    "joint": {
        "steps": 3,
        "batch_size": 2,
        "lr": 1e-3,
        "visual_lr_scale": 0.1,
        "warmup": 1,
        "eval_every": 1000,
        "eval_per_task": 1,
        "mix": {"kinds": {"multi": 1.0}, "min_turns": 2, "max_turns": 3},
        "attention": {
            "layers": [1],
            "head": 0,
            "weight": 0.5,
            "question": {"layers": [0], "head": 1, "weight": 0.5},
            "picture": {"layers": [0], "head": 2, "weight": 0.25},
            "count": {"layers": [1], "head": 0, "weight": 0.5, "uniform": True},
        },
    },
    "tie_words": ["colour", "shape", "word"],
    "similarity_init_layers": 1,
}


def train(config: Path, out: Path, *extra: str) -> str:
    done = subprocess.run(
        [sys.executable, str(TRAIN), str(config), "--out", str(out), "--threads", "1", *extra],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_a_run_stopped_by_max_minutes_resumes_where_it_stopped_and_finishes(tmp_path: Path) -> None:
    config, out = tmp_path / "tiny.json", tmp_path / "run"
    config.write_text(json.dumps(TINY))

    stdout = train(config, out, "--max-minutes", "0.0001")  # out of time after the first step
    assert "continue with --resume" in stdout
    assert (out / "checkpoint" / "state.pt").is_file() and not (out / "final").exists()
    first = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert first[-1] == {"phase": "vision", "step": 1, "stopped": "max_minutes"}

    stdout = train(config, out, "--resume")
    assert "resuming at phase vision step 1" in stdout
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    # one log, no step twice: step 1 from the first run, the rest after resuming
    assert [r["step"] for r in records if r.get("phase") == "vision" and "aux_loss" in r] == [1, 2]
    joint = [r for r in records if r.get("phase") == "joint" and "loss" in r]
    assert [r["step"] for r in joint] == [3, 4, 5]
    # every supervised attention contributed a loss, and the final model loads and answers
    assert all({"attn_mass", "question_mass", "picture_mass"} <= set(r) for r in joint)
    assert any("count_mass" in r for r in joint)  # a step has a counting turn or not, by chance
    assert any("word_tied" in r for r in records)  # written words scored against their tokens
    assert records[-1]["final"] is True
    model, tokenizer = load_model(out / "final")
    assert model.config.num_hidden_layers == 2 and tokenizer("Picture 1:")["input_ids"]


def test_a_bfloat16_autocast_run_ties_plural_shape_words_and_saves_a_float32_model(tmp_path: Path) -> None:
    config, out = tmp_path / "bf16.json", tmp_path / "run"
    config.write_text(
        json.dumps({**TINY, "autocast": "bfloat16", "tie_words": ["colour", "shape", "plural"]})
    )

    train(config, out)
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps = [r for r in records if "aux_loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5]
    assert all(math.isfinite(r["aux_loss"]) for r in steps)
    assert all(math.isfinite(r["loss"]) for r in steps if r["phase"] == "joint")
    # shapes scored against their plural words too (" squares", ...): a second tied read-out
    assert all("shape_tied2" in r for r in steps) and not any("word_tied" in r for r in steps)
    (weights,) = (out / "final").glob("*.safetensors")
    assert {t.dtype for t in load_file(weights).values()} == {torch.float32}
    model, _ = load_model(out / "final")
    assert model.config.num_hidden_layers == 2


def test_a_resume_state_shrunk_for_the_gpu_machine_still_resumes(tmp_path: Path) -> None:
    """``carry_state.py``: same weights, Adam moments in bfloat16 (a smaller file), and a run resumes from it."""
    config, out = tmp_path / "tiny.json", tmp_path / "run"
    config.write_text(json.dumps(TINY))
    train(config, out, "--max-minutes", "0.0001")
    state = out / "checkpoint" / "state.pt"
    small = tmp_path / "small.pt"
    done = subprocess.run(
        [sys.executable, str(TRAIN.parent / "carry_state.py"), str(state), str(small)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    before, after = (torch.load(p, weights_only=False) for p in (state, small))
    assert small.stat().st_size < state.stat().st_size
    assert all(torch.equal(before["model"][k], v) for k, v in after["model"].items())
    moments = [
        v for s in after["optimizer"]["state"].values() for k, v in s.items() if k.startswith("exp_avg")
    ]
    assert moments and {m.dtype for m in moments} == {torch.bfloat16}

    small.replace(state)
    stdout = train(config, out, "--resume")
    assert "resuming at phase vision step 1" in stdout
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["loss"]) for r in records if r.get("phase") == "joint" and "loss" in r)
    assert records[-1]["final"] is True


def test_a_16px_patch_run_gives_the_patch_embedding_its_own_smaller_start_and_learning_rate(
    tmp_path: Path,
) -> None:
    """``spatial_init.patch_std`` redraws ``conv1`` smaller; ``patch_lr_scale`` gives it a group of its own."""
    visual = {**TINY["model_config"]["visual"], "image_size": 128, "patch_size": 16}
    config, out = tmp_path / "patch16.json", tmp_path / "run"
    config.write_text(
        json.dumps(
            {
                **TINY,
                "model_config": {**TINY["model_config"], "visual": visual},
                "spatial_init": {**TINY["spatial_init"], "patch_std": 0.001},
                "patch_lr_scale": 0.25,
            }
        )
    )
    train(config, out, "--max-minutes", "0.0001")
    saved = torch.load(out / "checkpoint" / "state.pt", weights_only=False)
    vision, patch = saved["optimizer"]["param_groups"]
    assert len(patch["params"]) == 1 and patch["lr"] == vision["lr"] * 0.25
    conv = saved["model"]["transformer.visual.conv1.weight"]
    assert conv.shape[-1] == 16
    # one Adam step of about lr * 0.25 (warmup: 5e-4 * 0.25) on weights drawn with std 0.001
    assert conv.std() < 0.003

    stdout = train(config, out, "--resume")  # the two groups load back
    assert "resuming at phase vision step 1" in stdout
    assert json.loads((out / "log.jsonl").read_text().splitlines()[-1])["final"] is True


def test_lineage_sh_keeps_a_stopped_run_in_git_and_a_new_checkout_finishes_the_lineage(
    tmp_path: Path,
) -> None:
    """``lineage.sh``: a run stopped by the time limit is committed as its resume state; in a checkout without
    ``runs/`` the next call resumes it, commits its final, and trains the continuation from it."""
    demo = tmp_path / "recipes" / "demo"
    (demo / "configs").mkdir(parents=True)
    (demo / "resume").mkdir()
    (demo / "results").mkdir()
    for script in ("train.py", "lineage.sh"):
        (demo / script).symlink_to(TRAIN.parent / script)
    (demo / "configs" / "a.json").write_text(json.dumps(TINY))
    # absolute: train.py resolves a relative init against its own checkout, which the symlink leaves
    continuation = {
        **TINY,
        "init": str(demo / "runs" / "a" / "final"),
        "vision": {"steps": 0, "batch_size": 2, "lr": 1e-3},
    }
    continuation["joint"] = {**TINY["joint"], "steps": 2}
    (demo / "configs" / "b.json").write_text(json.dumps(continuation))
    (tmp_path / ".gitignore").write_text("recipes/demo/runs/\n")

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=tmp_path, capture_output=True, text=True, check=True)
        return done.stdout

    git("init", "-q")
    git("-c", "user.name=t", "-c", "user.email=t@t", "add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start")

    def lineage(minutes: str, train_args: str = "") -> str:
        done = subprocess.run(
            ["bash", str(demo / "lineage.sh"), minutes, "a", "b"],
            capture_output=True,
            text=True,
            timeout=600,
            env={
                **os.environ,
                "GIT_AUTHOR_NAME": "t",
                "GIT_AUTHOR_EMAIL": "t@t",
                "GIT_COMMITTER_NAME": "t",
                "GIT_COMMITTER_EMAIL": "t@t",
                "TRAIN_ARGS": train_args,
            },
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    # stopped after 3 of its 5 steps (a step count, not a time: a fast machine finishes in 0.3 s)
    assert "a: stopped, resume state kept" in lineage("10", "--max-steps 3")
    assert git("ls-files", "recipes/demo/resume").split() == ["recipes/demo/resume/a.pt"]
    assert "recipes/demo/results/a.log.jsonl" in git("ls-files")
    shutil.rmtree(demo / "runs")  # a new checkout

    lineage("10")
    tracked = git("ls-files", "recipes/demo/resume").split()
    assert "recipes/demo/resume/a.pt" not in tracked  # done with: out of the tree
    assert {
        "recipes/demo/resume/a_final/model.safetensors",
        "recipes/demo/resume/b_final/model.safetensors",
    } <= set(tracked)
    assert git("status", "--porcelain") == ""
    assert "resuming at phase" in (demo / "runs" / "a.out").read_text()
    records = [json.loads(line) for line in (demo / "results" / "a.log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if "aux_loss" in r]
    assert steps == sorted(set(steps)) == [1, 2, 3, 4, 5]  # every step once, across the two segments
    assert records[-1]["final"] is True
    assert json.loads((demo / "runs" / "b" / "config.json").read_text())["init"] == continuation["init"]

    shutil.rmtree(demo / "runs")
    commits = git("rev-list", "--count", "HEAD")
    out = lineage("10")
    assert "a: done (from resume/)" in out and "b: done (from resume/)" in out
    assert git("rev-list", "--count", "HEAD") == commits
