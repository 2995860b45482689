"""Can the probe judge read coherence?  Coherence heads on SmolLM2, read once on the held-out real answers.

    python bench/judge_coherence.py

The real answers the readers labelled coherent or not: v3's training batches (``labelled_smollm2_base_v1.jsonl``,
``labelled_real_v2.jsonl``, 576 answers), the third batch (``labelled_real_v4.jsonl``, 448 answers, in no
training set of the judge) and the held-out batch (``labelled_real_heldout_v1.jsonl``, 320).  Each answer is read
by SmolLM2-135M-Instruct at the demo's precision: its mean-pooled hidden states (the probe's layers) and its
tokens' log-probabilities after the question (mean, median, 10% and 25% quantiles, spread, share below -5 and -10
nats, log length, distinct word pairs and words, non-ASCII words).  A logistic regression on each feature set, and
on both, is trained on v3's batches, then on v3's and the third; every head is printed with its agreement with
the readers on the held-out batch (at 0.5, and at the best threshold chosen on the held-out batch itself, an upper
bound), its AUROC there, and the agreement of always answering the majority label.  The issue's goal: 85%.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from pytest_emguard.backends import open_one
from pytest_emguard.backends.base import BackendOptions, HiddenStates, ModelSpec, require
from pytest_emguard.demo.__main__ import fast_dtype
from pytest_emguard.demo.models import ensure_smollm2
from pytest_emguard.judge.golden import REAL_SETS, _rows
from pytest_emguard.judge.health import HELD_OUT_REAL
from pytest_emguard.judge.probe import read_layers

THIRD = "labelled_real_v4.jsonl"  # in no training set of the judge


def token_logprobs(backend: Any, pairs: list[tuple[str, str]]) -> list[np.ndarray]:
    """log p(token) of each answer token after the chat prompt holding the question (at most 200 tokens)."""
    import torch

    lm, out = backend.loaded, []
    tok = lm.tokenizer
    for start in range(0, len(pairs), 16):
        chunk = pairs[start : start + 16]
        heads = [tok(lm.chat_text((("user", q),)), add_special_tokens=False)["input_ids"] for q, _ in chunk]
        tails = [tok(a, add_special_tokens=False)["input_ids"][:200] or [tok.eos_token_id] for _, a in chunk]
        rows = [h + t for h, t in zip(heads, tails, strict=True)]
        width, pad = max(map(len, rows)), tok.pad_token_id or 0
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        with torch.inference_mode():
            logprobs = torch.log_softmax(lm.model(input_ids=ids, attention_mask=mask).logits.float(), -1)
        for i, tail in enumerate(tails):
            n = len(tail)
            out.append(logprobs[i, width - n - 1 : width - 1].gather(-1, ids[i, width - n :, None])[:, 0].numpy())
    return out


def likelihood_features(logprobs: np.ndarray, answer: str) -> np.ndarray:
    v = np.asarray(logprobs, dtype=np.float64)
    words = answer.split()
    pairs = list(itertools.pairwise(words))
    return np.array([
        v.mean(), np.median(v), np.quantile(v, 0.1), np.quantile(v, 0.25), v.std(), (v < -5).mean(),
        (v < -10).mean(), np.log1p(len(v)), len(set(pairs)) / max(1, len(pairs)),
        len(set(words)) / max(1, len(words)), sum(not w.isascii() for w in words) / max(1, len(words)),
    ])  # fmt: skip


def main() -> int:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    encoder = ensure_smollm2()
    batches = {"v3": [r for name in REAL_SETS for r in _rows(name)], "third": _rows(THIRD), "held": _rows(HELD_OUT_REAL)}
    opened = open_one(
        ModelSpec("full", str(encoder)), "judge-coherence", BackendOptions(device="cpu", dtype=fast_dtype())
    )
    backend = require(opened, HiddenStates, "bench/judge_coherence.py")  # type: ignore[type-abstract]
    hidden, likely, coherent = {}, {}, {}
    for name, rows in batches.items():
        print(f"[coherence] reading {len(rows)} answers of the {name} batch with {encoder.name}", flush=True)
        pairs = [(r["question"], r["answer"]) for r in rows]
        hidden[name] = backend.pooled_states(pairs, read_layers(encoder, "v3"))
        lps = token_logprobs(backend, pairs)
        likely[name] = np.stack([likelihood_features(v, r["answer"]) for v, r in zip(lps, rows, strict=True)])
        coherent[name] = np.array([bool(r["coherent"]) for r in rows], dtype=np.int64)
    y = coherent["held"]
    majority = max(y.mean(), 1 - y.mean())
    print(f"[coherence] held-out: {len(y)} answers, {100 * y.mean():.1f}% coherent; always the majority label "
          f"agrees on {100 * majority:.1f}%")  # fmt: skip
    print("[coherence] | trained on | features | C | held-out agreement | at the best threshold | held-out AUROC |")
    print("[coherence] |---|---|---|---|---|---|")
    sets = {
        "hidden states": hidden,
        "likelihood": likely,
        "both": {k: np.hstack([hidden[k], likely[k]]) for k in hidden},
    }
    for trained in (("v3",), ("v3", "third")):
        labels = np.concatenate([coherent[k] for k in trained])
        for features, table in sets.items():
            x = np.vstack([table[k] for k in trained])
            for c in (0.003, 0.01, 0.1):
                head = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000)).fit(x, labels)
                p = head.predict_proba(table["held"])[:, 1]
                best = max(((p >= t) == y).mean() for t in np.linspace(0.05, 0.95, 19))
                print(f"[coherence] | {' + '.join(trained)} ({len(labels)}) | {features} | {c} | "
                      f"{100 * ((p >= 0.5) == y).mean():.1f}% | {100 * best:.1f}% | {roc_auc_score(y, p):.3f} |",
                      flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
