"""Test items for ``--em-model``: one per gate item, ids ``emguard::<check>[<name>]`` (with several models,
``emguard[<model>]::<check>[<name>]``), marker ``emguard``."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_emguard.errors import ConfigError, EmguardError

if TYPE_CHECKING:
    from _pytest._code.code import TerminalRepr

    from pytest_emguard.decide.gate import ItemResult
    from pytest_emguard.plugin.session import EmguardSession

__all__ = [
    "WORKER_GATE_ONLY",
    "CardFile",
    "EmguardCollector",
    "EmguardItem",
    "GateFailure",
    "add_items",
    "gate_only",
    "header_lines",
    "is_card",
    "properties",
]


def _orchestration(path: Path) -> bool:
    """The evaluation's plumbing, left out of short tracebacks: the session and the engine's stages (``run/``)."""
    inside = "pytest_emguard" in path.parts
    return inside and (
        path.parent.name == "run" or (path.parent.name == "plugin" and path.name == "session.py")
    )


class GateFailure(Exception):
    """Raised by an item that failed or was inconclusive; carries the rendered message, and its one-line
    ``headline`` for pytest's short test summary (its first line unless given)."""

    def __init__(self, text: str, headline: str | None = None) -> None:
        super().__init__(text)
        self.headline = " ".join((headline if headline is not None else text.partition("\n")[0]).split())


class EmguardCollector(pytest.Collector):
    def __init__(self, *, emguard: EmguardSession, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.emguard = emguard

    def collect(self) -> list[pytest.Item]:
        run = self.emguard.run
        pairs = [(item, None) for item in run.items()] + run.skipped_items()
        return [
            EmguardItem.from_parent(self, name=item.id, emguard=self.emguard, skip_reason=reason)
            for item, reason in pairs
        ]


class CardFile(pytest.File):
    """``model_cards/NAME.yaml``: the card's adapter gated against its base, one item per gate item, ids
    ``model_cards/NAME.yaml::<check>[<name>]``.  The card's ``gate`` block holds the options."""

    def collect(self) -> list[pytest.Item]:
        from pytest_emguard.config.cards import card_name, load_card
        from pytest_emguard.config.run import RunConfig
        from pytest_emguard.plugin.options import card_options
        from pytest_emguard.plugin.session import EmguardSession

        if hasattr(self.config, "workerinput"):  # the controller, which prints and writes, never collects it
            raise ConfigError(
                str(self.path),
                "model cards are gated without pytest-xdist for now (its controller would see no summary, no "
                "evidence and no card update)",
                "run pytest model_cards/ without -n",
            )
        card = load_card(self.path)
        run = RunConfig.resolve(card_options(self.config, self.path, card), hook_checks(self.config))
        emguard = EmguardSession(
            self.config, run, label=card_name(self.path, card), node=self.nodeid, card=self.path
        )
        self.config.pluginmanager.register(emguard, f"emguard_card::{self.nodeid}")
        pairs = [(item, None) for item in run.items()] + run.skipped_items()
        return [
            EmguardItem.from_parent(self, name=item.id, emguard=emguard, skip_reason=reason)
            for item, reason in pairs
        ]

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, EmguardError):
            return f"pytest-emguard: {excinfo.value}"
        return str(super().repr_failure(excinfo))


def is_card(file_path: Path, config: pytest.Config) -> bool:
    """A ``*.yaml`` file in a directory named ``model_cards`` that the command line names (the directory or the
    card itself): plain ``pytest`` never starts gating models because a repository keeps cards."""
    if file_path.suffix not in (".yaml", ".yml") or file_path.parent.name != "model_cards":
        return False
    named = [Path(str(a).split("::", 1)[0]) for a in config.args]
    here = Path(str(config.invocation_params.dir))
    for arg in named:
        target = (arg if arg.is_absolute() else here / arg).resolve()
        if target in (file_path.resolve(), file_path.parent.resolve()):
            return True
    return False


class EmguardItem(pytest.Item):
    def __init__(self, *, emguard: EmguardSession, skip_reason: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.emguard, self.skip_reason = emguard, skip_reason
        self.add_marker("emguard")

    def runtest(self) -> None:
        from pytest_emguard.plugin.session import EvaluationFailed
        from pytest_emguard.report.text import failure_text

        if self.skip_reason is not None:  # its check needs what this model's backend lacks
            pytest.skip(f"{self.emguard.node}::{self.name}: not run: {self.skip_reason}")
        self.emguard.ran_items = True
        try:
            result = self.emguard.results()[self.name]
        except EmguardError as exc:
            raise GateFailure(str(exc)) from None
        except EvaluationFailed as failed:
            first = self.emguard.error_shown_by is None and not isinstance(failed.cause, EmguardError)
            if (
                first
            ):  # the evaluation ran before the items (pytest_runtestloop): this item shows its traceback
                self.emguard.error_shown_by = self.name
                raise failed.cause from None
            raise GateFailure(self._same_failure(failed.cause)) from None
        except Exception:
            self.emguard.error_shown_by = self.name
            raise
        self.user_properties += properties(result)
        skip = result.gated and result.outcome == "inconclusive" and result.on_inconclusive == "skip"
        if not result.blocks and not skip:  # a pass, a reported item, or an inconclusive one reported
            return
        text = failure_text(result, self.emguard.run.options, self.emguard.node)
        if skip:
            pytest.skip(text)
        word = "INCONCLUSIVE: " if result.outcome == "inconclusive" else ""
        raise GateFailure(text, headline=word + result.reason)

    def _same_failure(self, cause: BaseException) -> str:
        """One line for every item after the first that the broken evaluation fails."""
        if isinstance(cause, EmguardError):
            return str(cause)
        first = self.emguard.error_shown_by or "the first item"
        message = " ".join(str(cause).split())[:300]
        return (
            f"{self.emguard.node}::{self.name} not evaluated: the evaluation failed ({type(cause).__name__}: "
            f"{message}); the traceback is under {self.emguard.node}::{first}"
        )

    def repr_failure(
        self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None
    ) -> str | TerminalRepr:
        if isinstance(excinfo.value, GateFailure):
            return _gate_repr(excinfo, excinfo.value)
        if style is None and self.config.getoption("tbstyle", "auto") == "auto":
            style = "short"  # the evaluation's own frames; --tb=long shows them all
        return str(super().repr_failure(excinfo, style))

    def _traceback_filter(self, excinfo: pytest.ExceptionInfo[BaseException]) -> Any:
        """The frames of the component that failed (a backend, a judge, a library): pytest's, pluggy's and the
        run's own orchestration frames say nothing about the failure (``--tb=long`` keeps the orchestration)."""
        tb = excinfo.traceback
        start = next(
            (i + 1 for i, e in enumerate(tb) if e.name == "runtest" and str(e.path).endswith("collect.py")), 0
        )
        tb = tb[start:]
        if self.config.getoption("tbstyle", "auto") == "long":
            return tb
        kept = tb.filter(lambda e: not _orchestration(Path(str(e.path))))
        return kept or tb

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, None, f"{self.emguard.node}::{self.name}"


def _gate_repr(excinfo: pytest.ExceptionInfo[BaseException], failure: GateFailure) -> str | TerminalRepr:
    """The failure text as pytest shows an exception's value (``pytest.fail(pytrace=False)``: no traceback), its
    crash message the one-line headline: pytest's short test summary and JUnit's ``message`` take that, and under
    ``CI=true`` or ``-vv`` the summary prints the message whole (it would repeat the whole text).  The chain
    carries the crash too: pytest-xdist sends it to the controller, which rebuilds the report from it."""
    from _pytest._code.code import ExceptionChainRepr

    rep = excinfo.getrepr(style="value", chain=False)
    if rep.reprcrash is None:  # every frame hidden: no crash line to shorten
        return str(failure)
    crash = dataclasses.replace(rep.reprcrash, message=failure.headline)
    return ExceptionChainRepr([(rep.reprtraceback, crash, None)])


def properties(result: ItemResult) -> list[tuple[str, object]]:
    """The item's reading as JUnit XML properties (``--junitxml``), as ``record_property`` would add them."""

    def num(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}"

    iv = result.interval
    sign = "+" if result.direction == "increase" else "-"
    props: list[tuple[str, object]] = [
        ("emguard.outcome", result.outcome),
        ("emguard.role", result.role),
        ("emguard.metric", result.metric),
        ("emguard.base", num(result.base_value)),
        ("emguard.finetune", num(result.tuned_value)),
        ("emguard.threshold", f"{sign}{result.threshold:g}"),
    ]
    if iv is not None:
        props += [
            ("emguard.difference", f"{iv.estimate:+.2f}"),
            ("emguard.interval", f"[{iv.low:+.2f}, {iv.high:+.2f}]"),
            ("emguard.confidence", f"{iv.confidence:g}"),
            ("emguard.n", f"{iv.n_clusters} questions, {iv.n_samples} samples"),
        ]
    return props


def add_items(
    session: pytest.Session, sessions: Sequence[EmguardSession], items: list[pytest.Item], only: bool = False
) -> None:
    """One collector per gated model, ``emguard`` (one model) or ``emguard[LABEL]`` (several), its items first.
    ``only`` (a gate-only run): whatever else was collected is deselected (a file that ``testpaths`` names
    itself: pytest collects an initial path without asking ``pytest_ignore_collect``)."""
    ours: list[pytest.Item] = []
    for emguard in sessions:
        collector = EmguardCollector.from_parent(
            session, name=emguard.node, nodeid=emguard.node, path=session.config.rootpath, emguard=emguard
        )
        # through genitems, so collection hooks fire and the terminal counts the items ("collected 11 items")
        ours += session.genitems(collector)
    if only and items:
        session.config.hook.pytest_deselected(items=list(items))
        items.clear()
    items[:0] = ours


# the key of pytest-xdist's workerinput that carries the controller's gate_only to each worker
WORKER_GATE_ONLY = "emguard_gate_only"


def gate_only(config: pytest.Config) -> bool:
    """Whether this gate run collects the gate's items only: yes, unless ``--em-with-tests`` (ini
    ``em_with_tests``) asks for the repository's tests too, or the command line names test paths (pytest collects
    what it is given; only the paths it picks itself, ``testpaths`` or the current directory, are left out)."""
    worker = getattr(config, "workerinput", None)
    if worker is not None and WORKER_GATE_ONLY in worker:
        return bool(worker[WORKER_GATE_ONLY])
    if config.getoption("em_with_tests") or config.getini("em_with_tests"):
        return False
    return config.args_source is not pytest.Config.ArgsSource.ARGS


def header_lines(config: pytest.Config, gating: bool, only: bool) -> list[str]:
    """The run's header (not shown with ``-q``): what a gate run collects; an ``em_model`` not gated."""
    if gating and only:
        return [
            "emguard: gate only: the repository's own tests are not collected (--em-with-tests runs them too)"
        ]
    if gating:
        asked = config.getoption("em_with_tests") or config.getini("em_with_tests")
        why = "--em-with-tests" if asked else "test paths named on the command line"
        return [f"emguard: the gate's items and the repository's tests ({why})"]
    names = ", ".join(str(m) for m in config.getini("em_model"))
    where = config.inipath.name if config.inipath is not None else "the ini file"
    return [f"emguard: {where} names em_model {names}: not gated in this run (--em-gate gates it)"]


def hook_checks(config: pytest.Config) -> list[tuple[str, Any]]:
    """The checks every ``pytest_emguard_add_checks`` implementation returns, each with who registered it (for
    error messages): each implementation is called through pluggy on its own (a subset hook caller)."""
    manager = config.pluginmanager
    impls = manager.hook.pytest_emguard_add_checks.get_hookimpls()
    found: list[tuple[str, Any]] = []
    for impl in impls:
        others = [other.plugin for other in impls if other is not impl]
        call = manager.subset_hook_caller("pytest_emguard_add_checks", remove_plugins=others)
        for returned in call(config=config):
            found += [(f"pytest_emguard_add_checks in {impl.plugin_name}", check) for check in returned or ()]
    return found
