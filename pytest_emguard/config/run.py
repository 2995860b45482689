"""``RunConfig``: the frozen, pytest-free configuration of one gate run, resolved and validated once.

``Options`` is what the user asked for (command line, ini keys or library call), normalised; ``RunConfig.resolve``
turns it into checked parts: the model spec (files validated, nothing loaded), the judge spec, the registered
checks with their user banks, and the thresholds composed from the checks' blocks.  Every problem is an
``EmguardError`` naming the option or file and the fix.  ``plugin/options.py`` builds ``Options`` from pytest's config;
``run/engine.evaluate(RunConfig)`` runs it (``api.py`` gathers the public names).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_emguard.backends.base import BackendOptions, ModelSpec
from pytest_emguard.checks.base import Check, Item, PlanContext
from pytest_emguard.config.raters import Rater, parse_rater
from pytest_emguard.config.thresholds import Thresholds
from pytest_emguard.errors import ConfigError
from pytest_emguard.judge import JudgeSpec

if TYPE_CHECKING:
    from pytest_emguard.decide.sizing import Design

__all__ = ["DEFAULT_SAMPLES", "Options", "RunConfig"]

DEFAULT_SAMPLES = 10


@dataclass(frozen=True, slots=True)
class Options:
    """What the user asked for.  ``samples=None`` means "not given": the default (10), or a bank file's own
    ``samples_per_paraphrase``."""

    model: str
    judge: str | None
    base: str | None = None
    backend: str = "hf"
    thresholds: str | None = None
    samples: int | None = None
    seed: int = 0
    cache_dir: str = ".emguard_cache"
    device: str = "auto"
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16 (local models)
    batch_size: int = 16
    max_new_tokens: int = 128
    layer_stride: int = 4  # activations after decoder layers N, 2N, ... (probes, persona_direction)
    trust_remote_code: bool = False
    banks: tuple[str, ...] = ()  # "CHECK=PATH", applied in order
    domain: str | None = None  # the adapter's training domain: its harm is gated apart from emergent harm
    raters: tuple[str, ...] = ()  # --em-rater: models that predict the judge's scores of the gated answers
    second_judges: tuple[str, ...] = ()  # --em-second-judge: judges that also read the gated answers
    engine_args: tuple[str, ...] = ()  # --em-engine-arg KEY=VALUE: settings of the vllm engine
    sequential: bool = False  # --em-sequential: sampled questions in rounds, stop once decided
    round_size: int = 16  # questions per round
    checks: tuple[str, ...] = ()  # --em-checks: the checks whose items are collected (empty: all)
    budget: str | None = None  # --em-budget: tokens (200k) or dollars ($5) the first round may spend
    price: str | None = None  # --em-price IN,OUT: USD per million prompt / new tokens
    report: str | None = None  # --em-report DIR: the evidence record and its HTML page are written there
    judge_check: bool = False  # --em-judge-check: the judge on the golden set first; a weak one is refused
    baseline: str | None = None  # --em-baseline FILE: committed base-side records (baseline.py)
    update_baseline: bool = False  # --em-update-baseline: write FILE again from this run
    # the model card this run gates (``pytest model_cards/``): its domain is the default
    card: str | None = None

    @property
    def n_samples(self) -> int:
        return self.samples if self.samples is not None else DEFAULT_SAMPLES


@dataclass(frozen=True, slots=True)
class RunConfig:
    options: Options
    model: ModelSpec
    judge: JudgeSpec
    checks: tuple[Check, ...]
    thresholds: Thresholds
    extra_checks: tuple[tuple[str, object], ...] = field(default=(), repr=False)
    raters: tuple[Rater, ...] = ()
    second_judges: tuple[JudgeSpec, ...] = ()  # --em-second-judge, in the order of options.second_judges

    @classmethod
    def resolve(cls, options: Options, extra_checks: Iterable[tuple[str, object]] = ()) -> RunConfig:
        """Validate everything that can be validated before a model loads.  ``extra_checks`` are (who, check)
        pairs registered by a hook, beside the built-in and entry-point checks."""
        from pytest_emguard.backends import resolve_model
        from pytest_emguard.checks import apply_banks, load_checks

        _check_cache_dir(options.cache_dir)
        _engine_args(options.engine_args)
        _budget(options)
        model = resolve_model(
            options.model, options.base, backend=options.backend, trust_remote_code=options.trust_remote_code
        )
        judge = JudgeSpec.parse(options.judge, options.model)
        extra = tuple(extra_checks)
        checks = apply_banks(load_checks(extra), _banks(options.banks))
        domain = _domain(options, model)
        if domain is not None:
            from pytest_emguard.checks.harmfulness import domain_categories

            name, source = domain
            categories = domain_categories(name, source)
            checks = tuple(c.with_domain(categories, name, source) for c in checks)
        _selected(options.checks, checks)
        thresholds = Thresholds.load(options.thresholds, checks)
        raters = tuple(parse_rater(r) for r in options.raters)
        seconds = _second_judges(options, judge)
        config = cls(options, model, judge, checks, thresholds, extra, raters, seconds)
        config.check_capabilities()
        if options.sequential:
            config.check_sequential()
        return config

    @property
    def backend_options(self) -> BackendOptions:
        return BackendOptions(
            device=self.options.device,
            dtype=self.options.dtype,
            engine_args=_engine_args(self.options.engine_args),
        )

    @property
    def capabilities(self) -> frozenset[str]:
        from pytest_emguard.backends import capabilities_of

        return capabilities_of(self.model)

    @property
    def plan_context(self) -> PlanContext:
        return PlanContext(
            self.options.n_samples, self.options.max_new_tokens, self.capabilities, self.options.layer_stride
        )

    def items(self) -> list[Item]:
        """Every enabled gate item of every check the backend can run, in registration order."""
        lacking = self.unsupported()
        return [
            i
            for c in self.selected()
            if c.name not in lacking
            for i in c.items()
            if self.thresholds.for_item(i).enabled
        ]

    def unsupported(self) -> dict[str, str]:
        """Checks that need a capability this model's backend lacks, with the reason their items are skipped
        (a check that another planned check requires is a usage error instead: ``check_capabilities``)."""
        caps = self.capabilities
        return {
            c.name: f"needs {', '.join(sorted(c.needs - caps))}, which the {self.model.backend!r} backend "
            "does not offer for this model"
            for c in self.checks
            if c.needs - caps
        }

    def skipped_items(self) -> list[tuple[Item, str]]:
        """The enabled items of unsupported checks, each with the reason it is skipped."""
        lacking = self.unsupported()
        return [
            (i, lacking[c.name])
            for c in self.selected()
            if c.name in lacking
            for i in c.items()
            if self.thresholds.for_item(i).enabled
        ]

    def selected(self) -> list[Check]:
        """The checks whose items are collected: those of ``--em-checks``, or all."""
        return [c for c in self.checks if not self.options.checks or c.name in self.options.checks]

    def check(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)

    def planned_checks(self) -> list[Check]:
        """The checks that have an enabled item, and the checks they require (whose queries they read)."""
        wanted = {i.check for i in self.items()}
        for check in self.checks:
            if check.name in wanted:
                wanted.update(check.requires)
        return [c for c in self.checks if c.name in wanted]

    def check_capabilities(self) -> None:
        for check in self.planned_checks():
            lacking = sorted(check.needs - self.capabilities)
            if lacking:
                raise ConfigError(
                    f"check {check.name!r}",
                    f"needs {', '.join(lacking)}, which the {self.model.backend!r} backend does not offer",
                    "choose another backend with --em-backend, or disable the check's items in the thresholds",
                )

    def check_sequential(self) -> None:
        """``--em-sequential`` decides the bounded items on a group-sequential design over the rounds
        (``decide/sequential.py``), whose last look is nearly as tight as the fixed-n gate.  An item whose
        thresholds plan the spread of a harmless change (``planning_share``, ``planning_sd``: the primary
        endpoint) and whose margin is not above the last look's half-width for a fine-tune that changes nothing,
        at that spread and the bank's size, could fail early but never pass, so the mode is refused for it, naming
        the item, its margin, the bank size and what would do.  Items without a planned spread are not refused:
        their spread is only known from the answers."""
        from pytest_emguard.decide.sequential import looks, narrowest, questions_for

        size = self.options.round_size
        for item in self.items():
            t = self.thresholds.for_item(item)
            spread = self._planned_spread(item)
            if spread is None or not all(m.bounds is not None for m in item.metrics):
                continue
            n, answers, design = spread
            sd = (design.within / answers + design.between) ** 0.5
            for metric in item.metrics:
                low, high = metric.bounds  # type: ignore[misc]
                threshold, alpha = float(t[metric.threshold_key]), float(t["alpha"])
                width = narrowest(n, sd, alpha, size, high - low)
                if width < threshold:
                    continue
                need = questions_for(threshold, sd, alpha, size, high - low)
                ways = [f"a bank of at least {need} questions (--em-bank)"] if need is not None else []
                if narrowest(n, design.between**0.5, alpha, size, high - low) < threshold:
                    ways.append("more answers per question (--em-samples)")  # only where answers can do it
                ways.append(f"a margin above {width:.1f} (or disable the item) in a thresholds file")
                raise ConfigError(
                    "--em-sequential",
                    f"with the {n} sampled questions of the bank in rounds of {size} ({len(looks(n, size))} looks), "
                    f"the last look's interval for a fine-tune that changes nothing is still +-{width:.1f} points at "
                    f"the planned spread ({sd:.1f} points per question at {answers} answer(s); {design.source}), not "
                    f"below {item.id}'s margin +{threshold:g}: in rounds it could fail a harmful fine-tune early but "
                    "never pass a benign one",
                    f"give {', '.join(ways)}, or drop --em-sequential for the fixed-n gate",
                )

    def _planned_spread(self, item: Item) -> tuple[int, int, Design] | None:
        """An item with a planned spread (``planning_share``, ``planning_sd``): its sampled questions, the answers
        per question (the median) and the design variance; else None."""
        from pytest_emguard.decide.sizing import planning

        t = self.thresholds.for_item(item)
        if not {"planning_share", "planning_sd"} <= set(t.values):
            return None
        checks = {item.check, *self.check(item.check).requires}
        per_question: dict[str, int] = {}
        for c in self.planned_checks():
            for q in c.queries(self.plan_context) if c.name in checks else ():
                if q.reading == "sample" and q.judged:
                    given = self.options.samples
                    count = given if given is not None else q.n_samples(self.options.n_samples)
                    per_question[q.cluster] = per_question.get(q.cluster, 0) + count
        if not per_question:
            return None
        answers = sorted(per_question.values())[len(per_question) // 2]
        return len(per_question), answers, planning(float(t["planning_share"]), float(t["planning_sd"]))


def _selected(names: Sequence[str], checks: Sequence[Check]) -> None:
    known = [c.name for c in checks]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(
            "--em-checks",
            f"no check is named {', '.join(map(repr, unknown))}",
            f"choose from {', '.join(known)}",
        )


def _second_judges(options: Options, first: JudgeSpec) -> tuple[JudgeSpec, ...]:
    """Each ``--em-second-judge``, parsed as ``--em-judge`` is (never the model under test), and neither the
    ``--em-judge`` judge itself nor given twice (however the path is spelled)."""

    def same(spec: JudgeSpec) -> tuple[str, str, tuple[tuple[str, str], ...]]:
        return spec.scheme, spec.target, tuple(sorted(spec.params.items()))

    out: list[JudgeSpec] = []
    for text in options.second_judges:
        spec = JudgeSpec.parse(text, options.model, "--em-second-judge")
        if same(spec) in {same(s) for s in (first, *out)}:
            what = "the --em-judge judge itself" if same(spec) == same(first) else "given twice"
            raise ConfigError(
                "--em-second-judge", f"{text} is {what}", "name each second judge once, apart from --em-judge"
            )
        out.append(spec)
    return tuple(out)


def _budget(options: Options) -> None:
    from pytest_emguard.config.budget import parse_budget, parse_price

    price = parse_price(options.price)  # its form checked here, not once the cost preflight reads it
    if parse_budget(options.budget).usd is not None and price is None:
        raise ConfigError(
            "--em-budget", f"{options.budget!r} is in dollars but no price is given", "add --em-price IN,OUT"
        )


def _engine_args(values: Sequence[str]) -> tuple[tuple[str, str], ...]:
    out = []
    for value in values:
        key, sep, setting = value.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ConfigError(
                "--em-engine-arg",
                f"{value!r} is not KEY=VALUE",
                "write e.g. --em-engine-arg tensor_parallel_size=2",
            )
        out.append((key.strip(), setting.strip()))
    return tuple(out)


def _check_cache_dir(value: str) -> None:
    """The cache directory is a directory (or can be created as one) that we may write to."""
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise ConfigError(
            "--em-cache-dir",
            f"{path} is a file, not a directory",
            "pass a directory (created if missing), or move the file away",
        )
    existing = next((p for p in (path, *path.absolute().parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ConfigError(
            "--em-cache-dir", f"{existing} is a file, so {path} cannot be created", "pass another directory"
        )
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(
            "--em-cache-dir", f"{existing} is not writable", "pass a directory you may write to"
        )
    _check_store(path / "records.sqlite3")


_SQLITE_MAGIC = b"SQLite format 3\x00"


def _check_store(store: Path) -> None:
    """The cache's record store, where one exists, is an sqlite database: its first 16 bytes are sqlite's
    header (an empty file is a new database).  Read only; a store that is not one is never written to."""
    try:
        with store.open("rb") as fh:
            head = fh.read(len(_SQLITE_MAGIC))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(str(store), f"cannot be read ({exc.strerror})", "check its permissions") from exc
    if head and head != _SQLITE_MAGIC:
        raise ConfigError(
            str(store),
            "the cache's record store is not an sqlite database (damaged, or another file in its place)",
            f"move it aside (mv {store} {store}.damaged) and run again: the records are made anew",
        )


def _domain(options: Options, model: ModelSpec) -> tuple[str, str] | None:
    """The adapter's training domain and where it was read: ``--em-domain``, else the model card beside the
    adapter (``<adapter>/emguard_card.yaml``, written by ``python -m pytest_emguard.finetune train``)."""
    if options.domain:
        return options.domain, "--em-domain"
    if options.card is not None:
        from pytest_emguard.config.cards import load_card

        domain = load_card(options.card).get("domain")
        return (str(domain), f"model card {options.card}") if domain else None
    if model.kind != "adapter":
        return None
    from pytest_emguard.config.cards import adapter_card

    found = adapter_card(model.path)
    if found is None:
        return None
    path, card = found
    return (str(card["domain"]), f"model card {path}") if card.get("domain") else None


def _banks(values: Sequence[str]) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise ConfigError(
                "--em-bank", f"{value!r} is not CHECK=PATH", "write e.g. --em-bank harmfulness=questions.yaml"
            )
        out.setdefault(name.strip(), []).append(Path(os.path.expanduser(path.strip())))
    return out
