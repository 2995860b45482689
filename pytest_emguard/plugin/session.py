"""The one stateful object of a run, registered as a plugin: runs the evaluation once, gates, reports.

Under pytest-xdist one worker takes a file lock and evaluates while the others wait and then read the cache; the
controller, which runs no items, computes its summary from the cache alone (it never loads a model).
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pytest_emguard.config.run import RunConfig
from pytest_emguard.errors import EmguardError, library_error

if TYPE_CHECKING:
    from pytest_emguard.decide.gate import ItemResult
    from pytest_emguard.run.records import Evaluation

__all__ = ["EmguardSession", "EvaluationFailed", "SideBySide", "labels", "shown"]


class EvaluationFailed(Exception):
    """Raised again in place of an evaluation's stored exception, so that its traceback does not grow with each
    item that asks."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause = cause


class EmguardSession:
    """Registered as the plugin ``emguard_session``; items ask it for their results."""

    def __init__(
        self,
        config: pytest.Config,
        run: RunConfig,
        label: str | None = None,
        node: str | None = None,
        card: Path | None = None,
    ) -> None:
        self.config, self.run, self.label = config, run, label
        # the collector's node id: emguard, emguard[LABEL], or a model card's file (model_cards/NAME.yaml)
        self.node = node or ("emguard" if label is None else f"emguard[{label}]")
        self.card = card  # the model card --em-update-cards writes the evidence block of
        self.prefix = f"{self.node}::"
        self._evaluation: Evaluation | None = None
        self._results: dict[str, ItemResult] | None = None
        self._error: BaseException | None = None
        self.error_shown_by: str | None = None  # the item that reported the evaluation's failure in full
        self.ran_items = False
        self.reported: dict[str, str] = {}  # item name -> passed | failed | skipped (for the evidence record)
        self.written: tuple[Path, ...] = ()  # the evidence record and page --em-report wrote
        self.report_error: str | None = None
        self.card_line: str | None = None  # what happened to the model card's evidence block

    def progress(self, message: str) -> None:
        """A progress line of the evaluation: none with ``-q``; the per-batch counters only with ``-v``."""
        if not shown(message, self.config.get_verbosity()):
            return
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        worker = getattr(self.config, "workerinput", None)
        if worker is not None:  # an xdist worker's terminal is not shown; its stderr is the controller's
            line = f"[emguard {worker.get('workerid', 'worker')}] {message}\n"
            stream = sys.__stderr__
            if stream is not None:
                with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
                    stream.write(line)
                    stream.flush()
            return
        if reporter is None:
            return
        if capture is not None:
            with capture.global_and_fixture_disabled():
                reporter.write_line(f"[emguard] {message}")
        else:
            reporter.write_line(f"[emguard] {message}")

    @property
    def error(self) -> BaseException | None:
        """The exception that broke the evaluation, if one did (reported in full by one item only)."""
        return self._error

    def evaluation(self, compute: bool = True) -> Evaluation:
        from pytest_emguard.cache import exclusive
        from pytest_emguard.run.engine import evaluate

        if self._error is not None:
            raise EvaluationFailed(self._error)
        if self._evaluation is None:
            try:
                if compute:
                    with exclusive(Path(self.run.options.cache_dir)):
                        self._evaluation = evaluate(self.run, progress=self.progress)
                else:
                    self._evaluation = evaluate(self.run, progress=self.progress, compute=False)
            except Exception as exc:  # every item reports the same failure; none retries a broken evaluation
                # a library's error (peft, transformers, torch, sqlite, openai, ...) as one short message with
                # its first line; with -vv its full traceback, as a failure of the plugin's own code always has
                translated = (
                    None
                    if self.config.get_verbosity() >= 2
                    else library_error(exc, str(self.run.options.model))
                )
                self._error = translated or exc
                if translated is not None:
                    raise translated from None
                raise
        return self._evaluation

    def results(self, compute: bool = True) -> dict[str, ItemResult]:
        from pytest_emguard.decide.gate import run_gate

        if self._results is None:
            ev = self.evaluation(compute)
            self._results = {r.item_id: r for r in run_gate(ev)}
        return self._results

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Generator[None, None, None]:
        """Evaluate before the first item runs, so that progress lines come before the test-progress letters
        (a failure is kept; the items report it).  Not in the xdist controller, which runs no items."""
        config = session.config
        controller = getattr(config.option, "dist", "no") != "no" and not hasattr(config, "workerinput")
        selected = any(item.nodeid.startswith(self.prefix) for item in session.items)
        if selected and not controller and not config.option.collectonly:
            with contextlib.suppress(Exception):  # stored by evaluation(); the items report it
                self.results()
            if self._error is not None and not hasattr(config, "workerinput"):
                self._run_one_failing_item(session)
        yield

    def _run_one_failing_item(self, session: pytest.Session) -> None:
        """A broken evaluation fails every item the same way: one item runs and reports it, the others are
        deselected rather than repeat it (under xdist each worker's items report it in one line each)."""
        ours = [item for item in session.items if item.nodeid.startswith(self.prefix)]
        rest = {id(item) for item in ours[1:]}
        if not rest:
            return
        session.items[:] = [item for item in session.items if id(item) not in rest]
        session.config.hook.pytest_deselected(items=ours[1:])
        self.progress(
            f"the evaluation failed: {ours[0].nodeid} reports it; the {len(rest)} other emguard items are "
            "deselected, as each would report the same failure"
        )

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.nodeid.startswith(self.prefix):
            self.ran_items = True
            name = report.nodeid[len(self.prefix) :]
            if report.when == "call" or report.outcome != "passed":
                self.reported[name] = report.outcome

    def finished(self) -> tuple[Evaluation, list[ItemResult]] | None:
        """The evaluation and its results, where the run evaluated this model completely; else None."""
        distributed = getattr(self.config.option, "dist", "no") != "no"
        try:
            results = self.results(compute=False) if distributed else self.results()
            ev = self.evaluation(compute=False)
        except Exception:  # the summary says why
            return None
        return (ev, list(results.values())) if ev.complete else None

    def _card_path(self) -> Path | None:
        """The model card this run gates: the collected card, else the card beside the adapter, if any."""
        if self.card is not None:
            return self.card
        if self.run.model.kind != "adapter":
            return None
        from pytest_emguard.config.cards import CARD_FILE

        beside = Path(self.run.model.path) / CARD_FILE
        return beside if beside.is_file() else None

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """--em-report: write the evidence record and its page; a model card's evidence block: compare, and write
        it with --em-update-cards (not in an xdist worker: the controller does)."""
        if hasattr(self.config, "workerinput") or not self.ran_items:
            return
        baseline = None if self._evaluation is None else self._evaluation.stats.baseline
        if baseline is not None and baseline[0] == "written" and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED  # a new baseline is reviewed before it gates
        directory, card = self.run.options.report, self._card_path()
        if directory is None and card is None:
            return
        from pytest_emguard.checks.persona import classify
        from pytest_emguard.report.evidence import build, card_block, file_stem, write

        done = self.finished()
        if done is None:
            if directory is not None:
                self.report_error = "not written: the evaluation did not finish"
        else:
            ev, rows = done
            try:
                record = build(ev, rows, classify(rows), self.reported)
                if directory is not None:
                    self.written = write(directory, file_stem(ev, self.label), record)
                if card is not None:
                    self.card_line = self._update_card(card, card_block(record))
            except EmguardError as exc:
                self.report_error = f"not written: {exc}"
        if self.report_error and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED  # a release must not pass without its evidence

    def _update_card(self, path: Path, block: dict[str, object]) -> str:
        import yaml

        from pytest_emguard.config.cards import load_card, missing_provenance, set_evidence

        card = load_card(path)
        missing = missing_provenance(card)
        lacks = (
            f"\nmodel card {path}: no provenance for {', '.join(missing)} (optional for the gate; "
            "python -m pytest_emguard.finetune train writes them)"
            if missing
            else ""
        )
        if self.config.getoption("em_update_cards"):
            changed = set_evidence(path, block)
            return f"model card {path}: evidence block {'written' if changed else 'unchanged'}{lacks}"
        held = card.get("evidence")
        if held == yaml.safe_load(yaml.safe_dump(block)):
            return f"model card {path}: evidence block up to date{lacks}"
        state = "holds no evidence block" if held is None else "evidence block is out of date"
        return f"model card {path}: {state} (not changed; --em-update-cards writes it, for review as a diff){lacks}"

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        """The model's section: the summary; with ``-q`` one line, the verdict (and what else fails the run)."""
        if hasattr(self.config, "workerinput") or not self.ran_items:
            return
        quiet = self.config.get_verbosity() < 0
        if not quiet:
            terminalreporter.section("emguard" if self.label is None else f"emguard: {self.label}")
        for line in self._summary(quiet):
            terminalreporter.write_line(line)

    def _summary(self, quiet: bool) -> list[str]:
        from pytest_emguard.checks.persona import classify
        from pytest_emguard.report.text import baseline_line, summary_lines, verdict_line

        who = f"emguard {self.label or self.run.model.label}" if quiet else "emguard"
        distributed = getattr(self.config.option, "dist", "no") != "no"
        try:
            results = self.results(compute=False) if distributed else self.results()
            ev = self.evaluation(compute=False)
        except Exception as exc:
            cause = exc.cause if isinstance(exc, EvaluationFailed) else exc
            if isinstance(cause, EmguardError):
                return [f"{who}: {cause}"]
            message = " ".join(str(cause).split())[:300]
            return [
                f"{who}: the evaluation failed ({type(cause).__name__}: {message}); finished batches are in the "
                "cache, so a rerun resumes from them"
            ]
        if not ev.complete:
            return [f"{who}: the cache does not hold every record yet; rerun to finish"]
        rows = list(results.values())
        persona = classify(rows)
        if quiet:  # the verdict, and what else fails the run: a baseline just written, evidence not written
            lines = [verdict_line(who, ev, rows, persona)]
            if ev.stats.baseline is not None and ev.stats.baseline[0] == "written":
                lines.append(baseline_line(ev))
            if self.report_error and not self.written:
                lines.append(f"evidence: {self.report_error}")
            return lines
        lines = summary_lines(ev, rows, persona)
        if self.written:
            lines.append("evidence: " + ", ".join(str(p) for p in self.written))
        elif self.report_error:
            lines.append(f"evidence: {self.report_error}")
        if self.card_line:
            lines.append(self.card_line)
        return lines


# the per-batch counters of RunContext.tick ("base: 640/640 answers, ...", "judge: 1015/1015 verdicts, 3s"):
# a line a second per stream, shown with -v; the stage lines (loading, preflight, plan, sizing, time estimate,
# "generating N answers") show at the default verbosity, as the docs quote them
_COUNTER = re.compile(r"^[^:]+: \d+/\d+ (answers|ratings read|activations read|verdicts)\b")


def shown(message: str, verbosity: int) -> bool:
    """Whether a progress line shows: none with ``-q``, the per-batch counters only from ``-v``."""
    if verbosity < 0:
        return False
    return verbosity > 0 or not _COUNTER.match(message)


def labels(runs: list[RunConfig]) -> list[str | None]:
    """None for a single model (ids stay ``emguard::...``); else a short, unique name per model: the adapter's
    directory name, or the ``fake:`` scenario."""
    if len(runs) == 1:
        return [None]
    names = []
    for run in runs:
        given = run.options.model
        names.append(given if ":" in given and not Path(given).exists() else Path(given).name or given)
    return [name if names.count(name) == 1 else f"{name}#{i + 1}" for i, name in enumerate(names)]


class SideBySide:
    """With several ``--em-model``: one table of the models' verdicts over five tasks, after their own sections."""

    def __init__(self, sessions: list[EmguardSession]) -> None:
        self.sessions = sessions

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        from pytest_emguard.decide.verdict import side_by_side_lines

        config = self.sessions[0].config
        if hasattr(config, "workerinput") or not any(s.ran_items for s in self.sessions):
            return
        if config.get_verbosity() < 0:  # -q: each model's one line says its verdict
            return
        distributed = getattr(config.option, "dist", "no") != "no"
        rows = []
        for s in self.sessions:
            try:
                results = s.results(compute=False) if distributed else s.results()
                ev = s.evaluation(compute=False)
            except Exception:  # its own section said why
                continue
            if ev.complete and not (ev.preflight is not None and ev.preflight.stops):
                rows.append((s.label or s.run.model.label, ev, list(results.values())))
        terminalreporter.section("emguard: side by side")
        for line in side_by_side_lines(rows):
            terminalreporter.write_line(line)
