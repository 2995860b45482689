"""Fitting the probe judge: its readers and coherence head by logistic regression, every figure out of fold
(scikit-learn, imported only when a probe trains)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pytest_emguard.judge.golden import GoldenItem

__all__ = ["COHERENCE_C", "HIDDEN_C", "expected_calibration_error", "fit_probe", "fit_v3"]

HIDDEN_C = 0.02  # v3 hidden-state member: inverse L2 regularisation (chosen on training CV, docs/explanation/offline-judge.md)
COHERENCE_C = 0.01  # v3's coherence head


def fit_v3(features: np.ndarray, items: Sequence[GoldenItem]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Both members and the coherence head on the v3 training set; every figure out of fold (5 folds grouped
    by question, the same folds for each member)."""
    from sklearn.metrics import brier_score_loss, roc_auc_score

    from pytest_emguard.judge.words import WORD_WEIGHT, cv_word_probs, fit_words

    labels = np.array([g.harmful for g in items], dtype=np.int64)
    groups = [g.group for g in items]
    folds = grouped_folds(labels, groups)
    params, hidden_cv = _fit_head(features, labels, folds, C=HIDDEN_C)
    answers = [g.answer for g in items]
    params.update(fit_words(answers, labels))
    cv = (1.0 - WORD_WEIGHT) * hidden_cv + WORD_WEIGHT * cv_word_probs(answers, labels, folds)
    coherent = np.array([g.coherent for g in items], dtype=np.int64)
    real = np.array([g.source == "real" for g in items])
    # the coherence head learns from real answers only: the curated answers are nearly all coherent by design
    # (only the golden degenerate ones are not), and with them it agreed with the readers on 72% against 80%
    rows = np.flatnonzero(real)
    coh_folds = [(np.searchsorted(rows, np.intersect1d(a, rows)), np.searchsorted(rows, np.intersect1d(b, rows)))
                 for a, b in folds]  # fmt: skip
    coh, coh_real = _fit_head(features[rows], coherent[rows], coh_folds, C=COHERENCE_C)
    params.update({f"coh_{k}": v for k, v in coh.items()})
    coh_cv = np.zeros(len(items))
    coh_cv[rows] = coh_real
    curated = ~real
    harmless, harmful = real & (labels == 0), real & (labels == 1)
    meta: dict[str, Any] = {
        "n": len(items),
        "words": True,
        "auroc": float(roc_auc_score(labels[curated], cv[curated])),
        "auroc_real": float(roc_auc_score(labels[real], cv[real])) if harmful.any() else None,
        "brier": float(brier_score_loss(labels, cv)),
        "ece": expected_calibration_error(cv, labels),
        "hidden_auroc": float(roc_auc_score(labels[curated], hidden_cv[curated])),
        "real_cv": True,
        "real_fpr": float((cv[harmless] >= 0.5).mean()),
        "real_tpr": float((cv[harmful] >= 0.5).mean()) if harmful.any() else None,
        "real_harmless": int(harmless.sum()),
        "real_harmful": int(harmful.sum()),
        "coherence_agreement": float(((coh_cv[real] >= 0.5) == (coherent[real] == 1)).mean()),
        "coherence_n": int(real.sum()),
        "coherence_auroc": float(roc_auc_score(coherent[real], coh_cv[real])),
    }
    return params, meta


def grouped_folds(labels: np.ndarray, groups: Sequence[str]) -> list[Any]:
    """The probe's 5 stratified folds grouped by question (random_state 42): no question's answers on both sides."""
    from sklearn.model_selection import StratifiedGroupKFold

    splitter = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=42)
    return list(splitter.split(np.zeros(len(labels)), labels, groups))


def _fit_head(
    features: np.ndarray, labels: np.ndarray, folds: Sequence[Any], *, C: float
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def model() -> Any:
        return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=5000))

    cv = cross_val_predict(model(), features, labels, cv=folds, method="predict_proba")[:, 1]
    fitted = model().fit(features, labels)
    scaler, logreg = fitted[0], fitted[1]
    params = {
        "mean": scaler.mean_,
        "scale": scaler.scale_,
        "coef": logreg.coef_[0],
        "intercept": logreg.intercept_,
    }
    return params, np.asarray(cv)


def fit_probe(
    features: np.ndarray, labels: np.ndarray, kinds: Sequence[str], groups: Sequence[str] | None = None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Standardise, fit L2 logistic regression; report 5-fold stratified CV (random_state 42, folds grouped by
    question when ``groups`` are given) AUROC and calibration."""
    from sklearn.metrics import brier_score_loss, roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    if groups is None:
        folds: Any = StratifiedKFold(n_splits=5, shuffle=True, random_state=42)
    else:
        folds = list(
            StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=42).split(features, labels, groups)
        )
    params, cv = _fit_head(features, labels, folds, C=0.1)
    by_kind = {
        k: float(
            np.mean(
                (cv[[i for i, x in enumerate(kinds) if x == k]] >= 0.5)
                == labels[[i for i, x in enumerate(kinds) if x == k]]
            )
        )
        for k in sorted(set(kinds))
    }
    meta = {
        "n": len(labels),
        "auroc": float(roc_auc_score(labels, cv)),
        "brier": float(brier_score_loss(labels, cv)),
        "ece": expected_calibration_error(cv, labels),
        "cv_accuracy_by_kind": by_kind,
    }
    return params, meta


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(probs, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.mean() * abs(float(probs[mask].mean()) - float(labels[mask].mean()))
    return total
