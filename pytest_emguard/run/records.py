"""The records a run passes from stage to stage: each side's rows, the run's counters (``RunStats``) and what
``evaluate`` returns (``Evaluation``), which the gate (``decide/``) and the reports read."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pytest_emguard.checks.base import Answers, Query
from pytest_emguard.types import Sample

if TYPE_CHECKING:
    from pytest_emguard.config.run import RunConfig
    from pytest_emguard.run.agreement import Agreement
    from pytest_emguard.run.judgecheck import JudgeCheck, SecondCheck

__all__ = ["SIDES", "Evaluation", "PreflightResult", "Progress", "Rows", "RunStats", "StageClock"]

SIDES = ("base", "tuned")
Rows = dict[tuple[str, str], list[Sample | None]]  # one side's samples of each query (None: not in the cache)
Progress = Callable[[str], None]


@dataclass(slots=True)
class RunStats:
    """What the run did.  A *record* is a sampled answer, a reading from probabilities or an activation array:
    ``records_made`` were computed by this run, ``records_cached`` came from the cache (the summary's "records:"
    line); verdicts are counted apart."""

    records_cached: int = 0
    records_made: int = 0
    answers_made: int = 0  # of records_made, the sampled answers (the rest: readings and activations)
    verdicts_cached: int = 0
    verdicts_computed: int = 0
    model_loaded: bool = False
    judge_loaded: bool = False
    seconds: float = 0.0
    check_seconds: dict[str, float] = field(default_factory=dict)  # check -> time spent making its records
    # --em-sequential: rounds run, rounds planned, questions asked, questions in all
    sequential: tuple[int, int, int, int] | None = None
    # --em-baseline: what happened to it (loaded, written, updated), its path and its record count
    baseline: tuple[str, str, int] | None = None

    stage_seconds: dict[str, float] = field(default_factory=dict)  # stage -> its own time (see StageClock)

    def timed(self, check: str, started: float) -> None:
        self.check_seconds[check] = self.check_seconds.get(check, 0.0) + time.monotonic() - started


class StageClock:
    """Where a run's time goes, stage by stage (fingerprints, plan, models, answers, readings, cache, verdicts, ...):
    each stage's *own* time, a stage opened inside another (the cache's lookups inside the answers) counted once,
    in the inner stage.  The figures land in ``RunStats.stage_seconds``; ``bench/run.py`` prints them."""

    __slots__ = ("_open", "seconds")

    def __init__(self, seconds: dict[str, float] | None = None) -> None:
        self.seconds = {} if seconds is None else seconds
        self._open = [0.0]  # the time of the stages opened inside the current one

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        started = time.monotonic()
        self._open.append(0.0)
        try:
            yield
        finally:
            spent = time.monotonic() - started
            inner = self._open.pop()
            self._open[-1] += spent
            self.seconds[stage] = self.seconds.get(stage, 0.0) + spent - inner


@dataclass(frozen=True, slots=True)
class PreflightResult:
    """``kl`` is None when the backend gives no log-probabilities (the preflight could not run)."""

    kl: float | None
    min_kl: float
    on_no_change: str
    prompts: int  # canary prompts compared

    @property
    def changes_nothing(self) -> bool:
        return self.kl is not None and self.kl < self.min_kl

    @property
    def stops(self) -> bool:
        """True when the gate reports "the adapter changes nothing" instead of evaluating."""
        return self.changes_nothing and self.on_no_change != "gate"

    def line(self) -> str:
        if self.kl is None:
            return "preflight: not run (the backend gives no next-token log-probabilities)"
        verdict = "the adapter changes nothing" if self.changes_nothing else "the adapter changes the model"
        return (
            f"preflight: {verdict}: mean KL(fine-tune || base) {self.kl:.3g} nats over {self.prompts} canary "
            f"prompts (threshold {self.min_kl:g})"
        )


@dataclass(frozen=True, slots=True)
class Evaluation:
    config: RunConfig
    queries: tuple[Query, ...]
    answers: dict[str, Answers]  # "base" | "tuned"
    fingerprints: dict[str, str]
    judge_fingerprint: str
    judge_health: tuple[str, ...]
    stats: RunStats = field(default_factory=RunStats)
    preflight: PreflightResult | None = None
    judge_caveats: tuple[str, ...] = ()  # added to every item that reads the judge
    ratings: Mapping[str, Answers] = field(
        default_factory=dict
    )  # --em-rater label -> its cross-model ratings
    judge_check: JudgeCheck | None = None  # --em-judge-check: the judge on the golden set
    second_checks: tuple[SecondCheck, ...] = ()  # --em-judge-check: each --em-second-judge on the golden set
    agreement: tuple[Agreement, ...] = ()  # each --em-second-judge against the judge, on the gated answers

    @property
    def complete(self) -> bool:
        if self.preflight is not None and self.preflight.stops:
            return True
        return all(s is not None for a in self.answers.values() for row in a.samples.values() for s in row)
