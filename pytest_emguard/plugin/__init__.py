"""pytest hooks of pytest-emguard (the ``pytest11`` entry point).  Hook implementations only; each delegates to a
module of this package (``options.py``, ``collect.py``, ``session.py``; the hooks it adds are ``hookspecs.py``)
and imports almost nothing: pytest imports every installed plugin in every run."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_emguard.errors import EmguardError

_KEY = "emguard_session"
# whether this gate run leaves the repository's own tests out (collect.gate_only)
_GATE_ONLY = pytest.StashKey[bool]()


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from pytest_emguard.plugin import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    from pytest_emguard.plugin.options import add_options

    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "emguard: an emergent-misalignment gate item of pytest-emguard")
    if getattr(config.option, "xmlpath", None):  # --junitxml: the items' figures where the XML family allows
        from pytest_emguard.plugin.junit import register

        register(config)
    from pytest_emguard.plugin.options import read_options

    try:
        options = read_options(config)
        if not options:
            return
        from pytest_emguard.config.run import RunConfig
        from pytest_emguard.plugin.collect import hook_checks

        hooks = hook_checks(config)
        runs = [RunConfig.resolve(o, hooks) for o in options]
    except EmguardError as exc:
        raise pytest.UsageError(f"pytest-emguard: {exc}") from None
    from pytest_emguard.plugin.session import EmguardSession, SideBySide, labels

    sessions = [EmguardSession(config, run, label) for run, label in zip(runs, labels(runs), strict=True)]
    for i, emguard in enumerate(sessions):  # their summaries print in this order, then the side-by-side table
        config.pluginmanager.register(emguard, _KEY if i == 0 else f"{_KEY}_{i}")
    if len(sessions) > 1:
        config.pluginmanager.register(SideBySide(sessions), f"{_KEY}_side_by_side")
    from pytest_emguard.plugin.collect import gate_only

    config.stash[_GATE_ONLY] = gate_only(config)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """pytest-xdist: each worker collects as the controller decided (a worker's arguments arrive rewritten)."""
    from pytest_emguard.plugin.collect import WORKER_GATE_ONLY

    node.workerinput[WORKER_GATE_ONLY] = node.config.stash.get(_GATE_ONLY, False)


def pytest_report_header(config: pytest.Config) -> list[str]:
    """What a gate run collects, and an ini file's ``em_model`` that this run does not gate."""
    gating = bool(sessions(config))
    if not gating and not config.getini("em_model"):
        return []
    from pytest_emguard.plugin.collect import header_lines

    return header_lines(config, gating, config.stash.get(_GATE_ONLY, False))


def pytest_ignore_collect(collection_path: Any, config: pytest.Config) -> bool | None:
    """A gate run collects the gate's items only (``collect.gate_only``): every path below the initial ones is
    left out, the way ``--ignore`` leaves one out (pytest never asks about an initial path itself)."""
    return True if config.stash.get(_GATE_ONLY, False) else None


def pytest_collect_file(file_path: Any, parent: pytest.Collector) -> pytest.Collector | None:
    """``pytest model_cards/``: each card YAML there is a model to gate (only where the command line names it)."""
    if file_path.suffix not in (".yaml", ".yml") or file_path.parent.name != "model_cards":
        return None
    from pytest_emguard.plugin.collect import CardFile, is_card

    if not is_card(file_path, parent.config):
        return None
    card: pytest.Collector = CardFile.from_parent(parent, path=file_path)
    return card


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    ours = sessions(config)
    if ours:
        from pytest_emguard.plugin.collect import add_items

        add_items(session, ours, items, only=config.stash.get(_GATE_ONLY, False))


def sessions(config: pytest.Config) -> list[Any]:
    """The registered ``EmguardSession`` of each model, in the order the models were given."""
    found: list[Any] = []
    while (
        plugin := config.pluginmanager.get_plugin(_KEY if not found else f"{_KEY}_{len(found)}")
    ) is not None:
        found.append(plugin)
    return found
