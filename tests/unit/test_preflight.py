"""The preflight's divergence: exactly 0 for identical distributions, never above the true KL."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_emguard.run.preflight import coarse_kl, mean_kl

probs = st.lists(st.floats(0.01, 1.0), min_size=2, max_size=12).map(lambda xs: [x / sum(xs) for x in xs])


def _top(p: list[float], k: int) -> dict[str, float]:
    ranked = sorted(range(len(p)), key=lambda i: -p[i])[:k]
    return {f"t{i}": math.log(p[i]) for i in ranked}


@given(probs, st.integers(1, 12))
def test_identical_distributions_diverge_by_nothing(p: list[float], k: int) -> None:
    assert coarse_kl(_top(p, k), _top(p, k)) == 0.0


@given(probs, probs)
def test_with_every_token_listed_coarse_kl_is_the_true_kl(p: list[float], q: list[float]) -> None:
    n = min(len(p), len(q))
    p = [x / sum(p[:n]) for x in p[:n]]
    q = [x / sum(q[:n]) for x in q[:n]]
    true = sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))
    assert coarse_kl(_top(p, n), _top(q, n)) == pytest.approx(true, abs=1e-9)


def test_near_uniform_distributions_with_disjoint_top_k_still_diverge() -> None:
    """A random tiny model: 1000 tokens near-uniform; a random adapter reorders which 20 come first."""
    rng = np.random.default_rng(0)
    base = rng.dirichlet(np.full(1000, 50.0))
    tuned = rng.dirichlet(np.full(1000, 50.0))
    kl = coarse_kl(_top(list(tuned), 20), _top(list(base), 20))
    assert kl > 1e-6


def test_mean_kl_of_a_changed_distribution_is_positive() -> None:
    base = [{"a": math.log(0.5), "b": math.log(0.5)}]
    tuned = [{"a": math.log(0.9), "b": math.log(0.1)}]
    assert mean_kl(tuned, base) > 0.3
