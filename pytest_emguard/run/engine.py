"""``evaluate(RunConfig)``: every record the checks need, stage by stage.

The stages, each a module of ``run/`` sharing one ``RunContext``: the fingerprints (from file contents, no model
library imported), the judge, the baseline (``baseline.py``), the judge check (``judgecheck.py``), the adapter
preflight (``preflight.py``), the cost preflight (``cost.py``), the answers and readings of both sides
(``ask.py``: ``generate.py``, ``read.py``, ``activations.py``; or in rounds, ``rounds.py``), the judge's verdicts
(``verdicts.py``), the follow-up queries built from those answers (``followups.py``), the baseline written, the
cross-model ratings (``rating.py``), the second judges' agreement with the judge (``agreement.py``).  Every record goes through the cache (looked up, made in batches, stored
after each batch), so a killed run resumes and a fully cached rerun loads no model library.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from pytest_emguard.cache import Cache
from pytest_emguard.checks.base import Answers
from pytest_emguard.config.run import RunConfig
from pytest_emguard.judge import JudgeContext, open_judge
from pytest_emguard.run import baseline
from pytest_emguard.run.agreement import agreements
from pytest_emguard.run.ask import ask, no_records
from pytest_emguard.run.context import RunContext, stderr
from pytest_emguard.run.cost import cost_preflight, planned_sizing
from pytest_emguard.run.followups import followups
from pytest_emguard.run.judgecheck import check_judges
from pytest_emguard.run.plan import plan_queries
from pytest_emguard.run.preflight import adapter_preflight
from pytest_emguard.run.rating import ratings
from pytest_emguard.run.records import SIDES, Evaluation, Progress, RunStats, StageClock
from pytest_emguard.run.rounds import in_rounds
from pytest_emguard.run.verdicts import judge_caveats, verdicts

__all__ = ["RUN_LOG", "evaluate", "log_run"]

RUN_LOG = "runs.jsonl"


def evaluate(config: RunConfig, *, progress: Progress = stderr, compute: bool = True) -> Evaluation:
    """Every record the checks need; with ``compute=False`` only what the cache holds (None for the rest)."""
    from pytest_emguard.backends import fingerprints

    started = time.monotonic()
    stats = RunStats()
    clock = StageClock(stats.stage_seconds)
    cache = Cache.open(Path(config.options.cache_dir))
    cache.clock = clock
    try:
        with clock("fingerprints"):
            base_fp, tuned_fp = fingerprints(config.model, cache.file_sha256, config.backend_options)
        judge_context = JudgeContext(cache.file_sha256, Path(config.options.cache_dir), config.backend_options, progress)  # fmt: skip
        with clock("judge load"):
            judge = open_judge(config.judge, judge_context)
        prints = {"base": base_fp, "tuned": tuned_fp}
        with clock("plan"):
            queries = plan_queries(config)
        ctx = RunContext(config, cache, prints, judge, progress, compute, queries, stats, clock=clock)
        with clock("baseline"):
            baseline_file = baseline.load_baseline(ctx)
        with clock("judge load"):
            seconds = [
                (text, open_judge(spec, judge_context, "--em-second-judge"))
                for text, spec in zip(config.options.second_judges, config.second_judges, strict=True)
            ]
        with clock("judge check"):
            checked, second_checked = check_judges(ctx, seconds) if config.options.judge_check else (None, ())
        with clock("preflight"):
            preflight = adapter_preflight(ctx)
        asked = {side: ctx.queries for side in SIDES}
        if preflight.stops:
            answers = no_records(ctx)
        else:
            if compute:
                with clock("plan"):
                    cost_preflight(ctx, asked)
                    for line in planned_sizing(ctx):
                        progress(line)
            if config.options.sequential:
                asked, answers = in_rounds(ctx, asked, preflight)
            else:
                answers = ask(ctx, asked)
                with clock("verdicts"):
                    verdicts(ctx, answers, asked)
            with clock("plan"):
                extra = followups(ctx, answers)
            if any(extra.values()):
                more = ask(ctx, extra)
                with clock("verdicts"):
                    verdicts(ctx, more, extra)
                for side in SIDES:
                    answers[side].update(more[side])
                    asked[side] = asked[side] + extra[side]
            if baseline_file is not None and compute:
                with clock("baseline"):
                    baseline.write_baseline(ctx, asked["base"], answers["base"])
        sides = {side: Answers(asked[side], answers[side]) for side in SIDES}
        with clock("ratings"):
            rated = ratings(ctx, sides) if config.raters and not preflight.stops else {}
        with clock("agreement"):
            agreed = agreements(ctx, seconds, sides) if seconds and not preflight.stops else ()
        ctx.stats.seconds = time.monotonic() - started
        if compute:
            log_run(Path(config.options.cache_dir), config, ctx.stats)
        return Evaluation(
            config, ctx.queries, sides, prints, judge.fingerprint, tuple(judge.health()), ctx.stats, preflight,
            judge_caveats(judge, config), rated, judge_check=checked, second_checks=second_checked,
            agreement=agreed,
        )  # fmt: skip
    finally:
        cache.close()


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
