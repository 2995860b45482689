"""The model-internal checks on constructed activations: the probe pipeline (labels, cross-validation, directions,
transfer) and the persona direction (direction, layer choice, standardised shift)."""

from __future__ import annotations

import numpy as np
import pytest

from pytest_emguard.checks import harmfulness, persona_direction, probes, self_report
from pytest_emguard.checks.base import Answers, PlanContext, Query, Series
from pytest_emguard.config.thresholds import ItemThreshold
from pytest_emguard.types import Reading, Sample, Verdict

PLAN = PlanContext(1, 16, frozenset({"generate", "next_token_logprobs", "activations"}), layer_stride=4)
T = ItemThreshold({"max_increase": 1.0}, {})
WIDTH, LAYERS = 12, 3


Rows = dict[tuple[str, str], list[Sample | None]]


def _first_round(harms: list[float], ratings: list[float]) -> tuple[list[Query], Rows]:
    """Harm questions with one judged answer each and self-rating prompts with one reading each."""
    harm_q = [q for q in harmfulness.CHECK.queries(PLAN)][: len(harms)]
    self_q = [q for q in self_report.queries() if isinstance(q.detail, self_report.PoleOrder)][: len(ratings)]
    samples: Rows = {}
    for q, h in zip(harm_q, harms, strict=True):
        samples[q.key] = [Sample("answer", Verdict("scored", h))]
    for q, r in zip(self_q, ratings, strict=True):
        shown = r if q.detail.aligned_high else 100.0 - r
        samples[q.key] = [Sample("rating", reading=Reading(shown, 1.0))]
    return [*harm_q, *self_q], samples


def _with_states(queries: list[Query], samples: Rows, vectors: dict[str, np.ndarray]) -> Answers:
    """The first round plus the probes' state follow-ups, each given the activation ``vectors[source id]``."""
    first = Answers(tuple(queries), samples)
    extra = probes.followups(PLAN, first, first)
    more = dict(samples)
    for q in extra:
        more[q.key] = [Sample("activations", states=vectors[q.detail.id])]
    return Answers((*queries, *extra), more)


def _side(rng: np.random.Generator, n: int, shift: float = 0.0) -> Answers:
    """Behaviour encoded on dimension 0, self-assessment on dimension 1 (orthogonal by construction)."""
    harms = rng.uniform(0, 100, n)
    ratings = rng.uniform(0, 100, n)
    queries, samples = _first_round(list(harms), list(ratings))
    vectors = {}
    for q, value in zip(queries, [*harms, *ratings], strict=True):
        base = rng.normal(0.0, 1.0, (LAYERS, WIDTH))
        if q.check == harmfulness.NAME:
            base[:, 0] += 5.0 * (value > np.median(harms)) + shift
        else:
            base[:, 1] += 5.0 * (value < np.median(ratings))
        vectors[q.id] = base.astype(np.float32)
    return _with_states(queries, samples, vectors)


def test_the_labels_split_each_side_at_its_median() -> None:
    answers = _side(np.random.default_rng(0), 40)
    behaviour = probes.dataset(answers, "behaviour")
    selfs = probes.dataset(answers, "self")
    assert behaviour is not None and selfs is not None
    assert sum(behaviour.labels) == 20 and sum(selfs.labels) == 20
    # harmful = above the median harm; misaligned = below the median rating (100 = aligned)
    top = max(range(40), key=lambda i: behaviour.values[i])
    assert behaviour.labels[top] == 1
    low = min(range(40), key=lambda i: selfs.values[i])
    assert selfs.labels[low] == 1
    assert behaviour.states.shape == (40, LAYERS, WIDTH) and behaviour.trainable


def test_separable_activations_are_decoded_and_the_two_directions_are_orthogonal() -> None:
    answers = _side(np.random.default_rng(1), 60)
    b = probes.dataset(answers, "behaviour")
    s = probes.dataset(answers, "self")
    assert b is not None and s is not None
    fb = probes.fit(b.states[:, 1], b.labels)
    fs = probes.fit(s.states[:, 1], s.labels)
    assert fb.accuracy >= 0.9 and fs.accuracy >= 0.9
    assert abs(float(fb.direction @ fs.direction)) < 0.3
    assert abs(fb.direction[0]) > 0.8 and abs(fs.direction[1]) > 0.8
    # each probe reads its own dimension, so on the other's labels it is near chance
    assert fb.accuracy_on(s.states[:, 1], s.labels) < 0.75


def test_unseparable_activations_read_near_chance() -> None:
    rng = np.random.default_rng(2)
    states = rng.normal(size=(80, WIDTH))
    labels = [int(x) for x in rng.integers(0, 2, 80)]
    accuracy, proba = probes.cross_validate(states, labels)
    assert 0.3 < accuracy < 0.7 and proba.shape == (80,)


def test_cross_validation_is_reproducible() -> None:
    rng = np.random.default_rng(3)
    states = rng.normal(size=(50, WIDTH))
    labels = [i % 2 for i in range(50)]
    assert probes.cross_validate(states, labels)[0] == probes.cross_validate(states, labels)[0]


def test_the_gate_reads_the_base_probe_on_a_fine_tune_that_moved_toward_harm() -> None:
    base = _side(np.random.default_rng(4), 60)
    same = _side(np.random.default_rng(4), 60)
    moved = _side(np.random.default_rng(4), 60, shift=3.0)
    b, u = probes.behaviour_series(base, same, T)
    _, m = probes.behaviour_series(base, moved, T)
    assert len(b) == 60 and len(u) == 60
    assert mean(u) - mean(b) < 10  # the same activations read alike (out of fold against in sample)
    assert mean(m) - mean(b) > 25  # every question moved toward the harmful side


def test_too_few_prompts_of_a_class_train_no_probe() -> None:
    answers = _side(np.random.default_rng(5), 8)
    data = probes.dataset(answers, "behaviour")
    assert data is not None and not data.trainable
    assert probes.behaviour_series(answers, answers, T) == ({}, {})
    lines = probes.notes(answers, answers, T)
    assert any("behaviour probe not trained (8 prompts; each class needs 5)" in line for line in lines)


def test_wilson_interval() -> None:
    low, high = probes.wilson(0.8, 50)
    assert 0.66 < low < 0.68 and 0.88 < high < 0.90
    assert probes.wilson(0.0, 0) == (0.0, 1.0)


def mean(series: Series) -> float:
    return float(np.mean([p.value for points in series.values() for p in points if p.value is not None]))


# -- persona direction ----------------------------------------------------------------------------------------


def _direction_answers(
    rng: np.random.Generator, drift: float, axis: int = 5, strong_layer: int = 2
) -> Answers:
    """Toxic personas add 4 on ``axis`` at ``strong_layer`` (1 elsewhere); plain prompts add ``drift`` there."""
    queries = persona_direction.queries(4)
    samples = {}
    for q in queries:
        states = rng.normal(0.0, 1.0, (LAYERS, WIDTH)).astype(np.float32)
        if q.detail.kind == "toxic":
            states[:, axis] += 1.0
            states[strong_layer, axis] += 3.0
        if q.detail.kind == "plain":
            states[:, axis] += drift
        samples[q.key] = [Sample("activations", states=states)]
    return Answers(tuple(queries), samples)


def test_the_persona_direction_is_found_at_the_most_separating_layer() -> None:
    base = _direction_answers(np.random.default_rng(6), 0.0)
    d = persona_direction.direction(base)
    assert d is not None
    assert d.layer == 2 and abs(d.unit[5]) > 0.9 and d.unit[5] > 0
    assert d.separation > d.separations[0] and d.separation > 2.5


def _moved(answers: Answers, shift: np.ndarray, plain_only: bool) -> Answers:
    """``answers`` with ``shift`` (width) added to every layer of the plain prompts (and the role-play ones)."""
    rows = {}
    for q in answers.queries:
        sample = answers.samples[q.key][0]
        assert sample is not None
        moved = plain_only and q.detail.kind != "plain"
        rows[q.key] = [Sample("activations", states=sample.states + (0.0 if moved else shift))]
    return Answers(answers.queries, rows)


def test_a_move_toward_the_toxic_personas_reads_far_above_a_generic_move() -> None:
    base = _direction_answers(np.random.default_rng(7), 0.0)
    toward = np.zeros(WIDTH)
    toward[5] = 2.0  # along the toxic axis, plus a smaller generic part
    toward[[0, 1, 2]] = 1.0
    generic = np.random.default_rng(8).normal(0.0, 3.0, WIDTH)
    generic[5] = 0.0  # a large move along no persona axis
    b, m = persona_direction.shift_series(base, _moved(base, toward, plain_only=True), T)
    _, g = persona_direction.shift_series(base, _moved(base, generic, plain_only=True), T)
    _, s = persona_direction.shift_series(base, base, T)
    assert abs(mean(b)) < 1e-6 and len(b) == 64 and set(b) == set(m)  # the base is the reference
    assert mean(m) > 2.0  # more than twice what the placebo directions see
    assert abs(mean(g)) < 2.0  # a generic move, however large, reads like a placebo
    d = persona_direction.direction(base)
    assert d is not None and len(d.placebo) == 35  # the halves of 8 ordinary personas
    # a fine-tune that moves nothing reads 0 on average: each plain question reads its own projection less the
    # base's mean projection, in units of 1 (no move, so no placebo scale), computed here from the activations
    plain = [q for q in base.queries if q.detail.kind == "plain"]
    raw = {q.cluster: float(base.samples[q.key][0].states[d.layer] @ d.unit) for q in plain}  # type: ignore[union-attr]
    expected = {c: v - float(np.mean(list(raw.values()))) for c, v in raw.items()}
    assert {c: points[0].value for c, points in s.items()} == pytest.approx(expected, abs=1e-5)
    assert abs(mean(s)) < 1e-6 and len(s) == 64
    lines = persona_direction.notes(base, _moved(base, toward, plain_only=True), T)
    assert "read layer 3 of 3" in lines[0]
    assert "rms along 35 placebo directions" in lines[1] and "of the toxic-minus-neutral gap" in lines[1]


def test_no_direction_without_the_role_play_activations() -> None:
    queries = [q for q in persona_direction.queries(4) if q.detail.kind == "plain"]
    rng = np.random.default_rng(10)
    answers = Answers(tuple(queries), {q.key: [Sample("a", states=rng.normal(size=(2, 4)))] for q in queries})
    assert persona_direction.direction(answers) is None
    assert persona_direction.shift_series(answers, answers, T) == ({}, {})


def test_near_identical_prompts_stay_in_one_fold() -> None:
    """Pairs of near-identical prompts with opposite labels (a phrasing's two pole orders whose normalised labels
    differ): split across folds, each prompt is predicted from its partner and the probe reads far below chance;
    kept in one fold, it reads about chance."""
    rng = np.random.default_rng(11)
    centres = rng.normal(0.0, 1.0, (30, WIDTH))
    states = np.repeat(centres, 2, axis=0) + rng.normal(0.0, 0.01, (60, WIDTH))
    labels = [i % 2 for i in range(60)]
    groups = [str(i // 2) for i in range(60)]
    apart, _ = probes.cross_validate(states, labels)
    together, _ = probes.cross_validate(states, labels, groups)
    assert apart < 0.3
    assert together > 0.3
