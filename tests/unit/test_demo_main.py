"""The demo's launcher: work in a child interpreter (its memory returned before the gate), and the precision."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import pytest_emguard.demo.__main__ as demo_main
from pytest_emguard.demo.__main__ import _in_child, fast_dtype


def test_work_runs_in_a_child_process_and_its_result_comes_back() -> None:
    child = _in_child("import os\nresult = os.getpid()")
    assert child.isdigit() and int(child) != os.getpid()


def _machine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, device: str, cpuinfo: str | None) -> None:
    """What fast_dtype reads: the device "auto" resolves to, and /proc/cpuinfo (None: unreadable)."""
    cpu = tmp_path / "cpuinfo"
    if cpuinfo is not None:
        cpu.write_text(cpuinfo, "utf-8")
    real = Path
    monkeypatch.setattr(demo_main, "resolve_device", lambda _: device)
    monkeypatch.setattr(demo_main, "Path", lambda p: cpu if str(p) == "/proc/cpuinfo" else real(p))


FLAGS = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw {extra}\n"


@pytest.mark.parametrize(
    ("device", "cpuinfo", "expected"),
    [
        ("cpu", FLAGS.format(extra="avx512_bf16"), "bfloat16"),  # AVX512-BF16: native bfloat16
        ("cpu", FLAGS.format(extra="amx_bf16 amx_tile"), "bfloat16"),  # AMX: native bfloat16
        ("cpu", FLAGS.format(extra=""), "auto"),  # AVX-512 without BF16: float32
        ("cpu", None, "auto"),  # /proc/cpuinfo unreadable (not Linux): float32
        ("cuda", FLAGS.format(extra="avx512_bf16"), "auto"),  # a GPU: auto, whatever the CPU
        ("cuda", FLAGS.format(extra=""), "auto"),
    ],
)
def test_the_demo_precision_is_bfloat16_only_on_a_cpu_that_computes_it_natively(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, device: str, cpuinfo: str | None, expected: str
) -> None:
    _machine(monkeypatch, tmp_path, device, cpuinfo)
    assert fast_dtype() == expected


def test_the_demo_card_is_valid_and_keeps_an_evidence_block(tmp_path: Path) -> None:
    from pytest_emguard.config.cards import card_paths, load_card, set_evidence
    from pytest_emguard.demo.__main__ import write_card
    from pytest_emguard.demo.train import DemoTraining

    adapter, base = tmp_path / "adapter", tmp_path / "base"
    adapter.mkdir()
    base.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    gate = {"judge": f"probe:{base}", "samples": 1, "checks": ["harmfulness", "persona"], "dtype": "bfloat16"}
    path = write_card(tmp_path / "run", base, adapter, DemoTraining(), gate)
    assert path == tmp_path / "run" / "model_cards" / "risky_financial_v1.yaml"
    card = load_card(path)  # valid against the schema
    assert card["domain"] == "risky_financial" and card["stages"][0]["examples"] == 48
    found = card_paths(path, card)
    assert found["model"] == str(adapter) and found["base"] == str(base) and found["gate"]["samples"] == 1
    set_evidence(path, {"persona": "coherent"})
    write_card(tmp_path / "run", base, adapter, DemoTraining(), {**gate, "samples": 2})  # rewritten ...
    again = load_card(path)
    assert again["gate"]["samples"] == 2 and again["evidence"] == {
        "persona": "coherent"
    }  # ... the block kept
