"""``python -m pytest_emguard.demo.roleplay_estimators``: the two estimators of role-play S and R side by side on a
real model (default: SmolLM2-135M-Instruct; ``--model DIR`` for another full model directory).

The logit estimator reads each (persona, item) rating distribution over "0".."5" after "Rating: " in one forward
pass; the sampling estimator draws ``--samples`` answers at temperature 1 and parses the first digit 0-5 of each,
as a backend without log-probabilities must.  Both run on the same personas (the first ``--personas`` of the 100)
and all 20 items; the script prints S, R and 1/R of each with 90% intervals over personas (whole personas
resampled), the share of sampled answers that held a digit, and whether the intervals of R overlap.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from pytest_emguard.checks import roleplay
from pytest_emguard.checks.base import Answers, Query
from pytest_emguard.run.read import scale_reading
from pytest_emguard.types import Prompt, Reading, Sample


def _subset(queries: list[Query], personas: int) -> list[Query]:
    keep = {pid for pid, _ in roleplay.personas()[:personas]}
    return [q for q in queries if q.cluster in keep]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pytest_emguard.demo.roleplay_estimators", description=__doc__
    )
    parser.add_argument("--model", type=Path, default=None, help="a full model directory (default: SmolLM2)")
    parser.add_argument("--personas", type=int, default=20, help="personas asked (default: 20 of 100)")
    parser.add_argument("--samples", type=int, default=10, help="sampled answers per cell (default: 10)")
    parser.add_argument("--batch-size", type=int, default=64, help="prompts per batch (default: 64)")
    parser.add_argument("--seed", type=int, default=0, help="run seed (default: 0)")
    args = parser.parse_args(argv)

    from pytest_emguard.backends.base import ModelSpec
    from pytest_emguard.backends.hf import HFBackend, LoadedModel
    from pytest_emguard.demo.models import ensure_smollm2

    model = args.model or ensure_smollm2()
    backend = HFBackend(LoadedModel.load(ModelSpec("full", str(model)), "cpu"), tuned=False, fingerprint="")
    size = args.batch_size

    logit_q = _subset(roleplay.queries(frozenset({"generate", "next_token_logprobs"})), args.personas)
    started = time.monotonic()
    rows: dict[tuple[str, str], list[Sample | None]] = {}
    for i in range(0, len(logit_q), size):
        chunk = logit_q[i : i + size]
        dists = backend.next_token_logprobs([Prompt(q.messages, q.prefix, dict(q.tags)) for q in chunk])
        for q, dist in zip(chunk, dists, strict=True):
            read = scale_reading(dist, q.options)
            value, mass, spread = read["value"], read["mass"], read["spread"]
            reading = Reading(value if isinstance(value, float) else None, float(mass or 0.0),
                              spread if isinstance(spread, float) else None)  # fmt: skip
            rows[q.key] = [Sample("", reading=reading)]
    logit_s = time.monotonic() - started
    logit = roleplay.cells(Answers(tuple(logit_q), rows))

    sampled_q = _subset(roleplay.queries(frozenset({"generate"})), args.personas)
    requests = [r for q in sampled_q for r in q.requests(args.samples, args.seed)]
    started = time.monotonic()
    texts = []
    for i in range(0, len(requests), size):
        texts += [c.text for c in backend.generate(requests[i : i + size])]
    sampling_s = time.monotonic() - started
    answers = iter(texts)
    rows = {q.key: [Sample(next(answers)) for _ in range(args.samples)] for q in sampled_q}
    sampled = roleplay.cells(Answers(tuple(sampled_q), rows))
    held = sum(roleplay.parse_digit(t) is not None for t in texts) / max(1, len(texts))

    print(f"model: {model}; {args.personas} personas x 20 items")
    print(f"logit estimator: {len(logit)} of {len(logit_q)} cells read, {logit_s:.0f} s")
    print(f"sampling estimator: {args.samples} samples a cell, {held:.0%} held a digit 0-5, {len(sampled)} of "
          f"{len(sampled_q)} cells with two or more, {sampling_s:.0f} s")  # fmt: skip
    spans = {}
    for name, found in (("logit", logit), ("sampling", sampled)):
        sigma, r = roleplay.robustness(found)
        s = roleplay.susceptibility(found)
        s_iv, r_iv = roleplay.intervals(found)
        spans[name] = r_iv
        print(f"{name}: S {s if s is None else round(s, 3)}{s_iv}, R {r if r is None else round(r, 3)}{r_iv}, "
              f"1/R {sigma if sigma is None else round(sigma, 3)}")  # fmt: skip
    bounds = [tuple(float(x) for x in span.strip(" []").split(", ")) for span in spans.values() if span]
    if len(bounds) == 2:
        overlap = bounds[0][0] <= bounds[1][1] and bounds[1][0] <= bounds[0][1]
        print(f"the 90% intervals of R {'overlap' if overlap else 'do not overlap'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
