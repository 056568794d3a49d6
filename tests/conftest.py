"""Shared test fixtures: where the Qwen-VL reference vectors live.

``QVL_TESTDATA`` points at the reference folder (default ``../shared/testdata/qwen_vl`` beside the repo).
When ``QVL_REQUIRE_TESTDATA=1`` (set by ``.ci/run`` whenever that folder exists) a missing folder is a
failure, never a skip.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def testdata_dir() -> Path:
    return Path(os.environ.get("QVL_TESTDATA", REPO_ROOT.parent / "shared" / "testdata" / "qwen_vl")).resolve()


@pytest.fixture(scope="session")
def qwen_vl_testdata() -> Path:
    """The reference-vector folder; skips (or fails, under QVL_REQUIRE_TESTDATA=1) when absent."""
    path = testdata_dir()
    if not (path / "README.md").exists():
        if os.environ.get("QVL_REQUIRE_TESTDATA") == "1":
            pytest.fail(f"reference data required but not found at {path}")
        pytest.skip(f"reference data not found at {path} (set QVL_TESTDATA)")
    return path
