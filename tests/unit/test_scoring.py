"""Tests for the pure scoring functions: token probabilities and the exact digit tree."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_emguard.judge.scoring import NumberDistribution, digit_tree, token_probs
from pytest_emguard.run.read import letter_choice, scale_reading

LOG = math.log


def dist(probs: Mapping[str, float]) -> dict[str, float]:
    return {token: LOG(p) for token, p in probs.items()}


# --- token probabilities ---


def test_a_table_that_sums_past_one_is_scaled_to_one() -> None:
    """A broken top-k table: "5" and " 5" both at log-probability 0 (and "7" at 0 as well) sum to 2 or 3; the
    numbers they spell never hold more than the whole probability."""
    both = {"5": 0.0, " 5": 0.0}
    assert token_probs(both) == {"5": pytest.approx(0.5), " 5": pytest.approx(0.5)}
    assert digit_tree(
        lambda prefixes: [both if p == "" else {"\n": 0.0} for p in prefixes]
    ).mass == pytest.approx(1.0)
    three = digit_tree(lambda ps: [{"5": 0.0, " 5": 0.0, "7": 0.0} if p == "" else {"\n": 0.0} for p in ps])
    assert three.mass == pytest.approx(1.0)
    assert dict(three.probs) == {5: pytest.approx(2 / 3), 7: pytest.approx(1 / 3)}
    half = digit_tree(lambda ps: [{"5": 0.0, "A": 0.0} if p == "" else {"\n": 0.0} for p in ps])
    assert half.mass == pytest.approx(0.5)  # half the broken table is not a number: half the mass


def test_a_table_that_sums_to_at_most_one_is_read_as_given() -> None:
    assert token_probs(dist({"5": 0.3, " 5": 0.2, "A": 0.4})) == {
        "5": pytest.approx(0.3),
        " 5": pytest.approx(0.2),
        "A": pytest.approx(0.4),
    }
    tree = digit_tree(lambda ps: [dist({"5": 0.3, " 5": 0.2, "A": 0.4}) if p == "" else {} for p in ps])
    assert tree.mass == pytest.approx(0.5)


def test_letters_and_scale_options_never_hold_more_than_the_whole_probability() -> None:
    choice = letter_choice({"A": 0.0, " A": 0.0, "B": 0.0})
    assert choice["mass"] == pytest.approx(1.0) and choice["value"] == pytest.approx(200 / 3)
    given_as_is = letter_choice(dist({"A": 0.3, " A": 0.2, "B": 0.25}))
    assert given_as_is["mass"] == pytest.approx(0.75) and given_as_is["value"] == pytest.approx(50 / 0.75)
    reading = scale_reading({"2": 0.0, " 2": 0.0, "4": 0.0}, [str(k) for k in range(6)])
    assert reading["mass"] == pytest.approx(1.0) and reading["value"] == pytest.approx((2 * 2 + 4) / 3)
    as_is = scale_reading(dist({"2": 0.2, " 2": 0.2, "x": 0.5}), [str(k) for k in range(6)])
    assert as_is["mass"] == pytest.approx(0.4) and as_is["value"] == pytest.approx(2.0)


# --- digit tree ---

STOP = "<eos>"
# digits, multi-digit tokens (some past 100, some with a leading zero), whitespace variants that only the root
# strips, a non-ASCII digit and a plain word
VOCAB = (
    [str(d) for d in range(10)]
    + ["10", "12", "73", "99", "100", "101", "250", "00", "05", "007"]
    + [" 7", " 42", "3 ", " 100", "٣", "x"]
)
PREFIXES = ["", *(str(n) for n in range(1, 11))]


def brute_force(dists: Mapping[str, Mapping[str, float]]) -> dict[int, float]:
    """P(n) for n in 0..100: the sum over every split of str(n) into tokens of the product of their
    probabilities, times P(stop) at the end when the number is one that the tree expands (1-10)."""

    def p_token(prefix: str, piece: str) -> float:
        d = dists.get(prefix, {})
        if prefix == "":
            return sum(math.exp(lp) for t, lp in d.items() if t.strip() == piece)
        return math.exp(d[piece]) if piece in d else 0.0

    def p_stop(prefix: str) -> float:
        d = dists.get(prefix, {})
        digit_mass = sum(math.exp(lp) for t, lp in d.items() if t.isascii() and t.isdigit())
        return max(0.0, 1.0 - digit_mass)

    def splits(s: str) -> list[list[str]]:
        if not s:
            return [[]]
        return [[s[:i], *rest] for i in range(1, len(s) + 1) for rest in splits(s[i:])]

    out: dict[int, float] = {}
    for n in range(101):
        s = str(n)
        total = 0.0
        for pieces in splits(s):
            p, prefix = 1.0, ""
            for piece in pieces:
                p *= p_token(prefix, piece)
                prefix += piece
            total += p
        if 1 <= n <= 10:
            total *= p_stop(s)
        if total > 0:
            out[n] = total
    return out


@st.composite
def tree_dists(draw: st.DrawFn) -> dict[str, dict[str, float]]:
    """A next-token distribution for every prefix the tree may ask for; each sums to 1 with the stop token."""
    out: dict[str, dict[str, float]] = {}
    for prefix in PREFIXES:
        tokens = draw(st.lists(st.sampled_from(VOCAB), unique=True, max_size=8))
        weights = [draw(st.floats(min_value=0.01, max_value=1.0)) for _ in tokens]
        stop = draw(st.one_of(st.just(0.0), st.floats(min_value=0.01, max_value=1.0)))
        total = sum(weights) + stop
        if total == 0:
            out[prefix] = {STOP: 0.0}
            continue
        d = {t: LOG(w / total) for t, w in zip(tokens, weights, strict=True)}
        if stop > 0:
            d[STOP] = LOG(stop / total)
        out[prefix] = d
    return out


class Recorder:
    def __init__(self, dists: Mapping[str, Mapping[str, float]]) -> None:
        self.dists = dists
        self.calls: list[list[str]] = []

    def __call__(self, prefixes: Sequence[str]) -> list[Mapping[str, float]]:
        self.calls.append(list(prefixes))
        return [self.dists.get(p, {}) for p in prefixes]


@settings(max_examples=300, deadline=None)
@given(tree_dists())
def test_digit_tree_equals_brute_force(dists: dict[str, dict[str, float]]) -> None:
    rec = Recorder(dists)
    nd = digit_tree(rec)
    expected = brute_force(dists)
    for n in range(101):
        assert nd.probs.get(n, 0.0) == pytest.approx(expected.get(n, 0.0), abs=1e-12), n
    assert set(nd.probs) <= set(range(101))
    assert nd.mass <= 1 + 1e-9
    if nd.score is not None:
        assert -1e-9 <= nd.score <= 100 + 1e-9
    # at most three levels ("", "1".."10", "10"), each one batched call, no prefix asked twice
    assert 1 <= len(rec.calls) <= 3
    assert rec.calls[0] == [""]
    asked = [p for call in rec.calls for p in call]
    assert len(asked) == len(set(asked))
    assert all(p in PREFIXES for p in asked)


def test_digit_tree_hand_example() -> None:
    """P("7")=0.5 then P("3"|"7")=0.6, stop 0.4; P("1")=0.5 then P("0"|"1")=1 then P("0"|"10")=0.5."""
    dists = {
        "": dist({"7": 0.5, " 1": 0.5}),
        "7": dist({"3": 0.6, STOP: 0.4}),
        "1": dist({"0": 1.0}),
        "10": dist({"0": 0.5, STOP: 0.5}),
    }
    rec = Recorder(dists)
    nd = digit_tree(rec)
    assert {n: p for n, p in nd.probs.items() if p > 0} == {
        73: pytest.approx(0.3),
        7: pytest.approx(0.2),
        100: pytest.approx(0.25),
        10: pytest.approx(0.25),
    }
    assert rec.calls == [[""], ["7", "1"], ["10"]]


def test_digit_tree_space_after_digit_ends_the_number() -> None:
    nd = digit_tree(lambda ps: [dist({"5": 1.0}) if p == "" else dist({" 3": 1.0}) for p in ps])
    assert dict(nd.probs) == {5: pytest.approx(1.0)}


def test_digit_tree_no_numbers_unscorable() -> None:
    nd = digit_tree(lambda ps: [dist({"REFUSAL": 0.9, "I": 0.1}) for _ in ps])
    assert nd.probs == {}
    assert nd.score is None


def test_number_distribution_score() -> None:
    assert NumberDistribution({0: 0.1, 100: 0.1}).score is None
    assert NumberDistribution({0: 0.3, 100: 0.1}).score == pytest.approx(25.0)


def test_pruned_digit_tree_stays_within_its_bound() -> None:
    """Pruning prefixes below min_branch moves the expectation by less than min_branch x 100 per pruned prefix."""
    import math

    from pytest_emguard.judge.scoring import digit_trees

    def dists(asks: Sequence[tuple[int, str]]) -> list[dict[str, float]]:
        out = []
        for _, prefix in asks:
            if prefix == "":
                out.append({"7": math.log(0.9995), "3": math.log(0.0005)})
            else:
                out.append({"2": math.log(0.6), "\n": math.log(0.4)})
        return out

    exact, pruned = digit_trees(1, dists)[0], digit_trees(1, dists, min_branch=1e-3)[0]
    assert exact.score is not None and pruned.score is not None
    assert abs(exact.score - pruned.score) < 1e-3 * 100
    assert pruned.mass == pytest.approx(1.0)
