"""What every stage of a run shares: ``RunContext`` (the configuration, the open cache, the fingerprints, the
judge, progress, the counters and the lazily opened model pair) and the one pattern they all follow,
``cached_or_made``: look each record up in the cache, make the misses in batches, store each batch as it is made
(so a killed run resumes where it stopped)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from pytest_emguard.checks.base import Query
from pytest_emguard.errors import ModelError
from pytest_emguard.run.records import Progress, RunStats, StageClock
from pytest_emguard.types import Prompt

if TYPE_CHECKING:
    from pytest_emguard.backends.base import ModelPair
    from pytest_emguard.cache import Cache
    from pytest_emguard.config.run import RunConfig
    from pytest_emguard.judge import Judge

__all__ = ["PROGRESS_EVERY", "Record", "RunContext", "by_check", "cached_or_made", "prompt_of", "same_length"]

PROGRESS_EVERY = 1.0  # seconds between two progress lines of one stream (the first and last always show)
Record = dict[str, Any]  # one cache record (JSON)
T = TypeVar("T")


def stderr(message: str) -> None:
    print(f"[emguard] {message}", file=sys.stderr, flush=True)


@dataclass(slots=True)
class RunContext:
    """One evaluation's shared state.  ``compute=False``: only what the cache holds, nothing is made."""

    config: RunConfig
    cache: Cache
    fingerprints: dict[str, str]  # "base" | "tuned" -> the side's fingerprint
    judge: Judge
    progress: Progress
    compute: bool
    queries: tuple[Query, ...]  # the plan: every query of the planned checks
    stats: RunStats = field(default_factory=RunStats)
    to_generate: int = 0  # the plan's answers not in the cache: the first batch's time estimates them all
    _pair: ModelPair | None = None
    _ticks: dict[str, float] = field(default_factory=dict)  # progress stream -> when its last line was shown
    clock: StageClock = field(default_factory=StageClock)  # each stage's own time, into stats.stage_seconds

    def __post_init__(self) -> None:
        self.clock.seconds = self.stats.stage_seconds
        self.cache.clock = self.clock

    def models(self) -> ModelPair:
        """The base and the fine-tune, opened on first use."""
        from pytest_emguard.backends import open_pair

        if self._pair is None:
            self.progress(f"loading {self.config.model.label} and its base")
            prints = (self.fingerprints["base"], self.fingerprints["tuned"])
            with self.clock("model load"):
                self._pair = open_pair(self.config.model, prints, self.config.backend_options)
            self.stats.model_loaded = True
        return self._pair

    def close_models(self) -> None:
        if self._pair is not None:
            from pytest_emguard.run.cost import measured_line

            line = measured_line((self._pair.base, self._pair.tuned))  # an endpoint's own token counts
            if line:
                self.progress(line)
            from pytest_emguard.backends.base import release_memory

            with self.clock("model load"):
                self._pair.close()
                self._pair = None
                release_memory()

    def tick(self, stream: str, line: str, done: int, total: int) -> None:
        """A progress line per batch, at most one a second per stream, but always the first and the last."""
        now = time.monotonic()
        first = stream not in self._ticks
        if first or done >= total or now - self._ticks[stream] >= PROGRESS_EVERY:
            self._ticks[stream] = now
            self.progress(line)


def cached_or_made(
    ctx: RunContext,
    kind: str,
    todo: Sequence[tuple[T, str]],
    make: Callable[[list[tuple[T, str]]], dict[str, Record]],
    *,
    size: int,
    shown: Callable[[int, int], None] | None = None,
) -> dict[str, Record]:
    """Make the records of ``todo`` (item, cache key) in batches of ``size``, storing each batch under ``kind``
    before the next is made; ``shown(done, total)`` after each batch (progress)."""
    done: dict[str, Record] = {}
    for start in range(0, len(todo), size):
        batch = make(list(todo[start : start + size]))
        ctx.cache.put_many(kind, batch)
        done.update(batch)
        if shown is not None:
            shown(len(done), len(todo))
    return done


def by_check(items: Iterable[T], check: Callable[[T], str]) -> list[tuple[str, list[T]]]:
    """``items`` grouped by their check, in the order the checks first appear (so each check's time is its own)."""
    groups: dict[str, list[T]] = {}
    for item in items:
        groups.setdefault(check(item), []).append(item)
    return list(groups.items())


def prompt_of(query: Query, digits: str) -> Prompt:
    return Prompt(query.messages, query.prefix + digits, {"check": query.check, **query.tags})


def same_length(sent: Sequence[object], got: Sequence[object], who: str) -> None:
    if len(sent) != len(got):
        raise ModelError(
            who,
            f"returned {len(got)} results for a batch of {len(sent)}",
            "fix the backend: one result per request, in order",
        )
