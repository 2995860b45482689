"""Tests that the shipped banks meet the method, and for probes, seeds, normalisation and the golden set."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_emguard.checks import harmfulness, self_report
from pytest_emguard.checks.base import PlanContext, Point, Query
from pytest_emguard.checks.self_report import PoleOrder
from pytest_emguard.judge.probe import golden_set
from pytest_emguard.types import Sampling, derive_seed

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


def test_harm_queries() -> None:
    queries = harmfulness.CHECK.queries(PlanContext(samples=3, max_new_tokens=64))
    assert [q.cluster for q in queries] == [q.id for q in harmfulness.questions()]
    assert [q.id for q in queries] == [q.cluster for q in queries]
    assert all(q.judged and q.check == harmfulness.NAME for q in queries)
    assert all(q.sampling.max_new_tokens == 64 for q in queries)
    assert all(q.category in CATEGORIES and q.tags["category"] == q.category for q in queries)
    assert all(q.bank_sha256 is None and q.samples is None for q in queries)


def test_self_assessment_bank() -> None:
    dims = self_report.dimensions()
    assert len(dims) == 6
    assert len({d.id for d in dims}) == 6
    assert [i.name for i in self_report.CHECK.items()] == ["overall", *(d.id for d in dims)]
    for dim in dims:
        assert dim.aligned and dim.misaligned and dim.aligned != dim.misaligned
        assert len(dim.phrasings) >= 5, dim.id
        assert len(set(dim.phrasings)) == len(dim.phrasings)
        for phrasing in dim.phrasings:
            assert phrasing.count("{low}") == 1, phrasing
            assert phrasing.count("{high}") == 1, phrasing
            assert phrasing.count("{") == 2 and phrasing.count("}") == 2, phrasing


def test_self_report_queries_ask_every_phrasing_both_ways() -> None:
    dims = self_report.dimensions()
    probes = self_report.queries()
    assert len(probes) == 2 * sum(len(d.phrasings) for d in dims)
    assert len({p.cluster for p in probes}) == len(probes)
    by_cluster = {p.id: p for p in probes}
    for dim in dims:
        for i, phrasing in enumerate(dim.phrasings):
            at100 = by_cluster[f"{dim.id}/{i}/aligned@100"]
            at0 = by_cluster[f"{dim.id}/{i}/aligned@0"]
            assert at100.question == phrasing.format(low=dim.misaligned, high=dim.aligned)
            assert at0.question == phrasing.format(low=dim.aligned, high=dim.misaligned)
            assert at100.question != at0.question
            assert (at100.tags["aligned_at"], at0.tags["aligned_at"]) == ("100", "0")
            assert at100.detail == PoleOrder(dim.id, i, aligned_high=True)
            assert at0.detail == PoleOrder(dim.id, i, aligned_high=False)
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
    assert self_report.normalise(answer, PoleOrder("d", 0, aligned_at == "100")) == expected


@given(st.integers(0, 100))
def test_normalise_poles_mirror(value: int) -> None:
    assert self_report.normalise(str(value), PoleOrder("d", 0, True)) == value
    assert self_report.normalise(str(value), PoleOrder("d", 0, False)) == 100 - value


def _points(phrasing: int, high: bool, values: list[float | None]) -> list[Point]:
    q = query("self_report", f"good_evil/{phrasing}/{high}")
    q = Query(
        q.check, 1, q.id, q.id, q.messages, q.sampling, False, detail=PoleOrder("good_evil", phrasing, high)
    )
    return [Point(v, q, "") for v in values]


def test_order_gap() -> None:
    series = {
        "a": _points(0, True, [90.0, 70.0, None]),
        "b": _points(1, True, [80.0]),
        "c": _points(0, False, [20.0, None]),
        "d": _points(1, False, [40.0]),
    }
    assert self_report.order_gap(series) == pytest.approx(80.0 - 30.0)
    swapped = {
        "a": _points(0, False, [90.0, 70.0, None]),
        "b": _points(1, False, [80.0]),
        "c": _points(0, True, [20.0, None]),
        "d": _points(1, True, [40.0]),
    }
    assert self_report.order_gap(swapped) == pytest.approx(50.0)  # absolute
    assert self_report.order_gap({"a": _points(0, True, [50.0]), "c": _points(0, False, [None])}) is None
    assert self_report.order_gap({}) is None


def query(check: str = "harmfulness", cluster: str = "q1") -> Query:
    return Query(check, 1, cluster, cluster, (("user", "hi"),), Sampling(), judged=True)


def test_requests_seeds() -> None:
    a = query().requests(4, seed=7)
    b = query().requests(4, seed=7)
    assert [r.seed for r in a] == [r.seed for r in b]
    assert a == b
    assert [r.sample for r in a] == [0, 1, 2, 3]
    assert len({r.seed for r in a}) == 4
    assert all(r.tags["check"] == "harmfulness" for r in a)
    assert all(0 <= r.seed < 2**63 for r in a)
    for other in (
        query().requests(4, 8),
        query("self_report").requests(4, 7),
        query(cluster="q2").requests(4, 7),
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
