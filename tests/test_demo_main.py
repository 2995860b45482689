"""The demo's launcher: work in a child interpreter (its memory returned before the gate), and the precision."""

from __future__ import annotations

import os

from pytest_emguard.demo.__main__ import _in_child, fast_dtype


def test_work_runs_in_a_child_process_and_its_result_comes_back() -> None:
    child = _in_child("import os\nresult = os.getpid()")
    assert child.isdigit() and int(child) != os.getpid()


def test_the_demo_precision_is_one_the_gate_accepts() -> None:
    assert fast_dtype() in ("auto", "bfloat16")
