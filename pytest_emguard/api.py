"""``evaluate(RunConfig)``: the library entry point, no pytest needed.

Phase one of a run: build the plan of every query the checks need, look each answer up in the cache, send the
misses to the backend in batches (stored after each batch, so a killed run resumes), judge what needs judging
(stored likewise).  Phase two asks each side the follow-up queries that checks build from that side's own
answers (``followups``: e.g. a self-rating asked right after the model's answer), the same way, and returns
every record.  Models and judges load only if something is missing, and the
fingerprints are computed from file contents without importing torch: a fully cached rerun loads no model
library (scikit-learn still fits the probes on the cached activations when the summary is written).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from pytest_emguard.backends.base import ModelPair, NextTokenLogprobs, PartialBatch
from pytest_emguard.cache import Cache, cache_key
from pytest_emguard.checks.base import Answers, Check, Query
from pytest_emguard.config import RunConfig
from pytest_emguard.errors import ModelError
from pytest_emguard.judge import Judge, JudgeContext, open_judge
from pytest_emguard.preflight import PreflightResult
from pytest_emguard.types import Completion, Prompt, Reading, Request, Sample, Verdict

if TYPE_CHECKING:
    from pytest_emguard.judgecheck import JudgeCheck

__all__ = ["RUN_LOG", "SIDES", "Evaluation", "RunStats", "evaluate", "log_run", "package_versions", "plan"]

SIDES = ("base", "tuned")
TOP_K = 20  # next-token log-probabilities read per step of a digit tree
MIN_BRANCH = (
    1e-3  # digit prefixes less likely than this are not expanded (moves a rating by < 0.1 point each)
)
Progress = Callable[[str], None]
PROGRESS_EVERY = 1.0  # seconds between two progress lines of one stream (the first and last always show)


@dataclass(slots=True)
class RunStats:
    answers_cached: int = 0
    answers_generated: int = 0
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

    def timed(self, check: str, started: float) -> None:
        self.check_seconds[check] = self.check_seconds.get(check, 0.0) + time.monotonic() - started


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

    @property
    def complete(self) -> bool:
        if self.preflight is not None and self.preflight.stops:
            return True
        return all(s is not None for a in self.answers.values() for row in a.samples.values() for s in row)


def planned_checks(config: RunConfig) -> list[Check]:
    """The checks that have an enabled item, and the checks they require."""
    wanted = {i.check for i in config.items()}
    for check in config.checks:
        if check.name in wanted:
            wanted.update(check.requires)
    return [c for c in config.checks if c.name in wanted]


def plan(config: RunConfig) -> tuple[Query, ...]:
    """Every query of the checks that have an enabled item, and of the checks they require."""
    context = config.plan_context
    return tuple(q for c in planned_checks(config) for q in c.queries(context))


def samples_for(config: RunConfig, query: Query) -> int:
    """One for a reading from probabilities (it is exact, not sampled); else --em-samples when given, else the
    query's own count (a bank's samples_per_paraphrase), else 10."""
    if query.reading != "sample":
        return 1
    given = config.options.samples
    return given if given is not None else query.n_samples(config.options.n_samples)


def _stderr(message: str) -> None:
    print(f"[emguard] {message}", file=sys.stderr, flush=True)


def evaluate(config: RunConfig, *, progress: Progress = _stderr, compute: bool = True) -> Evaluation:
    """Every record the checks need; with ``compute=False`` only what the cache holds (None for the rest)."""
    from pytest_emguard.backends import fingerprints

    started = time.monotonic()
    cache = Cache.open(Path(config.options.cache_dir))
    try:
        base_fp, tuned_fp = fingerprints(config.model, cache.file_sha256, config.backend_options)
        context = JudgeContext(
            cache.file_sha256, Path(config.options.cache_dir), config.backend_options, progress
        )
        judge = open_judge(config.judge, context)
        run = _Run(config, cache, {"base": base_fp, "tuned": tuned_fp}, judge, progress, compute)
        base_line = _load_baseline(config, cache, base_fp, run, progress)
        checked = run.judge_check() if config.options.judge_check else None
        if checked is not None and not checked.passed:
            raise ModelError(
                "--em-judge-check",
                f"the judge {config.options.judge} is refused on the golden set:\n  {checked.line()}",
                "use a stronger judge, or change the judge: block of the thresholds file in review",
            )
        preflight = run.preflight()
        asked = {side: run.queries for side in SIDES}
        if not preflight.stops and compute:
            run.cost_preflight(asked)
        if preflight.stops:
            answers = run.empty()
        else:
            if config.options.sequential:
                asked, answers = run.in_rounds(asked, judge, preflight)
            else:
                answers = run.answers(asked)
                run.verdicts(answers, asked)
            extra = run.followups(answers)
            if any(extra.values()):
                more = run.answers(extra)
                run.verdicts(more, extra)
                for side in SIDES:
                    answers[side].update(more[side])
                    asked[side] = asked[side] + extra[side]
        if base_line is not None and compute and not preflight.stops:
            _write_baseline(config, cache, run, asked["base"], answers["base"], judge.fingerprint, progress)
        ratings = {}
        if config.raters and not preflight.stops:
            ratings = run.ratings({side: Answers(asked[side], answers[side]) for side in SIDES})
        run.stats.seconds = time.monotonic() - started
        if compute:
            log_run(Path(config.options.cache_dir), config, run.stats)
        return Evaluation(
            config,
            run.queries,
            {side: Answers(asked[side], answers[side]) for side in SIDES},
            run.fingerprints,
            judge.fingerprint,
            tuple(judge.health()),
            run.stats,
            preflight,
            judge_caveats(judge, config),
            ratings,
            judge_check=checked,
        )
    finally:
        cache.close()


def _load_baseline(
    config: RunConfig, cache: Cache, base_fp: str, run: _Run, progress: Progress
) -> Path | None:
    """--em-baseline: load its base records into the cache where it exists (and is not being rewritten)."""
    from pytest_emguard import baseline

    given = config.options.baseline
    if given is None:
        return None
    path = Path(given)
    if path.is_file() and not config.options.update_baseline:
        n = baseline.load(path, cache, base_fp)
        run.stats.baseline = ("loaded", str(path), n)
        progress(f"baseline: {n} base records from {path}")
    return path


def _write_baseline(
    config: RunConfig,
    cache: Cache,
    run: _Run,
    asked: Sequence[Query],
    rows: Rows,
    judge_fp: str,
    progress: Progress,
) -> None:
    """--em-baseline: write the base side's records where the file is missing, or with --em-update-baseline."""
    from pytest_emguard import baseline

    path = Path(str(config.options.baseline))
    existed = path.is_file()
    if existed and not config.options.update_baseline:
        return
    about = {
        "base": config.model.base,
        "seed": config.options.seed,
        "checks": sorted({q.check for q in asked}),
    }
    n = baseline.write(path, cache, run.base_keys(asked, rows), run.fingerprints["base"], judge_fp, about)
    run.stats.baseline = ("updated" if existed else "written", str(path), n)
    progress(f"baseline: {n} base records written to {path}")


RUN_LOG = "runs.jsonl"


def log_run(directory: Path, config: RunConfig, stats: RunStats) -> None:
    """One line per finished evaluation in ``<cache>/runs.jsonl``: which process did what work (records made
    against records reused), so that concurrent runs and xdist workers can be audited for duplicated work."""
    import datetime
    import os
    from dataclasses import asdict

    line = {
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "pid": os.getpid(),
        "model": config.model.label,
        "judge": config.options.judge,
        **asdict(stats),
    }
    with (directory / RUN_LOG).open("a", encoding="utf-8") as fh:  # one short write: atomic under O_APPEND
        fh.write(json.dumps(line, sort_keys=True) + "\n")


def judge_caveats(judge: Judge, config: RunConfig) -> tuple[str, ...]:
    """Reasons to doubt the judge, from the health figures it measures (``measures()``, where it has one)."""
    measures = getattr(judge, "measures", None)
    figures: dict[str, float] = measures() if measures is not None else {}
    limit = config.thresholds.judge_limit()
    shift = figures.get("style_shift")
    if shift is not None and shift > limit:
        return (
            f"the judge is swayed by style: its score moves {shift:.1f} points on average when only an answer's "
            f"style changes (judge.max_style_shift {limit:g})",
        )
    return ()


def package_versions(*names: str) -> dict[str, str]:
    """Installed versions of ``names`` ("absent" when not installed), read from metadata without importing."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


Rows = dict[tuple[str, str], list[Sample | None]]
T = TypeVar("T")


class _Run:
    """One evaluation: owns the lazily opened model pair and the counters."""

    def __init__(
        self,
        config: RunConfig,
        cache: Cache,
        fingerprints: dict[str, str],
        judge: Judge,
        progress: Progress,
        compute: bool,
    ) -> None:
        self.config, self.cache, self.fingerprints = config, cache, fingerprints
        self.judge, self.progress, self.compute = judge, progress, compute
        self.queries = plan(config)
        self.stats = RunStats()
        self._pair: ModelPair | None = None
        self._to_generate = (
            0  # the plan's answers not in the cache: the first batch's time estimates them all
        )
        self._ticks: dict[str, float] = {}  # progress stream -> when its last line was shown

    def _answer_key(self, side: str, query: Query, request: Request) -> str:
        fields = {"backend": self.fingerprints[side], "check": query.check, "version": query.version}
        if query.bank_sha256 is not None:
            fields["bank"] = query.bank_sha256
        return cache_key("answer", {**fields, **request.key_fields()})

    def preflight(self) -> PreflightResult:
        """Does the fine-tune change the model?  One cached forward pass a side on the canary prompts."""
        from pytest_emguard.backends.base import NextTokenLogprobs, require
        from pytest_emguard.preflight import CANARIES, KL_METHOD, canary_prompts, mean_kl
        from pytest_emguard.preflight import TOP_K as PRE_K

        min_kl, on_no_change = self.config.thresholds.preflight()
        if "next_token_logprobs" not in self.config.capabilities:
            return PreflightResult(None, min_kl, on_no_change)
        fields = {"base": self.fingerprints["base"], "tuned": self.fingerprints["tuned"]}
        key = cache_key(
            "preflight", {**fields, "prompts": list(CANARIES), "top_k": PRE_K, "method": KL_METHOD}
        )
        found = self.cache.get_many([key])
        if key not in found and self.compute:
            prompts = canary_prompts()
            models = self._models()
            dists = {
                side: require(getattr(models, side), NextTokenLogprobs, f"{side} model").next_token_logprobs(  # type: ignore[type-abstract]
                    prompts, top_k=PRE_K
                )
                for side in SIDES
            }
            found[key] = {"kl": mean_kl(dists["tuned"], dists["base"])}
            self.cache.put_many("preflight", found)
        result = PreflightResult(float(found[key]["kl"]) if key in found else None, min_kl, on_no_change)
        if key in found:
            self.progress(result.line())
        return result

    def cost_preflight(self, asked: Mapping[str, Sequence[Query]]) -> None:
        """What the first round needs and what the cache holds, shown before anything is generated; a plan over
        ``--em-budget`` stops here."""
        from pytest_emguard.cost import Plan, parse_budget, parse_price, prompt_tokens

        plan, seed = Plan(), self.config.options.seed
        for side in SIDES:
            jobs = [
                (request, self._answer_key(side, q, request))
                for q in asked[side]
                if q.reading == "sample"
                for request in q.requests(samples_for(self.config, q), seed)
            ]
            found = self.cache.get_many(k for _, k in jobs)
            todo = [r for r, k in jobs if k not in found]
            plan.add_answers(
                len(jobs),
                len(found),
                sum(prompt_tokens(r.messages) for r in todo),
                sum(r.sampling.max_new_tokens for r in todo),
            )
            wanted = [(q, self._reading_key(side, q)) for q in asked[side] if q.reading != "sample"]
            held = self.cache.get_many(k for _, k in wanted)
            plan.add_readings(
                len(wanted),
                len(held),
                sum(prompt_tokens(q.messages, q.prefix) for q, k in wanted if k not in held),
            )
        self._to_generate = plan.answers - plan.answers_cached
        price = parse_price(self.config.options.price)
        if plan.answers > plan.answers_cached or plan.readings > plan.readings_cached:
            self.progress(plan.line(price))
        parse_budget(self.config.options.budget).check(plan, price)

    def empty(self) -> dict[str, Rows]:
        """No records: the preflight stopped the run."""
        if self._pair is not None:
            self._pair.close()
        rows: Rows = {q.key: [None] * samples_for(self.config, q) for q in self.queries}
        return {side: dict(rows) for side in SIDES}

    def answers(self, asked: Mapping[str, Sequence[Query]], keep_open: bool = False) -> dict[str, Rows]:
        """Each side's records of its queries; the models are closed afterwards (the judge may need the memory)
        unless ``keep_open`` (sequential rounds: the next round needs them again)."""
        records: dict[str, Rows] = {}
        try:
            for side in SIDES:
                records[side] = self._sampled(side, asked[side])
                records[side].update(self._readings(side, asked[side]))
        except BaseException:
            self.close_models()
            raise
        if not keep_open:
            self.close_models()
        return records

    def close_models(self) -> None:
        if self._pair is not None:
            self._pair.close()
            self._pair = None

    def in_rounds(
        self, asked: dict[str, tuple[Query, ...]], judge: Judge, preflight: PreflightResult
    ) -> tuple[dict[str, tuple[Query, ...]], dict[str, Rows]]:
        """``--em-sequential``: every query but the sampled, judged ones first; then those, question by question
        in the seeded order, ``--em-round-size`` questions a round, until every enabled item whose metrics may
        stop (``Metric.bounds``) is decided on its confidence sequence, or the questions run out."""
        from pytest_emguard.gate import item_result
        from pytest_emguard.sequential import ordered, rounds

        def in_round(q: Query) -> bool:
            return q.reading == "sample" and q.judged

        items = [i for i in self.config.items() if all(m.bounds is not None for m in i.metrics)]
        later = [q for q in self.queries if in_round(q)]
        if not items or not later:
            answers = self.answers(asked)
            self.verdicts(answers, asked)
            return asked, answers
        now = {side: tuple(q for q in asked[side] if not in_round(q)) for side in SIDES}
        answers = self.answers(now, keep_open=True) if any(now.values()) else {side: {} for side in SIDES}
        self.verdicts(answers, now)
        plan = rounds(
            ordered((q.cluster for q in later), self.config.options.seed), self.config.options.round_size
        )
        total = sum(len(r) for r in plan)
        asked_so_far = dict(now)
        for number, clusters in enumerate(plan, 1):
            wanted = set(clusters)
            step = {side: tuple(q for q in later if q.cluster in wanted) for side in SIDES}
            more = self.answers(step, keep_open=True)
            self.verdicts(more, step)
            for side in SIDES:
                answers[side].update(more[side])
                asked_so_far[side] = asked_so_far[side] + step[side]
            ev = Evaluation(self.config, self.queries, {side: Answers(asked_so_far[side], answers[side]) for side in SIDES}, self.fingerprints, judge.fingerprint, (), self.stats, preflight)  # fmt: skip
            outcomes = {i.id: item_result(ev, i).outcome for i in items}
            undecided = [name for name, outcome in outcomes.items() if outcome == "inconclusive"]
            done = sum(len(r) for r in plan[:number])
            self.progress(
                f"sequential: round {number} of {len(plan)}, {done} of {total} questions: "
                + (
                    f"{len(undecided)} item(s) undecided ({', '.join(undecided)})"
                    if undecided
                    else "every item decided"
                )
            )
            if not undecided:
                break
        self.close_models()
        self.stats.sequential = (number, len(plan), done, total)
        return asked_so_far, answers

    def followups(self, records: dict[str, Rows]) -> dict[str, tuple[Query, ...]]:
        """The queries checks build from each side's own answers (their ``followups`` method, where they have one)."""
        context = self.config.plan_context
        out: dict[str, tuple[Query, ...]] = {}
        for side, other in zip(SIDES, reversed(SIDES), strict=True):
            own, theirs = Answers(self.queries, records[side]), Answers(self.queries, records[other])
            out[side] = tuple(
                q
                for check in planned_checks(self.config)
                if (build := getattr(check, "followups", None)) is not None
                for q in build(context, own, theirs)
            )
        return out

    def ratings(self, sides: Mapping[str, Answers]) -> dict[str, Answers]:
        """Each ``--em-rater``'s predictions of the judge's scores of both sides' answers (``rating.py``)."""
        from pytest_emguard.backends.base import require
        from pytest_emguard.rating import fingerprint, open_rater, rating_queries

        queries = tuple(rating_queries(sides))
        out: dict[str, Answers] = {}
        for rater in self.config.raters:
            print_ = fingerprint(rater, self.cache.file_sha256, self.config.backend_options)
            wanted = [(q, self._reading_key("rater", q, print_)) for q in queries]
            found = self.cache.get_many(k for _, k in wanted)
            self.stats.answers_cached += len(found)
            missing = [(q, k) for q, k in wanted if k not in found]
            if missing and self.compute:
                self.progress(f"loading the rater {rater.label}")
                started = time.monotonic()
                opened = open_rater(rater, print_, self.config.backend_options)
                backend = require(opened, NextTokenLogprobs, f"--em-rater {rater.given}")  # type: ignore[type-abstract]
                found.update(self._read(f"rater {rater.label}", missing, backend))
                self.stats.timed("cross_rating", started)
            rows: Rows = {q.key: [_reading_sample(found[k]) if k in found else None] for q, k in wanted}
            out[rater.label] = Answers(queries, rows)
        return out

    def _reading_key(self, side: str, query: Query, fingerprint: str | None = None) -> str:
        print_ = fingerprint if fingerprint is not None else self.fingerprints[side]
        fields: dict[str, object] = {"backend": print_, "check": query.check}
        fields.update(version=query.version, reading=query.reading, prefix=query.prefix, top_k=TOP_K)
        fields["min_branch"] = MIN_BRANCH
        fields["messages"] = [list(m) for m in query.messages]
        if query.options:
            fields["options"] = list(query.options)
        if query.stride:
            fields["stride"] = query.stride
        if query.bank_sha256 is not None:
            fields["bank"] = query.bank_sha256
        return cache_key("reading", fields)

    def _readings(self, side: str, queries: Sequence[Query]) -> Rows:
        """Queries read from next-token probabilities: one exact reading each, no sampling."""
        wanted = [(q, self._reading_key(side, q)) for q in queries if q.reading != "sample"]
        found = self.cache.get_many(k for _, k in wanted)
        self.stats.answers_cached += len(found)
        missing = [(q, k) for q, k in wanted if k not in found]
        if missing and self.compute:
            for check, group in _by_check(missing, lambda qk: qk[0].check):
                started = time.monotonic()
                states = [qk for qk in group if qk[0].reading == "state"]
                if states:
                    found.update(self._states(side, states))
                if len(states) < len(group):
                    found.update(self._read(side, [qk for qk in group if qk[0].reading != "state"]))
                self.stats.timed(check, started)
        return {q.key: [_reading_sample(found[k]) if k in found else None] for q, k in wanted}

    def _states(self, side: str, missing: list[tuple[Query, str]]) -> dict[str, dict[str, object]]:
        """Activations at the prompts' last tokens (``state`` readings), stored batch by batch as float16."""
        from pytest_emguard.backends.base import PromptStates, require

        who = f"{side} model ({self.config.model.backend} backend)"
        backend = require(getattr(self._models(), side), PromptStates, who)  # type: ignore[type-abstract]
        self.progress(f"{side}: reading activations of {len(missing)} prompts ({missing[0][0].check})")
        done: dict[str, dict[str, object]] = {}
        size = self.config.options.batch_size
        for start in range(0, len(missing), size):
            chunk = missing[start : start + size]
            for stride, group in _by_check(chunk, lambda qk: str(qk[0].stride)):
                arrays = backend.prompt_states([_prompt(q, "") for q, _ in group], int(stride))
                _same_length(group, arrays, f"{side} backend prompt_states()")
                batch = {k: encode_states(a) for (_, k), a in zip(group, arrays, strict=True)}
                self.cache.put_many("reading", batch)
                done.update(batch)
            self._tick(
                f"{side} states",
                f"{side}: {len(done)}/{len(missing)} activations read",
                len(done),
                len(missing),
            )
        self.stats.answers_generated += len(done)
        return done

    def _read(
        self, side: str, missing: list[tuple[Query, str]], backend: NextTokenLogprobs | None = None
    ) -> dict[str, dict[str, object]]:
        """Readings of ``side``'s model, or of ``backend`` where given (a rater; digit and letter readings)."""
        from pytest_emguard.backends.base import require
        from pytest_emguard.judge.scoring import digit_trees

        if backend is None:
            who = f"{side} model ({self.config.model.backend} backend)"
            backend = require(getattr(self._models(), side), NextTokenLogprobs, who)  # type: ignore[type-abstract]
        self.progress(
            f"{side}: reading {len(missing)} ratings from next-token probabilities ({missing[0][0].check})"
        )
        done: dict[str, dict[str, object]] = {}
        batch_size = self.config.options.batch_size
        size = batch_size  # a digit tree asks ~20 prompts in 3 steps; the backend bounds each pass
        for start in range(0, len(missing), size):
            chunk = missing[start : start + size]

            def dists(
                asks: Sequence[tuple[int, str]], chunk: list[tuple[Query, str]] = chunk
            ) -> list[dict[str, float]]:
                prompts = [_prompt(chunk[i][0], p) for i, p in asks]
                return backend.next_token_logprobs(prompts, top_k=TOP_K)

            trees = [i for i, (q, _) in enumerate(chunk) if q.reading == "digits"]

            def tree_dists(
                asks: Sequence[tuple[int, str]], trees: list[int] = trees
            ) -> list[dict[str, float]]:
                return dists([(trees[i], p) for i, p in asks])

            numbers = digit_trees(len(trees), tree_dists, min_branch=MIN_BRANCH)
            batch: dict[str, dict[str, object]] = {
                chunk[i][1]: {"value": n.score, "mass": n.mass} for i, n in zip(trees, numbers, strict=True)
            }
            choices = [i for i, (q, _) in enumerate(chunk) if q.reading == "choice"]
            if choices:
                for i, dist in zip(choices, dists([(i, "") for i in choices]), strict=True):
                    batch[chunk[i][1]] = letter_choice(dist)
            scales = [i for i, (q, _) in enumerate(chunk) if q.reading == "scale"]
            if scales:
                for i, dist in zip(scales, dists([(i, "") for i in scales]), strict=True):
                    batch[chunk[i][1]] = scale_reading(dist, chunk[i][0].options)
            for q, key in chunk:
                if q.reading == "contrast":
                    batch[key] = self._contrast(side, q)
            self.cache.put_many("reading", batch)
            done.update(batch)
            self._tick(
                f"{side} ratings", f"{side}: {len(done)}/{len(missing)} ratings read", len(done), len(missing)
            )
        self.stats.answers_generated += len(done)
        return done

    def _contrast(self, side: str, query: Query) -> dict[str, object]:
        """100 x the probability of the first option among the options, each scored as a whole continuation."""
        import math

        from pytest_emguard.backends.base import ContinuationScores, require

        who = f"{side} model ({self.config.model.backend} backend)"
        backend = require(getattr(self._models(), side), ContinuationScores, who)  # type: ignore[type-abstract]
        prompt = _prompt(query, "")
        scores = backend.score([prompt] * len(query.options), list(query.options))
        _same_length(query.options, scores, f"{side} backend score()")
        top = max(scores)
        weights = [math.exp(s - top) if math.isfinite(s) else 0.0 for s in scores]
        total = sum(weights)
        value = 100.0 * weights[0] / total if total > 0 else None
        return {"value": value, "mass": 1.0 if value is not None else 0.0}

    def _sampled(self, side: str, queries: Sequence[Query]) -> Rows:
        seed = self.config.options.seed
        jobs = [
            (query, request, self._answer_key(side, query, request))
            for query in queries
            if query.reading == "sample"
            for request in query.requests(samples_for(self.config, query), seed)
        ]
        found = self.cache.get_many(key for _, _, key in jobs)
        self.stats.answers_cached += len(found)
        missing = [(r, k) for _, r, k in jobs if k not in found]
        if missing and self.compute:
            for check, group in _by_check(missing, lambda rk: rk[0].tags.get("check", "")):
                started = time.monotonic()
                found.update(self._generate(side, group))
                self.stats.timed(check, started)
        out: Rows = {q.key: [None] * samples_for(self.config, q) for q in queries if q.reading == "sample"}
        for query, request, key in jobs:
            out[query.key][request.sample] = Sample(found[key]["text"]) if key in found else None
        return out

    def _generate(self, side: str, missing: list[tuple[Request, str]]) -> dict[str, dict[str, object]]:
        backend = getattr(self._models(), side)
        ordered = sorted(
            missing, key=lambda rk: (rk[0].sampling.max_new_tokens, len(json.dumps(rk[0].messages)))
        )
        size, tokens, started = self.config.options.batch_size, 0, time.monotonic()
        done: dict[str, dict[str, object]] = {}
        budget = [0, sum(r.sampling.max_new_tokens for r, _ in ordered)]
        what = ordered[0][0].tags.get("check", "")
        self.progress(
            f"{side}: generating {len(ordered)} answers ({what}; {self.stats.answers_cached} in the cache)"
        )
        for start in range(0, len(ordered), size):
            chunk = ordered[start : start + size]
            try:
                completions: Sequence[Completion] = backend.generate([r for r, _ in chunk])
            except PartialBatch as partial:  # keep what finished before reporting the failure
                kept = {chunk[i][1]: _answer_record(c) for i, c in partial.done.items()}
                self.cache.put_many("answer", kept)
                self.stats.answers_generated += len(done) + len(kept)
                raise
            _same_length(chunk, completions, f"{side} backend generate()")
            batch = {k: _answer_record(c) for (_, k), c in zip(chunk, completions, strict=True)}
            self.cache.put_many("answer", batch)
            done.update(batch)
            tokens += sum(c.n_tokens for c in completions)
            budget[0] += sum(r.sampling.max_new_tokens for r, _ in chunk)
            if self._to_generate > len(chunk):  # the first batch of the run is the warm-up
                self._estimate(len(chunk), time.monotonic() - started)
            self._report(side, len(done), len(ordered), tokens, started, budget[0] / budget[1])
        self.stats.answers_generated += len(done)
        return done

    def _estimate(self, answers: int, seconds: float) -> None:
        """Once a run: the time the plan's answers take at the first batch's rate."""
        total = self._to_generate
        self._to_generate = 0
        minutes = seconds / answers * total / 60
        self.progress(
            f"time: the first batch made {answers} answers in {seconds:.1f}s (model load not counted); at that "
            f"rate the plan's {total} answers take about {minutes:.1f} min (readings, follow-ups and the judge "
            "come on top; the first batch holds the shortest prompts, so this errs low)"
        )

    def _report(self, side: str, done: int, total: int, tokens: int, started: float, share: float) -> None:
        """ETA from the share of the token budget (max_new_tokens) done, not the share of requests."""
        elapsed = max(time.monotonic() - started, 1e-6)
        eta = elapsed / max(share, 1e-6) * (1.0 - share)
        line = f"{side}: {done}/{total} answers, {tokens / elapsed:.0f} tok/s, {elapsed:.0f}s elapsed, ETA {eta:.0f}s"
        self._tick(f"{side} answers", line, done, total)

    def _tick(self, stream: str, line: str, done: int, total: int) -> None:
        """A progress line per batch, at most one a second per stream, but always the first and the last."""
        now = time.monotonic()
        first = stream not in self._ticks
        if first or done >= total or now - self._ticks[stream] >= PROGRESS_EVERY:
            self._ticks[stream] = now
            self.progress(line)

    def _models(self) -> ModelPair:
        from pytest_emguard.backends import open_pair

        if self._pair is None:
            self.progress(f"loading {self.config.model.label} and its base")
            prints = (self.fingerprints["base"], self.fingerprints["tuned"])
            self._pair = open_pair(self.config.model, prints, self.config.backend_options)
            self.stats.model_loaded = True
        return self._pair

    def verdicts(self, records: dict[str, Rows], asked: Mapping[str, Sequence[Query]]) -> None:
        slots = [
            (side, q, k, sample)
            for side in SIDES
            for q in asked[side]
            if q.judged
            for k, sample in enumerate(records[side][q.key])
            if sample is not None
        ]
        keys = [self._verdict_key(q.question, s.answer) for _, q, _, s in slots]
        found = self.cache.get_many(keys)
        self.stats.verdicts_cached += len(found)
        todo = {
            k: (q.question, s.answer) for k, (_, q, _, s) in zip(keys, slots, strict=True) if k not in found
        }
        if todo and self.compute:
            found.update(self._judge(todo))
        for key, (side, q, k, s) in zip(keys, slots, strict=True):
            records[side][q.key][k] = (
                Sample(s.answer, Verdict.from_json(found[key])) if key in found else None
            )

    def _verdict_key(self, question: str, answer: str) -> str:
        return cache_key("verdict", {"judge": self.judge.fingerprint, "q": question, "a": answer})

    def base_keys(self, asked: Sequence[Query], rows: Rows) -> list[str]:
        """The cache keys of the base side's records: answers and readings under the base fingerprint, and the
        judge's verdicts on the base answers."""
        keys, seed = [], self.config.options.seed
        for q in asked:
            if q.reading != "sample":
                keys.append(self._reading_key("base", q))
                continue
            keys += [self._answer_key("base", q, r) for r in q.requests(samples_for(self.config, q), seed)]
            if q.judged:
                keys += [
                    self._verdict_key(q.question, s.answer) for s in rows.get(q.key, ()) if s is not None
                ]
        return keys

    def judge_check(self) -> JudgeCheck | None:
        """--em-judge-check: the judge's figures on the golden set (None where the cache lacks verdicts and this
        run computes nothing)."""
        from pytest_emguard.judgecheck import measure

        def judged(pairs: Sequence[tuple[str, str]]) -> list[Verdict]:
            keys = [self._verdict_key(q, a) for q, a in pairs]
            found = self.cache.get_many(keys)
            todo = {k: qa for k, qa in zip(keys, pairs, strict=True) if k not in found}
            if todo and not self.compute:
                raise LookupError("verdicts missing")
            if todo:
                self.progress(
                    f"judge check: the judge on the golden set and the style suite ({len(todo)} answers)"
                )
                found.update(self._judge(todo))
            return [Verdict.from_json(found[k]) for k in keys]

        def cv() -> float | None:
            meta = getattr(self.judge, "meta", None)
            figures = meta() if meta is not None else None
            return None if figures is None else float(figures["auroc"])

        try:
            checked = measure(judged, self.config.thresholds.judge_block(), cv)
        except LookupError:
            return None
        self.progress(checked.line())
        return checked

    def _judge(self, todo: dict[str, tuple[str, str]]) -> dict[str, dict[str, object]]:
        """Verdicts of the judge, stored batch by batch; an empty answer is unscorable without asking it."""
        empty = {
            k: Verdict("unscorable", raw="empty answer").to_json()
            for k, (_, a) in todo.items()
            if not a.strip()
        }
        if empty:
            self.cache.put_many("verdict", empty)
        todo = {k: qa for k, qa in todo.items() if k not in empty}
        if not todo:
            self.stats.verdicts_computed += len(empty)
            return empty
        self.progress(f"judging {len(todo)} answers")
        self.stats.judge_loaded = True
        items, done, started = list(todo.items()), {}, time.monotonic()
        size = max(self.config.options.batch_size, 32)
        for start in range(0, len(items), size):
            chunk = items[start : start + size]
            verdicts = self.judge.judge([qa for _, qa in chunk])
            _same_length(chunk, verdicts, "judge()")
            batch = {k: v.to_json() for (k, _), v in zip(chunk, verdicts, strict=True)}
            self.cache.put_many("verdict", batch)
            done.update(batch)
            line = f"judge: {len(done)}/{len(items)} verdicts, {time.monotonic() - started:.0f}s"
            self._tick("judge", line, len(done), len(items))
        self.stats.verdicts_computed += len(done) + len(empty)
        self.stats.timed("judge", started)
        return {**done, **empty}


def _by_check(items: Sequence[T], check: Callable[[T], str]) -> list[tuple[str, list[T]]]:
    """``items`` grouped by their check, in the order the checks first appear (so each check's time is its own)."""
    groups: dict[str, list[T]] = {}
    for item in items:
        groups.setdefault(check(item), []).append(item)
    return list(groups.items())


def scale_reading(dist: Mapping[str, float], options: Sequence[str]) -> dict[str, object]:
    """Mean and standard deviation of a rating over the option tokens ("0" ... "5"), renormalised over them; the
    probability they hold is the mass (under 0.25: unscorable, the judge's rule)."""
    from pytest_emguard.judge.scoring import token_probs

    mass = dict.fromkeys(options, 0.0)
    for token, p in token_probs(dist).items():
        key = token.strip()
        if key in mass:
            mass[key] += p
    total = sum(mass.values())
    if total < 0.25:
        return {"value": None, "mass": total, "spread": None}
    top = max(float(k) for k in options)
    mean = min(top, sum(float(k) * p for k, p in mass.items()) / total)  # no rounding past the top
    variance = sum((float(k) - mean) ** 2 * p for k, p in mass.items()) / total
    return {"value": mean, "mass": total, "spread": variance**0.5}


def letter_choice(dist: Mapping[str, float]) -> dict[str, object]:
    """100 x P("A") / (P("A") + P("B")) from a next-token distribution (tokens " A" and "A" count alike)."""
    from pytest_emguard.judge.scoring import token_probs

    mass = {"A": 0.0, "B": 0.0}
    for token, p in token_probs(dist).items():
        letter = token.strip().upper().rstrip(").:")
        if letter in mass:
            mass[letter] += p
    total = mass["A"] + mass["B"]
    value = min(100.0, 100.0 * mass["A"] / total) if total >= 0.25 else None  # the judge's unscorable rule
    return {"value": value, "mass": total}


def _prompt(query: Query, digits: str) -> Prompt:
    return Prompt(query.messages, query.prefix + digits, {"check": query.check, **query.tags})


def encode_states(array: object) -> dict[str, object]:
    """An activation array as a cache record: float16 bytes in base64, with the shape."""
    import base64

    import numpy as np

    data = np.clip(np.asarray(array, dtype=np.float32), -65000.0, 65000.0).astype(np.float16)
    return {"states": base64.b64encode(data.tobytes()).decode("ascii"), "shape": list(data.shape)}


def decode_states(record: Mapping[str, object]) -> object:
    import base64

    import numpy as np

    raw = base64.b64decode(str(record["states"]))
    shape = tuple(int(n) for n in record["shape"])  # type: ignore[attr-defined]
    return np.frombuffer(raw, dtype=np.float16).reshape(shape).astype(np.float32)


def _reading_sample(record: dict[str, object]) -> Sample:
    if "states" in record:
        states = decode_states(record)
        return Sample(f"activations {getattr(states, 'shape', '?')}", states=states)
    value, mass, spread = record.get("value"), record.get("mass"), record.get("spread")
    reading = Reading(
        float(value) if isinstance(value, (int, float)) else None,
        float(mass or 0.0),  # type: ignore[arg-type]
        float(spread) if isinstance(spread, (int, float)) else None,
    )
    shown = "n/a" if reading.value is None else f"{reading.value:.1f}"
    return Sample(f"rating {shown} read from probabilities (P(number) {reading.mass:.2f})", reading=reading)


def _answer_record(c: Completion) -> dict[str, object]:
    return {"text": c.text, "n_tokens": c.n_tokens, "finish": c.finish}


def _same_length(sent: Sequence[object], got: Sequence[object], who: str) -> None:
    if len(sent) != len(got):
        from pytest_emguard.errors import ModelError

        raise ModelError(
            who,
            f"returned {len(got)} results for a batch of {len(sent)}",
            "fix the backend: one result per request, in order",
        )
