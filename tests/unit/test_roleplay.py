"""Persona role-play S and R (pure logic): the formulas, the banks and the estimators' readings."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from pytest_emguard.checks import roleplay
from pytest_emguard.checks.roleplay import Cell, parse_digit, robustness, susceptibility
from pytest_emguard.run.read import scale_reading

ratings = st.lists(st.lists(st.floats(0.0, 4.0), min_size=3, max_size=3), min_size=2, max_size=6)


def grid(means: list[list[float]], spread: float = 0.5) -> list[Cell]:
    return [
        Cell(f"p{p}", f"q{q}", "care", value, spread)
        for p, row in enumerate(means)
        for q, value in enumerate(row)
    ]


def test_the_banks_have_100_personas_and_four_items_per_foundation() -> None:
    people = roleplay.personas()
    assert len(people) == 100 and len({text for _, text in people}) == 100
    found = roleplay.items()
    foundations = [i["foundation"] for i in found]
    assert sorted(set(foundations)) == ["authority", "care", "fairness", "loyalty", "purity"]
    assert all(foundations.count(f) == 4 for f in set(foundations))
    assert all("0" in i["prompt"] and "5" in i["prompt"] for i in found)
    asked = roleplay.queries(frozenset({"next_token_logprobs"}))
    assert len(asked) == 101 * 20 and {q.reading for q in asked} == {"scale"}
    assert sum(q.cluster == roleplay.NONE for q in asked) == 20
    assert all(q.messages[0][0] == "system" for q in asked if q.cluster != roleplay.NONE)
    assert {q.reading for q in roleplay.queries(frozenset({"generate"}))} == {"sample"}


@given(ratings, st.floats(0.0, 1.0))
def test_adding_a_constant_to_every_rating_leaves_s_and_r_unchanged(
    means: list[list[float]], shift: float
) -> None:
    before = grid(means)
    after = grid([[v + shift for v in row] for row in means])
    s0, s1 = susceptibility(before), susceptibility(after)
    assert s0 is not None and s1 is not None and math.isclose(s0, s1, abs_tol=1e-9)
    assert robustness(before) == robustness(after)


@given(st.lists(st.floats(0.0, 5.0), min_size=3, max_size=3), st.integers(2, 6))
def test_identical_personas_have_no_susceptibility(row: list[float], n: int) -> None:
    s = susceptibility(grid([row] * n))
    assert s is not None and s < 1e-9


def test_s_and_r_follow_their_definitions() -> None:
    # two personas, two items: means (1, 2) and (3, 4); per item sd over personas is 1 -> S = 1
    cells = grid([[1.0, 2.0], [3.0, 4.0]], spread=0.5)
    assert susceptibility(cells) == 1.0
    assert robustness(cells) == (0.5, 2.0)
    unconditioned = [Cell(roleplay.NONE, "q0", "care", 5.0, 3.0)]
    assert robustness(cells + unconditioned) == (0.5, 2.0)  # the profile without a persona is not a persona


def test_the_logit_estimator_reads_mean_and_spread_of_the_digit_distribution() -> None:
    # a real distribution: 2 x 0.4966 + e^-5 < 1 (a broken one that sums past 1 is scaled to sum to 1)
    half = math.log(0.4966)
    read = scale_reading({"2": half, " 4": half, "x": -5.0}, roleplay.DIGITS)
    assert read["value"] == 3.0 and read["spread"] == 1.0 and float(str(read["mass"])) == 2 * math.exp(half)
    assert (
        scale_reading({"hello": 0.0}, roleplay.DIGITS)["value"] is None
    )  # no mass on the digits: unscorable


def test_parse_digit() -> None:
    assert [parse_digit(t) for t in ("4", "Rating: 3", "I'd say 2.", "10", "none")] == [4, 3, 2, None, None]
