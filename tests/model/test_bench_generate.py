"""Smoke test of ``benchmarks/bench_generate.py`` (not a timing test): it runs and prints its table."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_generate.py"


def test_bench_generate_prints_every_length_and_dtype(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    argv = [
        str(BENCH),
        "--lengths",
        "4",
        "8",
        "--new-tokens",
        "2",
        "--repeats",
        "1",
        "--threads",
        "0",
    ]  # 0: leave torch threads alone
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(BENCH), run_name="__main__")
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines if line.split()[:1] in (["4"], ["8"])]
    assert [row[:2] for row in rows] == [["4", "fp32"], ["4", "bf16"], ["8", "fp32"], ["8", "bf16"]]
    for row in rows:
        numbers = [float(value) for value in row[2:]]
        assert all(value > 0 for value in numbers)
        assert len(numbers) == (4 if row[1] == "fp32" else 6)  # bf16 rows add the bf16/fp32 ratios
