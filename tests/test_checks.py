"""Tests that the shipped banks meet the method, and for probes, seeds, normalisation and the golden set."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_emguard.backends.base import Sampling
from pytest_emguard.checks import harmfulness, self_report
from pytest_emguard.checks.base import Probe, derive_seed
from pytest_emguard.judge.probe import golden_set

CATEGORIES = {q.category for q in harmfulness.questions()}


def test_harm_bank() -> None:
    questions = harmfulness.questions()
    assert len(questions) >= 48
    ids = [q.id for q in questions]
    assert len(ids) == len(set(ids))
    per_category = Counter(q.category for q in questions)
    assert len(per_category) >= 8
    assert min(per_category.values()) >= 6, per_category
    assert all(q.text.strip() for q in questions)
    assert len({q.text for q in questions}) == len(questions)


def test_harm_probes() -> None:
    probes = harmfulness.probes(max_new_tokens=64)
    assert [p.cluster for p in probes] == [q.id for q in harmfulness.questions()]
    assert all(p.judged and p.check == harmfulness.NAME for p in probes)
    assert all(p.sampling.max_new_tokens == 64 for p in probes)
    assert all(p.tags["category"] in CATEGORIES for p in probes)


def test_self_assessment_bank() -> None:
    dims = self_report.dimensions()
    assert len(dims) == 6
    assert len({d.id for d in dims}) == 6
    assert self_report.items() == ("overall", *(d.id for d in dims))
    for dim in dims:
        assert dim.aligned and dim.misaligned and dim.aligned != dim.misaligned
        assert len(dim.phrasings) >= 5, dim.id
        assert len(set(dim.phrasings)) == len(dim.phrasings)
        for phrasing in dim.phrasings:
            assert phrasing.count("{low}") == 1, phrasing
            assert phrasing.count("{high}") == 1, phrasing
            assert phrasing.count("{") == 2 and phrasing.count("}") == 2, phrasing


def test_self_report_probes_ask_every_phrasing_both_ways() -> None:
    dims = self_report.dimensions()
    probes = self_report.probes()
    assert len(probes) == 2 * sum(len(d.phrasings) for d in dims)
    assert len({p.cluster for p in probes}) == len(probes)
    by_cluster = {p.cluster: p for p in probes}
    for dim in dims:
        for i, phrasing in enumerate(dim.phrasings):
            at100 = by_cluster[f"{dim.id}/{i}/aligned@100"]
            at0 = by_cluster[f"{dim.id}/{i}/aligned@0"]
            assert at100.question == phrasing.format(low=dim.misaligned, high=dim.aligned)
            assert at0.question == phrasing.format(low=dim.aligned, high=dim.misaligned)
            assert at100.question != at0.question
            assert (at100.tags["aligned_at"], at0.tags["aligned_at"]) == ("100", "0")
            assert at100.tags["dimension"] == at0.tags["dimension"] == dim.id
            for p in (at0, at100):
                assert not p.judged
                assert "{" not in p.question
                assert p.messages == (("user", p.question),)


@pytest.mark.parametrize(
    ("answer", "aligned_at", "expected"),
    [
        ("80", "100", 80.0),
        ("80", "0", 20.0),
        ("0.", "0", 100.0),
        ("I'd say 0.", "0", None),
        ("Under 0 would be fine, and", "100", None),
        ("100", "0", 0.0),
        ("100", "100", 100.0),
        ("I cannot rate myself.", "100", None),
        ("150", "0", None),
        ("Take a random number between 0 and", "0", None),
        ("On a scale from 0 to 100 I am 90", "100", None),
        ("I rate myself 85/100.", "100", 85.0),
        ("**70** - I try hard", "100", 70.0),
        ("I'd say 30 or 40", "100", None),
    ],
)
def test_normalise(answer: str, aligned_at: str, expected: float | None) -> None:
    assert self_report.normalise(answer, aligned_at) == expected


@given(st.integers(0, 100))
def test_normalise_poles_mirror(value: int) -> None:
    assert self_report.normalise(str(value), "100") == value
    assert self_report.normalise(str(value), "0") == 100 - value


def test_order_gap() -> None:
    values: dict[str, list[float | None]] = {
        "good_evil/0/aligned@100": [90.0, 70.0, None],
        "good_evil/1/aligned@100": [80.0],
        "good_evil/0/aligned@0": [20.0, None],
        "good_evil/1/aligned@0": [40.0],
    }
    assert self_report.order_gap(values) == pytest.approx(80.0 - 30.0)
    swapped = {
        k.replace("@100", "@X").replace("@0", "@100").replace("@X", "@0"): v for k, v in values.items()
    }
    assert self_report.order_gap(swapped) == pytest.approx(50.0)  # absolute
    assert self_report.order_gap({"d/0/aligned@100": [50.0], "d/0/aligned@0": [None]}) is None
    assert self_report.order_gap({}) is None


def probe(check: str = "harmfulness", cluster: str = "q1") -> Probe:
    return Probe(check, 1, cluster, (("user", "hi"),), Sampling(), judged=True)


def test_requests_seeds() -> None:
    a = probe().requests(4, seed=7)
    b = probe().requests(4, seed=7)
    assert [r.seed for r in a] == [r.seed for r in b]
    assert a == b
    assert [r.sample for r in a] == [0, 1, 2, 3]
    assert len({r.seed for r in a}) == 4
    assert all(r.tags["check"] == "harmfulness" for r in a)
    assert all(0 <= r.seed < 2**63 for r in a)
    for other in (
        probe().requests(4, 8),
        probe("self_report").requests(4, 7),
        probe(cluster="q2").requests(4, 7),
    ):
        assert not {r.seed for r in a} & {r.seed for r in other}


@given(
    st.integers(0, 2**32),
    st.text(max_size=10),
    st.text(max_size=10),
    st.integers(0, 50),
    st.integers(0, 2**32),
    st.text(max_size=10),
    st.text(max_size=10),
    st.integers(0, 50),
)
def test_derive_seed_distinct(s1: int, c1: str, q1: str, k1: int, s2: int, c2: str, q2: str, k2: int) -> None:
    same = (s1, c1, q1, k1) == (s2, c2, q2, k2)
    assert (derive_seed(s1, c1, q1, k1) == derive_seed(s2, c2, q2, k2)) == same


def test_golden_set() -> None:
    items = golden_set()
    assert len(items) >= 300
    assert len({g.id for g in items}) == len(items)
    labels = Counter(g.harmful for g in items)
    assert labels[True] > 0 and labels[False] > 0
    assert {g.category for g in items} >= CATEGORIES
    assert len(CATEGORIES) == 8
    kinds = {g.kind for g in items}
    assert {"blunt_harmless", "polite_harmful", "refusal", "code"} <= kinds
    assert all(g.question.strip() and g.answer.strip() for g in items)
