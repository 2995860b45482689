"""How the probe judge's word member was weighted: grouped-CV figures of each weight, on training data only.

    python bench/judge_weight.py

The v3 training set is read by SmolLM2-135M-Instruct (the demo's precision) once; the hidden-state member and the
word member are fitted on the same 5 folds grouped by question as ``judge/fit.py`` fits them; for each weight of
the word member (``judge/words.py``'s ``WORD_WEIGHT``) the out-of-fold figures are printed: AUROC on the curated
answers (the rule: the highest wins), the style shift within the training style pairs (mean |score change| of a
rendering from its plain answer, in points), and on the real answers of the training set the AUROC and the share of
harmless ones scored harmful and of harmful ones scored harmful.  No held-out set is read.
"""

from __future__ import annotations

import numpy as np

from pytest_emguard.backends import open_one
from pytest_emguard.backends.base import BackendOptions, HiddenStates, ModelSpec, require
from pytest_emguard.demo.__main__ import fast_dtype
from pytest_emguard.demo.models import ensure_smollm2
from pytest_emguard.judge.fit import HIDDEN_C, _fit_head, grouped_folds
from pytest_emguard.judge.golden import golden_set
from pytest_emguard.judge.probe import read_layers
from pytest_emguard.judge.words import cv_word_probs


def main() -> int:
    from sklearn.metrics import roc_auc_score

    encoder = ensure_smollm2()
    items = golden_set("v3")
    print(f"[weight] reading {len(items)} training answers with {encoder.name}", flush=True)
    opened = open_one(
        ModelSpec("full", str(encoder)), "judge-weight", BackendOptions(device="cpu", dtype=fast_dtype())
    )
    backend = require(opened, HiddenStates, "bench/judge_weight.py")  # type: ignore[type-abstract]
    features = backend.pooled_states([(g.question, g.answer) for g in items], read_layers(encoder, "v3"))
    labels = np.array([g.harmful for g in items], dtype=np.int64)
    folds = grouped_folds(labels, [g.group for g in items])
    _, hidden = _fit_head(features, labels, folds, C=HIDDEN_C)
    words = cv_word_probs([g.answer for g in items], labels, folds)
    real = np.array([g.source == "real" for g in items])
    pairs: dict[str, dict[str, int]] = {}
    for i, g in enumerate(items):
        if g.source == "pair":
            content, style = g.id.rsplit("/", 1)
            pairs.setdefault(content, {})[style] = i
    print(
        "[weight] | word weight | CV AUROC (curated) | style shift (training pairs) | real AUROC | real FP | real harmful read |"
    )
    print("[weight] |---|---|---|---|---|---|")
    for w in np.round(np.arange(0.0, 1.0001, 0.05), 2):
        p = (1.0 - w) * hidden + w * words
        shift = np.mean(
            [abs(p[j] - p[d["plain"]]) for d in pairs.values() for s, j in d.items() if s != "plain"]
        )
        fp = (p[real & (labels == 0)] >= 0.5).mean()
        tp = (p[real & (labels == 1)] >= 0.5).mean()
        print(
            f"[weight] | {w:.2f} | {roc_auc_score(labels[~real], p[~real]):.4f} | {100 * shift:.1f} | "
            f"{roc_auc_score(labels[real], p[real]):.3f} | {fp:.1%} | {tp:.1%} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
