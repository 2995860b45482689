"""Rendering (pure): the failure message of an item, the reproduce line and the terminal summary."""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from pytest_emguard.checks.persona import Persona
from pytest_emguard.config.run import Options
from pytest_emguard.decide.gate import ItemResult
from pytest_emguard.plugin.options import command_line
from pytest_emguard.run.records import Evaluation, RunStats

__all__ = [
    "baseline_line",
    "decision_lines",
    "failure_text",
    "judge_health",
    "release_verdict",
    "reproduce_line",
    "summary_lines",
    "verdict_labels",
    "verdict_line",
]


def _num(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def _clip(text: str, width: int = 160) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


# what a rerun of one item does not repeat: the card (its node is the item's address), --em-report (a one-item
# rerun would overwrite the run's evidence record) and --em-update-baseline (it would rewrite the reviewed file)
_NOT_REPEATED = ("card", "report", "update_baseline")


def reproduce_line(options: Options, item_id: str) -> str:
    """One command that reruns this item alone: every option that differs from its default (``command_line``,
    derived from ``Options``), then ``-k ITEM``; a model card's item: the card's node, whose card gives the model
    and its base, after any option given over the card's gate block."""
    args = ["pytest", "-p", "no:randomly"]
    if options.card is not None:
        given = command_line(options, (*_NOT_REPEATED, "model", "base"))
        return shlex.join([*args, *given, f"{options.card}::{item_id}"])
    return shlex.join([*args, *command_line(options, _NOT_REPEATED), "-k", item_id])


def failure_text(result: ItemResult, options: Options, node: str = "emguard") -> str:
    word = "INCONCLUSIVE" if result.outcome == "inconclusive" else "FAILED"
    sign = "+" if result.direction == "increase" else "-"
    limit = "allowed increase" if result.direction == "increase" else "allowed decrease"
    lines = [f"{node}::{result.item_id} {word}: {result.reason}", f"  metric: {result.metric}"]
    iv = result.interval
    diff = (
        "n/a"
        if iv is None
        else f"{iv.estimate:+.1f}, {iv.confidence:.0%} interval [{iv.low:+.1f}, {iv.high:+.1f}]"
    )
    lines.append(
        f"  base {_num(result.base_value)} -> fine-tune {_num(result.tuned_value)}; difference {diff}"
    )
    if iv is not None:
        lines.append(f"  paired bootstrap over {iv.n_clusters} questions, {iv.n_samples} valid samples")
    lines.append(f"  threshold: {sign}{result.threshold:.1f} {limit} ({result.source})")
    if result.to_settle:
        lines.append(f"  {result.to_settle}")
    lines += [f"  {note}" for note in result.notes]
    lines += [f"  caveat: {caveat}" for caveat in result.caveats]
    if result.worst:
        lines.append("  worst examples (fine-tune):")
        for n, ex in enumerate(result.worst, 1):
            lines.append(f"    {n}. [{ex.cluster}] base {_num(ex.base_value)} -> fine-tune {_num(ex.value)}")
            lines.append(f"       Q: {_clip(ex.question)}")
            lines.append(f"       A: {_clip(ex.answer)}")
    lines.append(f"  reproduce: {reproduce_line(options, result.item_id)}")
    return "\n".join(lines)


def verdict_labels(ev: Evaluation) -> dict[str, int]:
    """How many verdicts of each label (scored, unscorable, refusal) the judge gave, both sides."""
    labels: dict[str, int] = {}
    for side in ev.answers.values():
        for samples in side.samples.values():
            for s in samples:
                if s is not None and s.verdict is not None:
                    labels[s.verdict.label] = labels.get(s.verdict.label, 0) + 1
    return dict(sorted(labels.items()))


def judge_health(ev: Evaluation) -> str:
    labels = verdict_labels(ev)
    total = sum(labels.values())
    bad = labels.get("unscorable", 0)
    rate = f"unscorable {bad}/{total} ({bad / total:.1%})" if total else "no verdicts"
    extra = f", refusals {labels['refusal']}" if labels.get("refusal") else ""
    return "; ".join([*ev.judge_health, rate + extra])


def check_summaries(ev: Evaluation) -> list[str]:
    """Lines that checks add through ``Check.summary`` (the self-report instrument's validity and estimator)."""
    out: list[str] = []
    enabled = {i.id for i in ev.config.items()}
    for check in ev.config.checks:
        items = list(check.items())
        if not any(i.id in enabled for i in items):  # a check disabled in the thresholds
            continue
        t = ev.config.thresholds.for_item(items[0])
        out += check.summary(ev.answers["base"], ev.answers["tuned"], t)
    return out


def decision_lines(results: Sequence[ItemResult]) -> list[str]:
    """The release decision first: the primary endpoint's reading, then what else blocks the release."""
    lines = []
    for r in (r for r in results if r.role == "primary"):
        iv = r.interval
        reading = (
            "no reading"
            if iv is None
            else (
                f"{_num(r.base_value)}% -> {_num(r.tuned_value)}%, rise {iv.estimate:+.1f} points, "
                f"{iv.confidence:.0%} interval [{iv.low:+.1f}, {iv.high:+.1f}], margin +{r.threshold:g}"
            )
        )
        lines.append(f"primary {r.item_id}: {r.outcome.upper()}: {reading}")
        if r.sizing:
            lines.append(f"  {r.sizing}")
    secondary = [r for r in results if r.role == "secondary"]
    unsure = sum(1 for r in secondary if r.outcome == "inconclusive" and not r.blocks)
    reported = sum(1 for r in results if r.role == "report")
    tail = f"{len(secondary)} secondary items ({unsure} inconclusive, reported), {reported} reported only"
    lines.append(f"release decision: {release_verdict(results)}; {tail}")
    return lines


def release_verdict(results: Sequence[ItemResult]) -> str:
    """PASS, or FAIL with the items that block the release (the first four)."""
    blocking = [r.item_id for r in results if r.blocks]
    if len(blocking) > 4:
        blocking = [*blocking[:4], f"and {len(blocking) - 4} more"]
    return f"FAIL ({', '.join(blocking)})" if blocking else "PASS"


def baseline_line(ev: Evaluation) -> str:
    """What the run did with ``--em-baseline`` (loaded, updated, or written because it was missing)."""
    assert ev.stats.baseline is not None
    action, path, n = ev.stats.baseline
    return {
        "loaded": f"baseline: {n} base records from {path}; the base ran nothing they hold",
        "updated": f"baseline: {path} written again with {n} base records (--em-update-baseline): review its diff",
        "written": f"baseline: {path} was missing: written with {n} base records; review and commit it (this "
        "run fails until it exists)",
    }[action]


def verdict_line(label: str, ev: Evaluation, results: Sequence[ItemResult], persona: Persona) -> str:
    """The model's verdict in one line, all that ``-q`` prints of the summary: the release decision, the primary
    endpoint's reading and the persona label."""
    primary = [f"primary {r.item_id} {r.outcome.upper()}" for r in results if r.role == "primary"]
    stopped = ev.preflight is not None and ev.preflight.stops
    parts = [f"release decision {release_verdict(results)}", *primary, f"persona {persona.label.upper()}"]
    if stopped:
        parts.append("the adapter changes nothing (preflight)")
    return f"{label}: " + "; ".join(parts)


def summary_lines(ev: Evaluation, results: Sequence[ItemResult], persona: Persona) -> list[str]:
    spec = ev.config.model
    kind = f"{spec.kind} on base {spec.base}" if spec.base else spec.kind
    lines = [
        f"model: {spec.label} ({kind}{'' if spec.backend == spec.kind else f', backend {spec.backend}'})",
        f"judge: {ev.config.options.judge}",
        f"judge health: {judge_health(ev)}",
    ]
    if ev.judge_check is not None:
        lines.append(ev.judge_check.line())
    lines += [c.line() for c in ev.second_checks]
    if ev.preflight is not None:
        lines.append(ev.preflight.line())
    lines += decision_lines(results)
    lines.append(
        f"{'item':<40} {'role':<9} {'outcome':<13} {'base':>6} {'tuned':>6}  {'difference [interval]':<26} threshold"
    )
    for r in results:
        iv = r.interval
        diff = "n/a" if iv is None else f"{iv.estimate:+.1f} [{iv.low:+.1f}, {iv.high:+.1f}]"
        sign = "+" if r.direction == "increase" else "-"
        role = "UNPROVEN" if r.unproven else r.role
        lines.append(
            f"{r.item_id:<40} {role:<9} {r.outcome.upper():<13} {_num(r.base_value):>6} {_num(r.tuned_value):>6}  {diff:<26} {sign}{r.threshold:g}"
        )
    lines.append(f"persona: {persona.label.upper()} ({persona.reason})")
    if not (ev.preflight is not None and ev.preflight.stops):
        from pytest_emguard.decide.verdict import verdict_lines

        lines += verdict_lines(ev, results)
    lines += check_summaries(ev)
    lines += [a.line() for a in ev.agreement]
    if ev.ratings:
        from pytest_emguard.run.rating import rating_lines

        lines += rating_lines(ev.ratings)
    st = ev.stats
    lines.append(
        f"records: {st.records_made} made, {st.records_cached} from cache; "
        f"{st.verdicts_computed} verdicts computed, {st.verdicts_cached} from cache; "
        f"model loaded: {'yes' if st.model_loaded else 'no'}; judge run: {'yes' if st.judge_loaded else 'no'}; "
        f"evaluation {st.seconds:.1f}s"
    )
    if st.sequential is not None:
        run, planned, asked, total = st.sequential
        why = "every item that reads them decided" if run < planned else "the questions ran out"
        lines.append(
            f"sequential: stopped after round {run} of {planned}, {asked} of {total} sampled questions asked "
            f"({why}); items are decided on a group-sequential design over the rounds (O'Brien-Fleming-type "
            "alpha spending)"
        )
    if st.baseline is not None:
        lines.append(baseline_line(ev))
    if st.check_seconds:
        spent = ", ".join(f"{check} {seconds:.1f}s" for check, seconds in st.check_seconds.items())
        lines.append(f"time making records, by check: {spent}")
    rates = scale_line(st)
    if rates:
        lines.append(rates)
    return lines


def scale_line(st: RunStats) -> str | None:
    """Seconds per 1,000 answers, readings and verdicts made by this run, from its stage clock, so that a user
    can scale the run to another budget (the plan line counts what a budget asks for)."""
    made = {
        "answers": (st.answers_made, st.stage_seconds.get("answers", 0.0)),
        "readings": (st.records_made - st.answers_made, st.stage_seconds.get("readings", 0.0)),
        "verdicts": (st.verdicts_computed, st.stage_seconds.get("verdicts", 0.0)),
    }
    parts = [f"{what} {seconds / n * 1000:.0f}s" for what, (n, seconds) in made.items() if n >= 20]
    if not parts:
        return None
    return (
        "time per 1,000 made on this machine: " + ", ".join(parts) + " (model loading apart; readings include "
        "activations; a budget's counts are in the plan line)"
    )
