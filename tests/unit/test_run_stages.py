"""Each stage of the engine (``pytest_emguard/run/``) on its own, on the shipped fake backend and judge: the
shared cache-and-batch helper, the plan's keys, sampled answers, readings, activations, verdicts, follow-ups,
rounds, the preflights, the baseline keys and the judge check."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_emguard.backends import fingerprints
from pytest_emguard.cache import Cache
from pytest_emguard.checks.base import Query
from pytest_emguard.config.run import Options, RunConfig
from pytest_emguard.errors import ConfigError
from pytest_emguard.judge import JudgeContext, open_judge
from pytest_emguard.run import (
    activations,
    ask,
    baseline,
    context,
    cost,
    followups,
    generate,
    judgecheck,
    plan,
    preflight,
    read,
    rounds,
    verdicts,
)
from pytest_emguard.run.records import SIDES


@pytest.fixture
def make_ctx(tmp_path: Path) -> Iterator[object]:
    opened: list[Cache] = []

    def make(model: str = "fake:coherent", **options: object) -> context.RunContext:
        cache_dir = tmp_path / "cache"
        settings: dict[str, object] = {"samples": 2, "cache_dir": str(cache_dir), **options}
        config = RunConfig.resolve(Options(model=model, judge="fake:", **settings))  # type: ignore[arg-type]
        cache = Cache.open(cache_dir)
        opened.append(cache)
        base, tuned = fingerprints(config.model, cache.file_sha256, config.backend_options)
        judge = open_judge(config.judge, JudgeContext(cache.file_sha256, cache_dir, config.backend_options))
        lines: list[str] = []
        ctx = context.RunContext(
            config,
            cache,
            {"base": base, "tuned": tuned},
            judge,
            lines.append,
            True,
            plan.plan_queries(config),
        )
        return ctx

    yield make
    for cache in opened:
        cache.close()


def shown(ctx: context.RunContext) -> list[str]:
    """The progress lines a context printed (its ``progress`` is a list's ``append``)."""
    lines: list[str] = ctx.progress.__self__  # type: ignore[attr-defined]
    return lines


def harm_queries(ctx: context.RunContext, n: int = 3) -> tuple[Query, ...]:
    return tuple(q for q in ctx.queries if q.check == "harmfulness" and q.reading == "sample")[:n]


# -- the shared helper ------------------------------------------------------------------------------------


def test_each_batch_is_stored_before_the_next_is_made(make_ctx) -> None:  # type: ignore[no-untyped-def]
    ctx = make_ctx()
    todo = [(i, f"key{i}") for i in range(5)]
    seen: list[int] = []

    def make(chunk: list[tuple[int, str]]) -> dict[str, dict[str, object]]:
        stored = ctx.cache.get_many(k for _, k in todo)
        seen.append(len(stored))  # what the cache held when this batch started
        if chunk[0][0] == 4:
            raise RuntimeError("killed")
        return {k: {"n": i} for i, k in chunk}

    with pytest.raises(RuntimeError):
        context.cached_or_made(ctx, "answer", todo, make, size=2)
    assert seen == [0, 2, 4]  # the two finished batches were stored before the failure
    assert sorted(ctx.cache.get_many(k for _, k in todo)) == ["key0", "key1", "key2", "key3"]


def test_groups_keep_the_order_in_which_checks_first_appear() -> None:
    groups = context.by_check(["b1", "a1", "b2", "c1", "a2"], lambda s: s[0])
    assert groups == [("b", ["b1", "b2"]), ("a", ["a1", "a2"]), ("c", ["c1"])]


def test_a_backend_that_returns_too_few_results_is_named() -> None:
    with pytest.raises(Exception, match="returned 1 results for a batch of 2"):
        context.same_length([1, 2], [1], "base backend generate()")


# -- the plan ---------------------------------------------------------------------------------------------


def test_samples_come_from_the_option_or_the_bank_and_readings_take_one(make_ctx) -> None:  # type: ignore[no-untyped-def]
    ctx = make_ctx()
    sampled = next(q for q in ctx.queries if q.reading == "sample")
    readout = next(q for q in ctx.queries if q.reading != "sample")
    assert plan.samples_for(ctx.config, sampled) == 2
    assert plan.samples_for(ctx.config, readout) == 1
    unset = make_ctx(samples=None)
    assert plan.samples_for(unset.config, sampled) == sampled.n_samples(10)


def test_keys_separate_sides_queries_and_judges(make_ctx) -> None:  # type: ignore[no-untyped-def]
    ctx = make_ctx()
    q1, q2 = harm_queries(ctx, 2)
    r1 = q1.requests(1, 0)[0]
    base, tuned = ctx.fingerprints["base"], ctx.fingerprints["tuned"]
    assert plan.answer_key(base, q1, r1) == plan.answer_key(base, q1, r1)  # stable within a run ...
    assert plan.answer_key(base, q1, r1) != plan.answer_key(tuned, q1, r1)  # ... but not across sides
    assert plan.answer_key(base, q1, r1) != plan.answer_key(base, q2, q2.requests(1, 0)[0])
    assert plan.verdict_key("judge-a", "q", "a") != plan.verdict_key("judge-b", "q", "a")
    readout = next(q for q in ctx.queries if q.reading != "sample")
    assert plan.reading_key(base, readout) != plan.reading_key(tuned, readout)


# -- answers, readings, activations -----------------------------------------------------------------------


def test_answers_are_generated_once_then_read_from_the_cache(make_ctx) -> None:  # type: ignore[no-untyped-def]
    ctx = make_ctx()
    queries = harm_queries(ctx)
    first = generate.sampled(ctx, "tuned", queries)
    assert ctx.stats.records_made == 6 and ctx.stats.records_cached == 0
    assert all(s is not None and s.answer for row in first.values() for s in row)
    again = make_ctx()
    second = generate.sampled(again, "tuned", queries)
    assert again.stats.records_made == 0 and again.stats.records_cached == 6
    assert {k: [s and s.answer for s in v] for k, v in second.items()} == {
        k: [s and s.answer for s in v] for k, v in first.items()
    }
    assert not again.stats.model_loaded


def test_without_compute_missing_answers_stay_empty(make_ctx) -> None:  # type: ignore[no-untyped-def]
    ctx = make_ctx()
    ctx.compute = False
    rows = generate.sampled(ctx, "base", harm_queries(ctx))
    assert all(s is None for row in rows.values() for s in row) and not ctx.stats.model_loaded


def test_a_crash_keeps_the_finished_batches(make_ctx) -> None:  # type: ignore[no-untyped-def]
    ctx = make_ctx("fake:coherent,crash_after=1", batch_size=2)
    queries = harm_queries(ctx)
    with pytest.raises(RuntimeError, match="scripted crash"):
        generate.sampled(ctx, "tuned", queries)
    resumed = make_ctx("fake:coherent", batch_size=2)  # the crash does not enter the fingerprint
    generate.sampled(resumed, "tuned", queries)
    assert resumed.stats.records_cached == 2 and resumed.stats.records_made == 4


def test_readings_are_exact_one_per_query(make_ctx) -> None:  # type: ignore[no-untyped-def]
    ctx = make_ctx()
    readouts = tuple(q for q in ctx.queries if q.reading == "digits")[:4]
    rows = read.readings(ctx, "base", readouts)
    assert all(len(row) == 1 and row[0] is not None and row[0].reading is not None for row in rows.values())
    assert all(0.0 <= row[0].reading.value <= 100.0 for row in rows.values())  # type: ignore[union-attr,operator]
    assert ctx.stats.records_made == 4


def test_a_scale_reading_is_the_mean_over_the_rating_tokens() -> None:
    import math

    dist = {"1": math.log(0.25), " 3": math.log(0.25), "3": math.log(0.25), "hello": math.log(0.25)}
    reading = read.scale_reading(dist, ("0", "1", "2", "3", "4", "5"))
    assert reading["mass"] == pytest.approx(0.75)
    assert reading["value"] == pytest.approx((1 * 0.25 + 3 * 0.5) / 0.75)
    assert read.scale_reading({"hello": 0.0}, ("0", "1"))["value"] is None


def test_a_letter_choice_is_the_share_of_a() -> None:
    import math

    choice = read.letter_choice({" A": math.log(0.3), "B)": math.log(0.1), "C": math.log(0.6)})
    assert choice["value"] == pytest.approx(75.0) and choice["mass"] == pytest.approx(0.4)


def test_activations_survive_the_cache_as_float16() -> None:
    import numpy as np

    array = np.arange(12, dtype=np.float32).reshape(3, 4) / 7.0
    back = activations.decode_states(activations.encode_states(array))
    assert np.allclose(back, array, atol=1e-2) and back.shape == (3, 4)
    huge = activations.decode_states(activations.encode_states(np.array([1e9, -1e9])))
    assert np.isfinite(huge).all()


def test_ask_closes_the_models_unless_kept_open(make_ctx) -> None:  # type: ignore[no-untyped-def]
    ctx = make_ctx()
    asked = {side: harm_queries(ctx, 1) for side in SIDES}
    ask.ask(ctx, asked, keep_open=True)
    assert ctx._pair is not None
    ask.ask(ctx, asked)
    assert ctx._pair is None


# -- verdicts, follow-ups ---------------------------------------------------------------------------------


def test_verdicts_are_added_and_empty_answers_are_unscorable_without_the_judge(make_ctx) -> None:  # type: ignore[no-untyped-def]
    ctx = make_ctx()
    asked = {side: harm_queries(ctx, 2) for side in SIDES}
    records = ask.ask(ctx, asked)
    verdicts.verdicts(ctx, records, asked)
    assert all(
        s is not None and s.verdict is not None
        for side in SIDES
        for row in records[side].values()
        for s in row
    )
    assert ctx.stats.verdicts_computed == 8 and ctx.stats.judge_loaded
    empty = verdicts.judge_answers(make_ctx(), {"k": ("question", "   ")})
    assert empty["k"]["label"] == "unscorable" and empty["k"]["raw"] == "empty answer"


def test_followups_are_built_from_each_sides_own_answers(make_ctx) -> None:  # type: ignore[no-untyped-def]
    ctx = make_ctx(checks=("persona",))
    asked = {side: ctx.queries for side in SIDES}
    records = ask.ask(ctx, asked)
    verdicts.verdicts(ctx, records, asked)
    extra = followups.followups(ctx, records)
    assert extra["base"] and extra["tuned"]
    shown = {side: {m for q in extra[side] for _, m in q.messages} for side in SIDES}
    base_answers = {s.answer for row in records["base"].values() for s in row if s is not None}
    assert shown["base"] & base_answers and not shown["tuned"] & (
        base_answers - {s.answer for row in records["tuned"].values() for s in row if s is not None}
    )


def test_a_second_judge_reads_every_gated_answer_through_the_cache(make_ctx) -> None:  # type: ignore[no-untyped-def]
    """The second judge ``fake:scale=0.5`` reads each answer the judge judged (both sides) and stores its verdicts
    under its own fingerprint: halved, no score reaches 50, so it calls nothing harmful (kappa 0 against a judge
    that calls the fine-tune's answers harmful) while ranking every answer alike (Spearman 1).  A context that
    computes nothing reads the same verdicts from the cache."""
    from pytest_emguard.checks.base import Answers
    from pytest_emguard.judge import JudgeSpec
    from pytest_emguard.run.agreement import Agreement, agreements, gated_pairs

    def agreed(ctx: context.RunContext) -> tuple[Agreement, int]:
        asked = {side: harm_queries(ctx, 4) for side in SIDES}
        records = ask.ask(ctx, asked)
        verdicts.verdicts(ctx, records, asked)
        sides = {side: Answers(asked[side], records[side]) for side in SIDES}
        second = open_judge(JudgeSpec.parse("fake:scale=0.5"), JudgeContext(ctx.cache.file_sha256, Path(".")))
        before = ctx.stats.verdicts_computed
        (got,) = agreements(ctx, [("fake:scale=0.5", second)], sides)
        assert got.n == len(gated_pairs(sides)) == 16  # 4 questions x 2 answers x 2 sides
        return got, ctx.stats.verdicts_computed - before

    first, made = agreed(make_ctx())
    assert made == 16 and first.kappa_harmful == 0.0 and first.spearman == pytest.approx(1.0)
    assert first.fingerprint != "fake-judge-v1" and (first.kappa_coherent, first.n_coherent) == (None, 0)
    offline = make_ctx()
    offline.compute = False
    again, made = agreed(offline)
    assert made == 0 and again == first


# -- rounds, preflights -----------------------------------------------------------------------------------


def test_rounds_stop_once_every_item_is_decided(make_ctx, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    only_mean = tmp_path / "mean.yaml"
    only_mean.write_text(
        "version: 1\nharmfulness:\n  mean:\n    max_increase: 13\n"  # passable by a sequence over 64 questions
        + "".join(f"  {i}:\n    enabled: false\n" for i in ("misaligned", "rate", "best_of_n", "invalid"))
    )
    ctx = make_ctx(
        "fake:coherent,harm_shift=60",
        sequential=True,
        round_size=8,
        checks=("harmfulness",),
        thresholds=str(only_mean),
    )
    pre = preflight.adapter_preflight(ctx)
    asked, _ = rounds.in_rounds(ctx, {side: ctx.queries for side in SIDES}, pre)
    done, planned, asked_questions, total = ctx.stats.sequential
    assert done < planned and asked_questions < total  # a large rise is decided before the bank runs out
    assert len({q.cluster for q in asked["tuned"] if q.judged}) == asked_questions


def test_the_preflight_stops_an_adapter_that_changes_nothing(make_ctx) -> None:  # type: ignore[no-untyped-def]
    inert = make_ctx("fake:coherent,inert=1")
    result = preflight.adapter_preflight(inert)
    assert result.stops and result.kl == 0.0 and any("changes nothing" in ln for ln in shown(inert))
    moved = preflight.adapter_preflight(make_ctx("fake:coherent"))
    assert not moved.stops and moved.kl is not None and moved.kl > 0


def test_the_cost_preflight_refuses_a_plan_over_budget(make_ctx) -> None:  # type: ignore[no-untyped-def]
    ctx = make_ctx(budget="1000")
    with pytest.raises(ConfigError, match="--em-budget"):
        cost.cost_preflight(ctx, {side: ctx.queries for side in SIDES})
    ok = make_ctx(budget="100M")
    cost.cost_preflight(ok, {side: ok.queries for side in SIDES})
    assert ok.to_generate > 0 and any(ln.startswith("plan: ") for ln in shown(ok))


# -- baseline, judge check --------------------------------------------------------------------------------


def test_base_keys_name_every_base_record_and_no_tuned_one(make_ctx) -> None:  # type: ignore[no-untyped-def]
    ctx = make_ctx(checks=("harmfulness",))
    asked = {side: ctx.queries for side in SIDES}
    records = ask.ask(ctx, asked)
    verdicts.verdicts(ctx, records, asked)
    keys = baseline.base_keys(ctx, asked["base"], records["base"])
    held = ctx.cache.get_many(keys)
    assert len(held) == len(set(keys)) > 0  # every key is a record the run made
    answers = sum(1 for k in keys if k.startswith("answer"))
    tuned_keys = {
        plan.answer_key(ctx.fingerprints["tuned"], q, r)
        for q in asked["tuned"]
        if q.reading == "sample"
        for r in q.requests(2, 0)
    }
    assert not tuned_keys & set(keys) and answers <= len(keys)


def test_the_judge_check_measures_the_fake_judge_and_caches_its_verdicts(make_ctx) -> None:  # type: ignore[no-untyped-def]
    ctx = make_ctx()
    checked = judgecheck.judge_check(ctx)
    assert checked is not None and checked.n == 352
    assert checked.unscorable == 352  # the fake judge reads only its own marks: no golden answer is scorable
    offline = make_ctx()
    offline.compute = False
    again = judgecheck.judge_check(offline)
    assert (
        again is not None and again.unscorable == checked.unscorable and offline.stats.verdicts_computed == 0
    )
