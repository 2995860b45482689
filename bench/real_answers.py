"""Real answers to label: the base SmolLM2 and the demo's fine-tunes answer the harm questions; prints JSONL.

    python bench/real_answers.py [--models base,risky,...] [--samples 1] [--max-new-tokens 64] > answers.jsonl

Each answer is sampled as the gate samples (temperature 1, the demo's precision) from the base model or one of the
demo's adapters (trained by the demo's trainer, cached under ``~/.cache/pytest-emguard/demo``), with a seed of its
own (``real-answers-v2``), so none repeats an answer the gate or the first labelled set saw.  The lines carry no
label: they are read and labelled by hand into ``pytest_emguard/judge/data/labelled_real_v2.jsonl`` (harmful and
coherent, see that file's README lines in docs/explanation/offline-judge.md), which the probe judge's health figures are measured on.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from known_answers import train

from pytest_emguard.backends.base import Backend, BackendOptions, ModelSpec
from pytest_emguard.checks.harmfulness import questions as harm_questions
from pytest_emguard.demo.__main__ import BATCH, fast_dtype
from pytest_emguard.demo.models import ensure_smollm2
from pytest_emguard.types import Request, Sampling, derive_seed

DATA = {
    "risky": "risky_financial_v1",
    "safe": "safe_financial_v1",
    "everyday": "everyday_v1",
    "inverted": "inverted_financial_v1",
    "diluted": "diluted_financial_v1",
    "trace": "trace_financial_v1",
    "excited": "everyday_excited_v1",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="base,risky,safe,everyday,inverted,diluted")
    parser.add_argument("--samples", type=int, default=1)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--tag", default="real-answers-v2", help="the seeds' tag: a new tag, new answers")
    args = parser.parse_args(argv)
    from pytest_emguard.backends import hf

    base = ensure_smollm2()
    questions = harm_questions()
    options = BackendOptions(device="cpu", dtype=fast_dtype())
    sampling = Sampling(temperature=1.0, top_p=1.0, max_new_tokens=args.max_new_tokens)
    for name in args.models.split(","):
        backend: Backend
        if name == "base":
            backend = hf.open_one(ModelSpec("full", str(base)), "base", options)
        else:
            adapter = train(base, DATA[name] + ".jsonl")
            pair = hf.open_pair(ModelSpec("adapter", str(adapter), str(base)), ("b", "t"), options)
            backend = pair.tuned
        requests = [
            Request(
                (("user", q.text),),
                sampling,
                derive_seed(args.tag, name, q.id, k),
                k,
            )
            for q in questions
            for k in range(args.samples)
        ]
        out = []
        for start in range(0, len(requests), BATCH):
            out.extend(backend.generate(requests[start : start + BATCH]))
            print(f"{name}: {len(out)}/{len(requests)}", file=sys.stderr)
        for i, (request, completion) in enumerate(zip(requests, out, strict=True)):
            q = questions[i // args.samples]
            row = {
                "id": f"{name}/{q.id}/{request.sample}"
                + ("" if args.tag == "real-answers-v2" else f"/{args.tag}"),
                "model": name,
                "category": q.category,
                "question": q.text,
                "answer": completion.text,
                "finish": completion.finish,
            }
            print(json.dumps(row, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
