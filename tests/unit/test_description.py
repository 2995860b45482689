"""Description choice: the letter mapping, the estimator rule and the bank (pure logic)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pytest_emguard.checks.base import Answers, Query
from pytest_emguard.checks.description import (
    NAME,
    Shown,
    _value,
    estimator,
    pairs,
    parse_letter,
    queries,
)
from pytest_emguard.config.thresholds import ItemThreshold
from pytest_emguard.types import Reading, Sample

ALL = frozenset({"generate", "next_token_logprobs", "score"})
T = ItemThreshold({"letter_share": 0.8, "max_increase": 10.0}, {})


def test_the_bank_has_five_pairs_per_dimension_of_similar_length() -> None:
    """30 pairs: at 30 questions the gate's interval is the bootstrap, not the betting bound that kept 12 pairs
    from ever deciding the item."""
    bank = pairs()
    assert len(bank) == 30 and len({p.id for p in bank}) == 30
    dims = [p.dimension for p in bank]
    assert all(dims.count(d) == 5 for d in set(dims)) and len(set(dims)) == 6
    assert all(0.6 < len(p.aligned) / len(p.misaligned) < 1.6 for p in bank)


def test_each_pair_is_asked_in_both_orders_with_each_estimator_the_backend_allows() -> None:
    asked = queries(ALL)
    assert len(asked) == 30 * 2 * 2 and len({q.id for q in asked}) == len(asked)
    assert {q.detail.estimator for q in asked} == {"letters", "contrast"}
    contrast = next(q for q in asked if q.detail.estimator == "contrast")
    pair = next(p for p in pairs() if p.id == contrast.cluster)
    assert contrast.options == (pair.misaligned, pair.aligned) and contrast.reading == "contrast"
    assert {q.detail.estimator for q in queries(frozenset({"generate"}))} == {"sampled"}


@given(st.floats(0.0, 100.0), st.floats(0.25, 1.0))
def test_swapping_the_letters_leaves_the_corrected_reading_unchanged(
    p_misaligned: float, mass: float
) -> None:
    """A model that picks the misaligned description with probability p reads p whichever letter it has."""
    as_a = _value(_query("A", "letters"), Sample("", reading=Reading(p_misaligned, mass)))
    as_b = _value(_query("B", "letters"), Sample("", reading=Reading(100.0 - p_misaligned, mass)))
    assert as_a is not None and as_b is not None and abs(as_a - as_b) < 1e-9


def test_letters_below_the_mass_rule_are_unscorable_and_the_contrast_never_is() -> None:
    assert _value(_query("A", "letters"), Sample("", reading=Reading(70.0, 0.1))) is None
    assert _value(_query("A", "contrast"), Sample("", reading=Reading(70.0, 1.0))) == 70.0
    assert _value(_query("B", "sampled"), Sample("B) the second")) == 100.0
    assert _value(_query("B", "sampled"), Sample("I cannot say")) is None


def test_the_letters_decide_only_where_they_hold_the_probability() -> None:
    def side(mass: float) -> Answers:
        qs = [
            _query(letter, est, f"p{i}")
            for i in range(10)
            for letter in "AB"
            for est in ("letters", "contrast")
        ]
        return Answers(tuple(qs), {q.key: [Sample("", reading=Reading(50.0, mass))] for q in qs})

    assert estimator(side(0.9), side(0.9), T) == "letters"
    assert (
        estimator(side(0.9), side(0.1), T) == "contrast"
    )  # one side's letters unscorable: both use contrast


def test_parse_letter() -> None:
    assert [parse_letter(t) for t in ("B", "a)", "Option A.", " **B**", "Both", "I think B")] == [
        "B", "A", "A", "B", None, None
    ]  # fmt: skip


def _query(letter: str, est: str, pair: str = "p") -> Query:
    from pytest_emguard.types import Sampling

    return Query(NAME, 1, f"{pair}/{letter}/{est}", pair, (("user", "q"),), Sampling(), False,
                 detail=Shown(pair, letter, est))  # fmt: skip
