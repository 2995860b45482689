"""``--em-judge-check``: measure whichever judge is configured on the package's labelled golden set before the
run, and refuse one below the thresholds file's minimums (``judge:`` block).

Three figures, the same for every kind of judge (generative, API, probe):

- **AUROC** of the judge's harm score against the golden labels (harmful against harmless answers; an answer the
  judge could not score counts as the least harmful, so failing to score a harmful answer costs the judge).  A
  probe judge is trained on this very set, so its own 5-fold cross-validated AUROC (grouped by question) is used
  instead of an in-sample figure, and the line says so;
- the **unscorable rate**: the share of golden answers the judge gave no score (unscorable or refusal);
- the **style shift**: the mean |score change| when the same answer is rewritten only in style (the style suite).

Verdicts go through the record cache under the judge's fingerprint, so a rerun asks the judge nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from pytest_emguard.types import Verdict

if TYPE_CHECKING:
    from pytest_emguard.run.context import RunContext

__all__ = ["JudgeCheck", "auroc", "judge_check", "measure"]

GOLDEN = "v1"


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """The probability that a random harmful answer outscores a random harmless one (ties count one half)."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not pos or not neg:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


@dataclass(frozen=True, slots=True)
class JudgeCheck:
    n: int
    auroc: float | None
    auroc_source: str  # "golden set" or the probe's "5-fold CV"
    unscorable: int
    style_shift: float | None
    style_n: int
    min_auroc: float
    max_unscorable: float  # a share, 0-1
    max_style_shift: float

    @property
    def problems(self) -> tuple[str, ...]:
        out = []
        if self.auroc is None or self.auroc < self.min_auroc:
            shown = "n/a" if self.auroc is None else f"{self.auroc:.3f}"
            out.append(f"AUROC {shown} is below judge.min_auroc {self.min_auroc:g}")
        if self.unscorable / max(self.n, 1) > self.max_unscorable:
            out.append(
                f"{self.unscorable} of {self.n} golden answers unscorable, above judge.max_unscorable "
                f"{self.max_unscorable:.0%}"
            )
        if self.style_shift is not None and self.style_shift > self.max_style_shift:
            out.append(
                f"style shift {self.style_shift:.1f} points is above judge.max_style_shift {self.max_style_shift:g}"
            )
        return tuple(out)

    @property
    def passed(self) -> bool:
        return not self.problems

    def line(self) -> str:
        shown = "n/a" if self.auroc is None else f"{self.auroc:.3f}"
        shift = "n/a" if self.style_shift is None else f"{self.style_shift:.1f}"
        verdict = "passed" if self.passed else "REFUSED: " + "; ".join(self.problems)
        return (
            f"judge check on golden set {GOLDEN} (n={self.n}): AUROC {shown} ({self.auroc_source}; min "
            f"{self.min_auroc:g}), unscorable {self.unscorable}/{self.n} (max {self.max_unscorable:.0%}), style "
            f"shift {shift} points over {self.style_n} rewrites (max {self.max_style_shift:g}): {verdict}"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "golden_set": GOLDEN,
            "n": self.n,
            "auroc": self.auroc,
            "auroc_source": self.auroc_source,
            "unscorable": self.unscorable,
            "style_shift": self.style_shift,
            "style_n": self.style_n,
            "min_auroc": self.min_auroc,
            "max_unscorable": self.max_unscorable,
            "max_style_shift": self.max_style_shift,
            "passed": self.passed,
        }


def _style_rows() -> list[dict[str, Any]]:
    text = resources.files("pytest_emguard.judge").joinpath("data/style_suite_v1.jsonl").read_text("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _score(v: Verdict) -> float | None:
    return v.score if v.label == "scored" else None


def measure(
    judged: Callable[[Sequence[tuple[str, str]]], list[Verdict]],
    limits: Mapping[str, float],
    cv: Callable[[], float | None] = lambda: None,
) -> JudgeCheck:
    """Judge the golden set and the style suite through ``judged`` (cached verdicts, in order); ``cv``: the
    judge's own held-out AUROC where it trains on the golden set (read after judging: judging trains it)."""
    from pytest_emguard.judge.probe import golden_set

    golden = golden_set(GOLDEN)
    rows = _style_rows()
    styles = sorted(rows[0]["styles"]) if rows else []
    style_pairs = [(r["question"], a) for r in rows for a in [r["answer"], *(r["styles"][s] for s in styles)]]
    verdicts = judged([(g.question, g.answer) for g in golden] + style_pairs)
    gold, style = verdicts[: len(golden)], verdicts[len(golden) :]
    scores = [_score(v) for v in gold]
    measured = auroc([-1.0 if s is None else s for s in scores], [g.harmful for g in golden])
    shifts = []
    width = len(styles) + 1
    for i in range(len(rows)):
        group = [_score(v) for v in style[i * width : (i + 1) * width]]
        if group[0] is None:
            continue
        shifts += [abs(s - group[0]) for s in group[1:] if s is not None]
    cv_auroc = cv()
    return JudgeCheck(
        n=len(golden),
        auroc=cv_auroc if cv_auroc is not None else measured,
        auroc_source="the probe's 5-fold CV grouped by question: it trains on this set"
        if cv_auroc is not None
        else "golden set",
        unscorable=sum(s is None for s in scores),
        style_shift=sum(shifts) / len(shifts) if shifts else None,
        style_n=len(shifts),
        min_auroc=float(limits["min_auroc"]),
        max_unscorable=float(limits["max_unscorable"]),
        max_style_shift=float(limits["max_style_shift"]),
    )


def judge_check(ctx: RunContext) -> JudgeCheck | None:
    """--em-judge-check: the judge's figures on the golden set (None where the cache lacks verdicts and this run
    computes nothing)."""
    from pytest_emguard.run.plan import verdict_key
    from pytest_emguard.run.verdicts import judge_answers

    def judged(pairs: Sequence[tuple[str, str]]) -> list[Verdict]:
        keys = [verdict_key(ctx.judge.fingerprint, q, a) for q, a in pairs]
        found = ctx.cache.get_many(keys)
        todo = {k: qa for k, qa in zip(keys, pairs, strict=True) if k not in found}
        if todo and not ctx.compute:
            raise LookupError("verdicts missing")
        if todo:
            ctx.progress(
                f"judge check: the judge on the golden set and the style suite ({len(todo)} answers)"
            )
            found.update(judge_answers(ctx, todo))
        return [Verdict.from_json(found[k]) for k in keys]

    def cv() -> float | None:
        figures = ctx.judge.meta()
        return None if figures is None else float(figures["auroc"])

    try:
        checked = measure(judged, ctx.config.thresholds.judge_block(), cv)
    except LookupError:
        return None
    ctx.progress(checked.line())
    return checked
