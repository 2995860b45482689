"""The check seam: what a check asks (``Query``), which gate items it has (``Item``, ``Metric``) and the
``Check`` base class that ties them together (``ThresholdBlock`` lives with the thresholds and is
re-exported here, so a check imports its whole seam from this module).

A check is one module: a name and version, its queries (built from its bank, with typed structure in
``Query.detail`` instead of strings to parse back), its items, each with one or more metrics (pure functions from
one side's records to per-cluster values, with the harmful direction), and its default thresholds block.  The
gate (``gate.py``) pairs, bootstraps, decides and explains whatever a check returns; it never branches on a
check's name.  Third-party checks register through the ``pytest_emguard.checks`` entry-point group or the
``pytest_emguard_add_checks`` hook (see ``checks/__init__.py``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pytest_emguard.config.thresholds import ThresholdBlock
from pytest_emguard.types import (
    Direction,
    Message,
    Outcome,
    Reduce,
    Request,
    Sample,
    Sampling,
    derive_seed,
)

if TYPE_CHECKING:
    from pytest_emguard.config.thresholds import ItemThreshold
    from pytest_emguard.decide.stats import Decision

__all__ = [
    "Answers",
    "Check",
    "Item",
    "Metric",
    "Part",
    "PlanContext",
    "Point",
    "Query",
    "Series",
    "ThresholdBlock",
    "load_bank",
    "series_by_cluster",
]

Capability = str  # "generate", "next_token_logprobs", "score", "hidden_states" (see backends/base.py)
ReadingKind = Literal["sample", "digits", "choice", "contrast", "scale", "state"]
"""How a query is answered: ``sample`` draws answers with ``generate``; ``digits`` reads one number 0-100 from the
next-token probabilities after ``prefix`` (the exact digit-tree expectation; needs ``next_token_logprobs``);
``choice`` reads 100 x P("A") / (P("A") + P("B")) for the next token after ``prefix`` (a forced choice between two
lettered options; the reading's mass is P("A") + P("B")); ``contrast`` reads 100 x P(options[0]) / sum over the
options of P(option), each the probability of the whole option text as the continuation after ``prefix`` (needs
``score``; always defined, mass 1); ``scale`` reads the distribution over the rating tokens ``options`` (e.g. "0"
to "5") of the next token after ``prefix``, renormalised: its mean (the value), its standard deviation (the
spread) and the probability on those tokens (the mass; under 0.25 it is unscorable); ``state`` reads the residual
stream at the prompt's last token after decoder layers ``stride``, 2 x ``stride``, ... (``Sample.states``; needs
``activations``)."""


@dataclass(frozen=True, slots=True)
class Query:
    """One prompt of a check.  ``cluster`` is the unit the bootstrap resamples (a question; several queries may
    share one, e.g. the paraphrases of a question).  ``detail`` holds the check's own typed structure (a frozen,
    hashable dataclass such as the pole order of a self-rating prompt); the gate never looks inside it."""

    check: str
    version: int
    id: str
    cluster: str
    messages: tuple[Message, ...]
    sampling: Sampling
    judged: bool
    category: str | None = None
    detail: Any = None
    samples: int | None = None  # answers to draw; None = the run's --em-samples
    bank_sha256: str | None = None  # from a user bank (--em-bank): enters the cache key
    tags: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)
    reading: ReadingKind = "sample"
    prefix: str = ""  # the text the answer starts with, for readings from next-token probabilities
    options: tuple[str, ...] = ()  # the continuations a ``contrast`` reading compares (the first is read)
    stride: int = 0  # a ``state`` reading: activations after every ``stride``-th decoder layer

    @property
    def key(self) -> tuple[str, str]:
        return (self.check, self.id)

    @property
    def question(self) -> str:
        """The text shown in reports: the last user message."""
        return next((text for role, text in reversed(self.messages) if role == "user"), "")

    def n_samples(self, default: int) -> int:
        return self.samples if self.samples is not None else default

    def requests(self, samples: int, seed: int) -> list[Request]:
        """``samples`` sampled requests, seeds derived from the run seed, the check and the query: the base and
        the fine-tune get identical requests."""
        tags = {"check": self.check, **self.tags}
        return [
            Request(self.messages, self.sampling, derive_seed(seed, self.check, self.id, k), k, tags)
            for k in range(samples)
        ]


@dataclass(frozen=True, slots=True)
class Point:
    """One sample's value for a metric (None = invalid sample), with the query and answer it came from."""

    value: float | None
    query: Query
    answer: str


Series = Mapping[str, Sequence[Point]]  # cluster -> the values of its samples


@dataclass(frozen=True, slots=True)
class Answers:
    """One side's records (base or fine-tune): each query's samples, None where the cache holds none yet."""

    queries: tuple[Query, ...]
    samples: Mapping[tuple[str, str], Sequence[Sample | None]]

    def asked(self, check: str) -> bool:
        """Whether this side was asked any query of ``check`` (a check's summary says nothing otherwise)."""
        return any(query.check == check for query in self.queries)

    def of(self, check: str) -> Iterator[tuple[Query, Sequence[Sample | None]]]:
        for query in self.queries:
            if query.check == check:
                yield query, self.samples.get(query.key, ())


def series_by_cluster(points: Iterator[Point]) -> dict[str, list[Point]]:
    out: dict[str, list[Point]] = {}
    for point in points:
        out.setdefault(point.query.cluster, []).append(point)
    return out


MetricFn = Callable[["Answers", "ItemThreshold"], Series]
JointFn = Callable[["Answers", "Answers", "ItemThreshold"], tuple[Series, Series]]
NotesFn = Callable[["Answers", "Answers", "ItemThreshold"], tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class Metric:
    """A pure function from one side's records to per-cluster values, and how the gate compares base and fine-tune.

    ``describe`` is formatted with the item's threshold values and ``samples`` (the run's --em-samples).
    ``joint``, when given, replaces ``values``: it sees both sides at once, for a metric whose choice of what to
    compare depends on both (the self-report's pole-order rule); it must treat the two sides alike."""

    name: str
    describe: str
    direction: Direction
    threshold_key: str  # "max_increase" or "max_decrease" style key of the item's thresholds block
    values: MetricFn
    reduce: Reduce = "mean"
    joint: JointFn | None = None
    bounds: tuple[float, float] | None = (
        None  # the range of one per-question value: --em-sequential may stop on it
    )

    def series(self, base: Answers, tuned: Answers, t: ItemThreshold) -> tuple[Series, Series]:
        if self.joint is not None:
            return self.joint(base, tuned, t)
        return self.values(base, t), self.values(tuned, t)


@dataclass(frozen=True, slots=True)
class Part:
    """One metric's decision inside a multi-metric item, with the base and fine-tune means it compared."""

    decision: Decision
    base: float | None
    tuned: float | None


Combine = Callable[[Mapping[str, Part], "ItemThreshold"], tuple[Outcome, str]]
Derive = Callable[[Mapping[str, Part], "ItemThreshold"], Mapping[str, Outcome]]


@dataclass(frozen=True, slots=True)
class Item:
    """One gate item, id ``<check>[<name>]``.  One metric is decided on its own; several are decided each and
    then ``combine``d (the persona item: harm up *and* self-report still aligned).  ``layers`` name blocks of the
    check's thresholds that sit between ``defaults`` and the item's own block (e.g. ``dimension``)."""

    check: str
    name: str
    metrics: tuple[Metric, ...]
    combine: Combine | None = None
    layers: tuple[str, ...] = ()  # block names of this check, or "other_check.block"
    notes: NotesFn | None = None
    caveats: NotesFn | None = (
        None  # reasons to doubt the reading itself, shown beside the persona verdict too
    )
    derive: Derive | None = None  # sub-decisions a combine rule adds beside the metrics' own (persona)

    @property
    def id(self) -> str:
        return f"{self.check}[{self.name}]"


@dataclass(frozen=True, slots=True)
class PlanContext:
    """What a check may use to build its queries: the run's settings and the backend's capabilities (a check
    with a documented fallback picks its estimator from them)."""

    samples: int
    max_new_tokens: int
    capabilities: frozenset[str] = frozenset({"generate"})
    layer_stride: int = 4  # --em-layer-stride: where ``state`` readings read the residual stream


class Check(ABC):
    """A persona-consistency check: subclass it (a frozen dataclass is the usual form).

    Required: ``name`` and ``version`` (attributes or fields), ``items()``, ``queries(plan)`` and ``thresholds()``.
    ``requires`` names checks whose queries it reads (their queries are asked even when only this check's items
    are selected); ``needs`` names the backend capabilities it uses.  The other methods are optional hooks with
    defaults:

    - ``followups(plan, own, other)``: queries built from the first round's answers of one side (``own``), and of
      the other side where the check compares the two (e.g. a self-rating asked right after the model's answer;
      which of two answers it wrote).  They are asked of the ``own`` side only, after the first round is answered
      and judged, and cached like any query (the answers they show are part of their messages, so of their key).
      Default: none;
    - ``summary(base, tuned, t)``: lines for the terminal summary, read with the thresholds of the check's first
      item.  Default: none;
    - ``with_bank(path)``: this check asking the questions of a user bank file (``--em-bank CHECK=PATH``).
      Default: a usage error (the check takes no bank);
    - ``with_domain(categories, domain, source)``: this check knowing the adapter's training domain (its harm
      categories, from ``--em-domain`` or the model card).  Default: the check unchanged."""

    __slots__ = ()

    name: str
    version: int
    requires: tuple[str, ...] = ()
    needs: frozenset[Capability] = frozenset({"generate"})

    @abstractmethod
    def items(self) -> Sequence[Item]: ...

    @abstractmethod
    def queries(self, plan: PlanContext) -> Sequence[Query]: ...

    @abstractmethod
    def thresholds(self) -> ThresholdBlock: ...

    def followups(self, plan: PlanContext, own: Answers, other: Answers) -> Sequence[Query]:
        return ()

    def summary(self, base: Answers, tuned: Answers, t: ItemThreshold) -> tuple[str, ...]:
        return ()

    def with_bank(self, path: Path) -> Check:
        from pytest_emguard.errors import ConfigError

        raise ConfigError(
            f"--em-bank {self.name}={path}",
            f"the {self.name} check takes no user bank",
            "remove the option (harm questions come from --em-bank harmfulness=FILE)",
        )

    def with_domain(self, categories: frozenset[str], domain: str = "", source: str = "") -> Check:
        return self


NUMBER_0_100: Mapping[str, Any] = {"type": "number", "minimum": 0, "maximum": 100}


def load_bank(name: str) -> Any:
    import yaml

    return yaml.safe_load(
        resources.files("pytest_emguard.checks").joinpath(f"data/{name}").read_text("utf-8")
    )
