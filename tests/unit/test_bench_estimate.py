"""``bench/estimate.py`` does its arithmetic right on fixed counts (no model, no published figure needed): prefill
and decode add up, twice the answers take twice the decode, follow-ups grow with questions only, several fine-tunes
share the base, a digit tree costs up to 11 requests over an API; and it counts a plan with the fake backend."""

from __future__ import annotations

import importlib.util
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "estimate.py"


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("bench_estimate", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def work(bench: ModuleType) -> dict[tuple[str, str], Any]:
    part = bench.Part
    answers = part(answers=64, answer_tokens=3_200, new_tokens=8_192, verdicts=64, judge_tokens=30_000)
    bank = part(readings=1_000, reading_tokens=100_000, digit_readings=100, digit_tokens=8_000)
    follow = part(readings=200, reading_tokens=40_000, digit_readings=150, digit_tokens=30_000)
    paired = part(readings=50, reading_tokens=10_000)
    return {
        ("shared", "answers"): answers,
        ("shared", "bank"): bank,
        ("shared", "follow-ups"): follow,
        ("per model", "answers"): answers,
        ("per model", "bank"): bank,
        ("per model", "follow-ups"): follow + paired,
    }


def gpus(bench: ModuleType, step_s: float = 0.0) -> Any:
    return bench.Gpus("7B", 1, prefill=1_000.0, decode=100.0, step_s=step_s, source="test")


def test_prefill_and_decode_add_up(bench: ModuleType) -> None:
    p = bench.total(work(bench))
    assert (p.answers, p.new_tokens, p.readings, p.verdicts) == (128, 16_384, 2_450, 128)
    cost = bench.on_gpus(p, gpus(bench), gpu_hour=2.0)
    prefill = (6_400 + 290_000) / 1_000
    assert cost.wall_s == pytest.approx(prefill + 16_384 / 100)
    assert cost.gpu_hours == pytest.approx(cost.wall_s / 3600)
    assert cost.usd == pytest.approx(cost.gpu_hours * 2.0)


def test_at_a_small_batch_decode_is_bounded_by_the_steps(bench: ModuleType) -> None:
    p = bench.total(work(bench))
    slow = bench.on_gpus(p, gpus(bench, step_s=0.5), batch=16)
    steps = math.ceil(128 / 16) * 128  # batches x new tokens an answer
    assert slow.wall_s == pytest.approx(296.4 + steps * 0.5)
    fast = bench.on_gpus(p, gpus(bench, step_s=0.5), batch=128)  # 128 steps of 0.5 s: the rate bounds it
    assert fast.wall_s == pytest.approx(296.4 + 16_384 / 100)


@pytest.mark.parametrize("step_s", [0.0, 0.5])
def test_twice_the_answers_take_twice_the_decode(bench: ModuleType, step_s: float) -> None:
    w = work(bench)
    setup = gpus(bench, step_s)

    def decode(part: Any) -> float:
        prefill = (part.answer_tokens + part.reading_tokens) / setup.prefill
        return float(bench.on_gpus(part, setup, batch=16).wall_s - prefill)

    one, two = bench.total(w), bench.total(bench.scaled(w, samples=2.0))
    assert two.new_tokens == 2 * one.new_tokens and two.answers == 2 * one.answers
    assert two.verdicts == 2 * one.verdicts and two.readings == one.readings  # readings take no samples
    assert decode(two) == pytest.approx(2 * decode(one))
    longer = bench.total(bench.scaled(w, new_tokens=2.0))
    assert longer.answers == one.answers and decode(longer) == pytest.approx(2 * decode(one))


def test_follow_ups_grow_with_questions_and_the_banks_do_not(bench: ModuleType) -> None:
    w = work(bench)
    doubled = bench.scaled(w, questions=2.0)
    for key, part in w.items():
        factor = 1 if key[1] == "bank" else 2
        assert doubled[key].readings == factor * part.readings
        assert doubled[key].answers == factor * part.answers
    # without log-probabilities a bank's queries are sampled: they grow with samples, not with questions
    sampled = {("shared", "bank"): bench.Part(answers=100, answer_tokens=1_000, new_tokens=800)}
    assert bench.scaled(sampled, questions=2.0)[("shared", "bank")].answers == 100
    assert bench.scaled(sampled, samples=3.0)[("shared", "bank")] == bench.Part(300, 3_000, 2_400)


def test_fine_tunes_of_one_base_share_its_records(bench: ModuleType) -> None:
    w = work(bench)
    one, three = bench.total(w, 1), bench.total(w, 3)
    per_model = sum((p for (g, _), p in w.items() if g == "per model"), bench.Part())
    assert three == one + per_model + per_model
    setup = gpus(bench)
    extra = bench.on_gpus(three, setup).wall_s - bench.on_gpus(one, setup).wall_s
    assert extra == pytest.approx(2 * bench.on_gpus(per_model, setup).wall_s)


def test_over_an_api_a_digit_tree_costs_one_to_eleven_requests(bench: ModuleType) -> None:
    p = bench.total(work(bench))
    low, high = bench.api_requests(p, 1), bench.api_requests(p, bench.MAX_DIGIT_CALLS)
    digits = 2 * 100 + 2 * 150
    assert low == (128 + 2_450, 6_400 + 290_000, 16_384 + 2_450)
    assert high[0] - low[0] == 10 * digits and high[2] - low[2] == 10 * digits
    assert high[1] - low[1] == 10 * (2 * 8_000 + 2 * 30_000)
    api = bench.Api("7B", "test", price_in=1.0, price_out=2.0, source="test")
    cost = bench.over_api(p, api, concurrency=4)
    assert cost.usd == pytest.approx((low[1] * 1.0 + low[2] * 2.0) / 1e6)
    assert cost.usd_high == pytest.approx((high[1] * 1.0 + high[2] * 2.0) / 1e6)
    assert cost.wall_s == pytest.approx((low[0] * bench.FIRST_TOKEN_S + 16_384 * bench.TOKEN_S) / 4)
    judge = bench.Api("judge", "test", price_in=1.0, price_out=2.0, source="test")
    assert bench.judge_cost(p, judge) == pytest.approx((60_000 + 2 * 128) / 1e6)


def test_it_counts_a_plan_and_prints_every_setup(
    bench: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--plan", "fake:identical", "--judge", "fake:", "--samples", "2", "--max-new-tokens", "16"]
    counted = bench.count_plan(bench.parser().parse_args(args))
    for group in bench.GROUPS:
        assert counted[(group, "answers")].answers == 2 * 64  # 56 emergent and 8 in-domain questions a side
        assert counted[(group, "answers")].new_tokens == 2 * 64 * 16
        assert counted[(group, "answers")].verdicts == 2 * 64
    shared, own = counted[("shared", "follow-ups")], counted[("per model", "follow-ups")]
    assert own.readings > shared.readings  # the base's recognition pairs show the fine-tune's answers
    assert bench.main([]) == 0
    out = capsys.readouterr().out
    for s in bench.GPU_SETUPS:
        assert f"{s.model:6}{'1 x H100' if s.gpus == 1 else f'{s.gpus} x H100, TP={s.gpus}'}" in out
    for a in bench.API_PRICES:
        assert f"API, {a.provider}" in out
    assert "3 fine-tunes, one base" in out


def test_the_benchmarks_page_shows_what_the_script_prints(
    bench: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    page = (BENCH.parents[1] / "docs" / "benchmarks.md").read_text("utf-8")
    section = page[page.index("## Cost on paper") :]
    shown = section[section.index("```\n") + 4 :]
    assert bench.main([]) == 0
    printed = capsys.readouterr().out
    assert shown[: shown.index("```")] == printed, (
        "docs/benchmarks.md: paste python bench/estimate.py's output"
    )
