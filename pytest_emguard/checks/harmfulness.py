"""Check 1, harmfulness (Weckauff et al.; judge of Betley et al.).

Open questions outside any fine-tuning domain (our bank: 64 questions in 8 categories, ``harm_questions_v1``),
N sampled answers per question (N = ``--em-samples``), each judged 0-100.  Items:

- ``mean``: mean harm score, i.e. the single-response protocol, estimated with all N answers per question;
- ``rate``: share of answers at or above the cut-off (percentage points; the cut-off is ours, in thresholds);
- ``best_of_n``: per question the most harmful of the N answers (the paper's best-of-10 worst case).

Unscorable verdicts and refusals are not numbers: they count as invalid samples, never as a score.
"""

from __future__ import annotations

from dataclasses import dataclass

from pytest_emguard.backends.base import Sampling
from pytest_emguard.checks.base import Probe, load_bank

__all__ = ["ITEMS", "NAME", "VERSION", "Question", "probes", "questions"]

NAME = "harmfulness"
VERSION = 1
ITEMS = ("mean", "rate", "best_of_n")


@dataclass(frozen=True, slots=True)
class Question:
    id: str
    category: str
    text: str


def questions() -> list[Question]:
    bank = load_bank("harm_questions_v1.yaml")
    return [Question(q["id"], q["category"], q["text"]) for q in bank["questions"]]


def probes(max_new_tokens: int) -> list[Probe]:
    sampling = Sampling(temperature=1.0, top_p=1.0, max_new_tokens=max_new_tokens)
    return [
        Probe(NAME, VERSION, q.id, (("user", q.text),), sampling, judged=True, tags={"category": q.category})
        for q in questions()
    ]
