"""The cost preflight and ``--em-budget`` (pure parts, and runs of the plugin on the fake backend)."""

from __future__ import annotations

import pytest

from pytest_emguard.config.budget import Budget, parse_budget, parse_price
from pytest_emguard.errors import ConfigError
from pytest_emguard.run.cost import Estimate

ONLY_HARM = "--em-checks=harmfulness"


def gate(pytester: pytest.Pytester, scenario: str, *args: str) -> pytest.RunResult:
    cache = f"--em-cache-dir={pytester.path / 'emcache'}"
    return pytester.runpytest(
        "-p", "no:cacheprovider", cache, f"--em-model=fake:{scenario}", "--em-judge=fake:", *args
    )


def test_budget_and_price_syntax() -> None:
    assert parse_budget("200k") == Budget(tokens=200_000)
    assert parse_budget("2M") == Budget(tokens=2_000_000)
    assert parse_budget("150,000") == Budget(tokens=150_000)
    assert parse_budget("$5") == Budget(usd=5.0)
    assert parse_budget(None) == Budget()
    assert parse_price("2.5,10") == (2.5, 10.0)
    for bad in ("lots", "-3", "$0", "k"):
        with pytest.raises(ConfigError, match="is not a budget"):
            parse_budget(bad)
    for bad in ("2.5", "2.5,10,1", "-1,10", "nan,10", "2.5,inf"):
        with pytest.raises(ConfigError, match="is not IN,OUT"):
            parse_price(bad)
    assert parse_price("") is None and parse_price("0,0") == (0.0, 0.0)


def test_the_plan_counts_tokens_and_dollars() -> None:
    plan = Estimate()
    plan.add_answers(10, 4, input_tokens=600, output_tokens=6 * 128)
    plan.add_readings(20, 5, input_tokens=1500)
    assert (plan.input_tokens, plan.output_tokens, plan.tokens) == (2100, 768 + 15, 2883)
    assert plan.cost((2.5, 10.0)) == pytest.approx((2100 * 2.5 + 783 * 10.0) / 1e6)
    Budget(tokens=2883).check(plan, None)
    with pytest.raises(ConfigError, match="over the budget of 2,882"):
        Budget(tokens=2882).check(plan, None)
    with pytest.raises(ConfigError, match=r"cost about \$0.01 .* over the budget of \$0.01"):
        Budget(usd=0.01).check(plan, (2.5, 10.0))


def test_the_plan_is_shown_before_generation_and_a_rerun_counts_cache_hits(pytester: pytest.Pytester) -> None:
    args = (ONLY_HARM, "--em-samples=2", "--em-price=2.5,10", "--em-batch-size=16")
    first = gate(pytester, "coherent", *args)
    first.stdout.fnmatch_lines(
        [
            "[[]emguard[]] plan: 256 answers (0 cached, 256 to generate), 0 readings (0 cached, 0 to read); "
            "about * prompt tokens and at most 32,768 new tokens to send (first round; follow-ups come on top); "
            "estimated API cost $*; prompt tokens estimated at 4 characters a token",
            "[[]emguard[]] base: generating 128 answers*",
            "[[]emguard[]] time: the first batch made 16 answers in *s (model load not counted); at that rate the "
            "plan's 256 answers take about * min (readings, follow-ups and the judge come on top; *)",
        ]
    )
    second = gate(pytester, "coherent", *args)
    second.stdout.no_fnmatch_line("*plan: *")  # nothing to generate: no plan line


def test_a_plan_over_budget_generates_nothing(pytester: pytest.Pytester) -> None:
    result = gate(pytester, "coherent", ONLY_HARM, "--em-samples=2", "--em-budget=20k")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*--em-budget: the plan needs about * tokens (* prompt, at most 32,768 new) before its follow-ups, "
            "over the budget of 20,000*",
        ]
    )
    again = gate(pytester, "coherent", ONLY_HARM, "--em-samples=2", "--em-budget=40k")
    again.stdout.fnmatch_lines(["records: 256 made, 0 from cache*"])  # the refused run made none


def test_a_dollar_budget_needs_a_price(pytester: pytest.Pytester) -> None:
    result = gate(pytester, "coherent", "--em-budget=$5")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--em-budget: '$5' is in dollars but no price is given*"])
