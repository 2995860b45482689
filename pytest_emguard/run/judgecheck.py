"""``--em-judge-check``: measure whichever judge is configured before the run, and refuse one beyond the
thresholds file's ``judge:`` limits.

The same figures for every kind of judge (generative, API, probe), each read through the judge's verdicts:

- **AUROC** of the judge's harm score against the golden labels (golden set v1: harmful against harmless answers;
  an answer the judge could not score counts as the least harmful, so failing to score a harmful answer costs
  the judge).  A probe judge trains on the golden answers, so its own 5-fold cross-validated AUROC (grouped by
  question) is used instead of an in-sample figure, and the line says so;
- the **unscorable rate**: the share of golden answers the judge gave no score (unscorable or refusal);
- on the held-out sets of ``judge/health.py``: the **style shift** (six styles), the **false positives** on real
  answers labelled harmless, the **injection shift**, and the **coherence agreement** where the judge reads
  coherence.  A probe trained on the real answers (training set v3) reports its out-of-fold figures for them.  A probe trained on the real answers (training set v3) reports its out-of-fold figures for them.

Verdicts go through the record cache under the judge's fingerprint, so a rerun asks the judge nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_emguard.types import Verdict

if TYPE_CHECKING:
    from pytest_emguard.judge import Judge
    from pytest_emguard.judge.health import Health
    from pytest_emguard.run.context import RunContext

__all__ = ["JudgeCheck", "SecondCheck", "auroc", "check_judges", "judge_check", "measure"]

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
    health: Health
    limits: Mapping[str, float]
    real_cv: bool = (
        False  # the real-answer figures are a probe's out-of-fold ones (it trains on those answers)
    )
    figures: dict[str, float] = field(default_factory=dict)

    @property
    def problems(self) -> tuple[str, ...]:
        from pytest_emguard.run.verdicts import health_problems

        out = []
        if self.auroc is None or self.auroc < self.limits["min_auroc"]:
            shown = "n/a" if self.auroc is None else f"{self.auroc:.3f}"
            out.append(f"AUROC {shown} is below judge.min_auroc {self.limits['min_auroc']:g}")
        if self.unscorable / max(self.n, 1) > self.limits["max_unscorable"]:
            out.append(
                f"{self.unscorable} of {self.n} golden answers unscorable, above judge.max_unscorable "
                f"{self.limits['max_unscorable']:.0%}"
            )
        out += [
            p.removeprefix("the judge is not healthy: ")
            for p in health_problems(self.figures, dict(self.limits))
        ]
        return tuple(out)

    @property
    def passed(self) -> bool:
        return not self.problems

    def line(self) -> str:
        from pytest_emguard.judge.health import at_primary

        h = self.health

        def num(v: float | None, fmt: str) -> str:
            return "n/a" if v is None else format(v, fmt)

        verdict = "passed" if self.passed else "REFUSED: " + "; ".join(self.problems)

        coherence = (
            ""
            if h.coherence_agreement is None
            else f", coherence agreement {h.coherence_agreement:.0%} (min {self.limits['min_coherence_agreement']:.0%})"
        )
        return (
            f"judge check on golden set {GOLDEN} (n={self.n}): AUROC {num(self.auroc, '.3f')} ({self.auroc_source}; "
            f"min {self.limits['min_auroc']:g}), unscorable {self.unscorable}/{self.n} (max "
            f"{self.limits['max_unscorable']:.0%}); held out: style shift {num(h.style_shift, '.1f')} points over "
            f"{h.style_n} rewrites (max {self.limits['max_style_shift']:g}), injection shift "
            f"{num(h.injection_shift, '.1f')} points over {h.injection_n} attacks (max "
            f"{self.limits['max_injection_shift']:g}); real answers ({'a batch it never trained on' if self.real_cv else 'held out'}): false positives "
            f"{num(h.real_fpr, '.0%')} of {h.real_harmless} (max {self.limits['max_real_fpr']:.0%}), harmful read "
            f"harmful {num(h.real_tpr, '.0%')} of {h.real_harmful}{at_primary(h.real_fpr_primary, h.real_tpr_primary)}{coherence}: {verdict}"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "golden_set": GOLDEN,
            "n": self.n,
            "auroc": self.auroc,
            "auroc_source": self.auroc_source,
            "unscorable": self.unscorable,
            "health": self.health.to_json(),
            "limits": dict(self.limits),
            "real_source": "held out, never trained on" if self.real_cv else "held out",
            "passed": self.passed,
        }


def _score(v: Verdict) -> float | None:
    return v.score if v.label == "scored" else None


def measure(
    judged: Callable[[Sequence[tuple[str, str]]], list[Verdict]],
    limits: Mapping[str, float],
    own: Callable[[], Mapping[str, Any] | None] = lambda: None,
) -> JudgeCheck:
    """Judge the golden set and the held-out sets through ``judged`` (cached verdicts, in order); ``own``: the
    figures of a judge that trains on labelled data (its ``meta()``, read after judging: judging trains it), whose
    out-of-fold AUROC, and real-answer figures where it trained on the real answers, replace in-sample ones."""
    from pytest_emguard.judge.health import HELD_OUT_REAL, measure_health
    from pytest_emguard.judge.probe import golden_set

    golden = golden_set(GOLDEN)
    scores = [_score(v) for v in judged([(g.question, g.answer) for g in golden])]
    measured = auroc([-1.0 if s is None else s for s in scores], [g.harmful for g in golden])
    meta = own()
    trained_on_real = bool(meta and meta.get("real_cv"))
    # a judge that trains on the real answers is read on the batch it never trained on (in sample, or even out of
    # fold, they flatter it: 11% false positives out of fold, 22% on the new batch)
    health = measure_health(judged, real=HELD_OUT_REAL if trained_on_real else True)
    figures = {
        "style_shift": health.style_shift,
        "real_fpr": health.real_fpr,
        "injection_shift": health.injection_shift,
        "coherence_agreement": health.coherence_agreement,
    }
    return JudgeCheck(
        n=len(golden),
        auroc=float(meta["auroc"]) if meta is not None else measured,
        auroc_source="the probe's 5-fold CV grouped by question: it trains on this set"
        if meta is not None
        else "golden set",
        unscorable=sum(s is None for s in scores),
        health=health,
        limits=dict(limits),
        real_cv=trained_on_real,
        figures={k: v for k, v in figures.items() if v is not None},
    )


def judge_check(ctx: RunContext, judge: Judge | None = None, spec: str = "") -> JudgeCheck | None:
    """--em-judge-check: the figures of the judge, or of ``judge`` (the second judge ``spec``), on the golden set
    (None where the cache lacks verdicts and this run computes nothing)."""
    from pytest_emguard.run.plan import verdict_key
    from pytest_emguard.run.verdicts import judge_answers

    measured = ctx.judge if judge is None else judge
    who = "judge" if judge is None else f"second judge {spec}"

    def judged(pairs: Sequence[tuple[str, str]]) -> list[Verdict]:
        keys = [verdict_key(measured.fingerprint, q, a) for q, a in pairs]
        found = ctx.cache.get_many(keys)
        todo = {k: qa for k, qa in zip(keys, pairs, strict=True) if k not in found}
        if todo and not ctx.compute:
            raise LookupError("verdicts missing")
        if todo:
            ctx.progress(
                f"judge check: the {who} on the golden set and the held-out sets ({len(todo)} answers)"
            )
            found.update(judge_answers(ctx, todo, judge, who))
        return [Verdict.from_json(found[k]) for k in keys]

    try:
        checked = measure(judged, ctx.config.thresholds.judge_block(), measured.meta)
    except LookupError:
        return None
    ctx.progress(checked.line() if judge is None else f"{who}: {checked.line()}")
    return checked


@dataclass(frozen=True, slots=True)
class SecondCheck:
    """A second judge's judge check: its ``--em-second-judge`` spec, its fingerprint and its figures."""

    spec: str
    fingerprint: str
    check: JudgeCheck

    def line(self) -> str:
        return f"second judge {self.spec}: {self.check.line()}"

    def as_json(self) -> dict[str, Any]:
        return {"spec": self.spec, "fingerprint": self.fingerprint, **self.check.as_json()}


def check_judges(
    ctx: RunContext, seconds: Sequence[tuple[str, Judge]]
) -> tuple[JudgeCheck | None, tuple[SecondCheck, ...]]:
    """--em-judge-check on every configured judge: the ``--em-judge`` judge and each second judge (spec, opened
    judge), all measured before any is refused, so one refusal names every judge that fails.  A second judge that
    fails is refused like the first: its agreement figures would be read as evidence about the first judge."""
    from pytest_emguard.errors import ModelError

    first = judge_check(ctx)
    measured = [(spec, judge, judge_check(ctx, judge, spec)) for spec, judge in seconds]
    second = tuple(SecondCheck(spec, judge.fingerprint, c) for spec, judge, c in measured if c is not None)
    failed = [c for c in second if not c.check.passed]
    refused = [] if first is None or first.passed else [("judge", ctx.config.options.judge, first)]
    refused += [("second judge", c.spec, c.check) for c in failed]
    if refused:
        fix = "use a stronger judge, or change the judge: block of the thresholds file in review"
        if failed:
            dropped = ", ".join(f"--em-second-judge={c.spec}" for c in failed)
            fix += f"; a second judge decides nothing: without {dropped} the gate runs on the first alone"
        problem = "\n".join(
            f"the {who} {spec} is refused on the golden set:\n  {c.line()}" for who, spec, c in refused
        )
        raise ModelError("--em-judge-check", problem, fix)
    return first, second
