"""Shared test fixtures: where the Qwen-VL reference vectors live, and the devices a test runs on.

``QVL_TESTDATA`` points at the reference folder (default ``../shared/testdata/qwen_vl`` beside the repo).
When ``QVL_REQUIRE_TESTDATA=1`` (set by ``.ci/run`` whenever that folder exists) a missing folder is a
failure, never a skip.

Tests that take the ``device`` fixture run on the CPU, and on a CUDA GPU under ``pytest -m gpu`` (the default
run deselects the ``gpu`` marker; ``scripts/test-gpu.sh`` is the GPU job).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from qvl_agent import plugins

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def device(request: pytest.FixtureRequest):
    """``cpu``, then ``cuda`` (``gpu`` marker). On the GPU, TF32 is off: fp32 parity must hold to 1e-4."""
    import torch

    if request.param == "cuda":
        if not torch.cuda.is_available():
            pytest.fail("-m gpu was asked for, but torch sees no CUDA GPU")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    return torch.device(request.param)


@pytest.fixture
def plugin_manager() -> Iterator[plugins.PluginManager]:
    """The process-wide plugin manager replaced, for one test, by one holding only the built-in plugins (no
    entry points); add per-test plugins with ``plugin_manager.register(obj, name=...)``."""
    pm = plugins.create_plugin_manager(load_entry_points=False)
    previous = plugins.set_plugin_manager(pm)
    try:
        yield pm
    finally:
        plugins.set_plugin_manager(previous)


def testdata_dir() -> Path:
    return Path(
        os.environ.get("QVL_TESTDATA", REPO_ROOT.parent / "shared" / "testdata" / "qwen_vl")
    ).resolve()


@pytest.fixture(scope="session")
def qwen_vl_testdata() -> Path:
    """The reference-vector folder; skips (or fails, under QVL_REQUIRE_TESTDATA=1) when absent."""
    path = testdata_dir()
    if not (path / "README.md").exists():
        if os.environ.get("QVL_REQUIRE_TESTDATA") == "1":
            pytest.fail(f"reference data required but not found at {path}")
        pytest.skip(f"reference data not found at {path} (set QVL_TESTDATA)")
    return path


# --- reference-data guard: under QVL_REQUIRE_TESTDATA=1 the run fails unless testdata tests really ran ---
_testdata_outcomes: dict[str, int] = {"passed": 0, "skipped": 0, "failed": 0}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "testdata" not in report.keywords:
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        _testdata_outcomes[report.outcome] = _testdata_outcomes.get(report.outcome, 0) + 1


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("QVL_REQUIRE_TESTDATA") != "1":
        return
    ran, skipped = _testdata_outcomes["passed"] + _testdata_outcomes["failed"], _testdata_outcomes["skipped"]
    if ran == 0 or skipped:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                f"ERROR: reference data is present but its tests did not all run "
                f"(ran {ran}, skipped {skipped})",
                red=True,
            )


# --- the tiny reference checkpoint as a ready-to-load folder (shared by the model tests) ---
@pytest.fixture(scope="session")
def tiny_checkpoint(qwen_vl_testdata: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temp folder with the decompressed tiny ``model.safetensors``, its ``config.json`` /
    ``generation_config.json``, ``qwen.tiktoken`` and the ``images/`` folder (prompts use ``images/img_a.png``)."""
    import gzip
    import shutil

    tiny = qwen_vl_testdata / "tiny"
    folder = tmp_path_factory.mktemp("tiny_checkpoint")
    (folder / "model.safetensors").write_bytes(gzip.decompress((tiny / "model.safetensors.gz").read_bytes()))
    for name in ("config.json", "generation_config.json"):
        shutil.copyfile(tiny / name, folder / name)
    shutil.copyfile(qwen_vl_testdata / "qwen.tiktoken", folder / "qwen.tiktoken")
    shutil.copytree(tiny / "images", folder / "images")
    for path in [folder / "images", *(folder / "images").iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)  # the reference folder is read-only
    return folder
