"""``bench/decisions.py`` runs through the real gate (roles, Holm) and reads a large rise as a rise: a few seeded
simulations (the bench itself runs 100 a cell)."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "decisions.py"


def test_the_bench_prints_its_table_and_fails_a_twenty_point_rise(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = importlib.util.spec_from_file_location("bench_decisions", BENCH)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, bench)  # its dataclasses look their module up there
    spec.loader.exec_module(bench)
    assert bench.main(["--sims", "4", "--questions", "24", "--samples", "3", "--jobs", "1"]) == 0
    rows = [
        ln
        for ln in capsys.readouterr().out.splitlines()
        if re.match(r"^(noisy-small|low-harm-7B) +\w+ +\w+ +[+-]\d", ln)
    ]
    assert len(rows) >= 2 * 2 * len(bench.RISES)  # regimes x profiles x rises, at one or two budgets
    for row in rows:
        cells = row.split()
        rise, primary, gate, real = float(cells[3]), cells[4], cells[9], float(cells[10])
        assert abs(real - rise) < 8.0  # the draws put the asked rise into the misaligned share
        if rise == 20.0:
            assert primary == gate == "0%", row  # a 20-point rise never passes a 5- or 3-point margin
