"""Sequential stopping (``--em-sequential``): the confidence sequence holds at every round at once, and reading the
fixed-n bootstrap after every round does not.  Seeded simulations, so every number is the same on every run."""

from __future__ import annotations

import numpy as np
import pytest

from pytest_emguard.decide.sequential import confidence_sequence, error_rates, ordered, rounds

LOOKS = list(range(8, 97, 8))  # a round of 8 questions, 12 rounds, 96 questions


def _at_threshold(rng: np.random.Generator, n: int) -> np.ndarray:
    """Per-question differences whose true mean is the threshold (+10): every pass is a wrong pass."""
    return np.clip(rng.normal(10.0, 30.0, n), -100, 100)


def test_the_sequence_holds_at_every_round_at_once() -> None:
    """The upper end falls below the true mean at *some* round in at most alpha of the runs (time-uniform),
    for normal and for right-skewed differences."""
    rng = np.random.default_rng(7)
    for skewed in (False, True):  # mean 10 both: normal, and exponential shifted (skewness 2)
        missed = 0
        for _ in range(300):
            d = rng.exponential(20.0, 96) - 10.0 if skewed else rng.normal(10.0, 30.0, 96)
            d = np.clip(d, -100, 100)
            missed += any(confidence_sequence(d[:k].tolist(), 100.0, 0.05).high < 10.0 for k in range(2, 97))
        assert missed / 300 <= 0.05, missed


def test_peeking_at_the_bootstrap_inflates_the_error_and_the_sequence_does_not() -> None:
    rates = error_rates(
        _at_threshold, n=96, looks=LOOKS, threshold=10.0, span=100.0, alpha=0.05, runs=400, seed=1
    )
    assert rates["fixed bootstrap wrong pass"] <= 0.07  # read once: about alpha
    assert rates["peek bootstrap wrong pass"] >= 0.12  # read after each of 12 rounds: measured 18%
    assert rates["sequential wrong pass"] <= 0.05


def test_a_clearly_harmful_fine_tune_stops_before_the_questions_run_out() -> None:
    def harmful(rng: np.random.Generator, n: int) -> np.ndarray:
        return np.clip(rng.normal(25.0, 30.0, n), -100, 100)

    rates = error_rates(harmful, n=96, looks=LOOKS, threshold=10.0, span=100.0, alpha=0.05, runs=200, seed=2)
    assert rates["sequential questions"] < 85  # measured 77 of 96
    assert rates["sequential wrong pass"] == 0.0


def test_the_interval_is_labelled_and_checked() -> None:
    interval = confidence_sequence([5.0] * 40, 100.0, 0.05)
    assert interval.kind == "confidence sequence" and interval.confidence == pytest.approx(0.9)
    assert interval.low < 5.0 < interval.high and interval.n_clusters == 40
    with pytest.raises(ValueError, match="outside"):
        confidence_sequence([150.0], 100.0, 0.05)


def test_the_order_is_seeded_and_the_same_for_any_subset() -> None:
    clusters = [f"q{i}" for i in range(50)]
    order = ordered(clusters, seed=3)
    assert sorted(order) == sorted(clusters) and order != sorted(clusters)
    assert ordered(clusters[::2], seed=3) == [c for c in order if c in set(clusters[::2])]
    assert ordered(clusters, seed=4) != order
    assert rounds(order, 16) == [order[:16], order[16:32], order[32:48], order[48:]]


def test_the_narrowest_half_width_is_that_of_zero_differences_and_falls_with_the_questions() -> None:
    from pytest_emguard.decide.sequential import narrowest, questions_for

    at_64 = narrowest(64, 100.0, 0.05)
    assert at_64 == pytest.approx(confidence_sequence([0.0] * 64, 100.0, 0.05).high)
    assert 12.0 < at_64 < 13.0  # the figure docs/statistics.md gives for the shipped bank
    spread = confidence_sequence([10.0, -10.0] * 32, 100.0, 0.05)
    assert spread.high - spread.estimate > at_64  # any spread only widens it
    need = questions_for(10.0, 100.0, 0.05)
    assert need is not None and narrowest(need, 100.0, 0.05) < 10.0 <= narrowest(need - 1, 100.0, 0.05)
    assert questions_for(0.0, 100.0, 0.05) is None
