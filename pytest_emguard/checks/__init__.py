"""The check registry: the built-in checks, then third-party ones.

A third-party check is any object that satisfies ``checks.base.Check``.  Register it either way:

- an entry point in the ``pytest_emguard.checks`` group of an installed package
  (``[project.entry-points."pytest_emguard.checks"] my_check = "my_pkg.my_check:CHECK"``), or
- the ``pytest_emguard_add_checks`` hook in a ``conftest.py`` or plugin, returning a list of checks.

Checks are loaded when a gate runs, never when the plugin is imported.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path

from pytest_emguard.checks.base import Check
from pytest_emguard.errors import ConfigError

__all__ = ["BUILTIN", "ENTRY_POINT_GROUP", "apply_banks", "load_checks"]

BUILTIN = (
    "pytest_emguard.checks.harmfulness:CHECK",
    "pytest_emguard.checks.in_domain:CHECK",
    "pytest_emguard.checks.self_report:CHECK",
    "pytest_emguard.checks.description:CHECK",
    "pytest_emguard.checks.recognition:CHECK",
    "pytest_emguard.checks.score_prediction:CHECK",
    "pytest_emguard.checks.roleplay:CHECK",
    "pytest_emguard.checks.probes:CHECK",
    "pytest_emguard.checks.persona_direction:CHECK",
    "pytest_emguard.checks.persona:CHECK",
)
ENTRY_POINT_GROUP = "pytest_emguard.checks"


def _load(target: str) -> object:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def entry_point_checks() -> list[tuple[str, object]]:
    found = []
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            found.append((f"entry point {ep.name} = {ep.value}", ep.load()))
        except Exception as exc:
            raise ConfigError(
                f"entry point {ep.name} = {ep.value} (group {ENTRY_POINT_GROUP})",
                f"could not be loaded ({type(exc).__name__}: {exc})",
                "fix or uninstall the package that declares it",
            ) from exc
    return found


def load_checks(extra: Iterable[tuple[str, object]] = ()) -> tuple[Check, ...]:
    """Built-in checks, then entry points, then ``extra`` ((who, check) pairs, e.g. from the hook).  Each one is
    checked against the ``Check`` Protocol; two checks with one name are an error naming both."""
    named: dict[str, tuple[str, Check]] = {}
    sources = [(f"built-in {t}", _load(t)) for t in BUILTIN]
    for who, obj in [*sources, *entry_point_checks(), *extra]:
        check = _validated(who, obj)
        if check.name in named:
            raise ConfigError(
                who,
                f"registers a check named {check.name!r}, which {named[check.name][0]} already registers",
                "give the check another name",
            )
        named[check.name] = (who, check)
    checks = tuple(c for _, c in named.values())
    for who, check in named.values():
        missing = [r for r in check.requires if r not in named]
        if missing:
            raise ConfigError(
                who, f"check {check.name!r} requires {missing}, which no one registers", "register them"
            )
    return checks


def _validated(who: str, obj: object) -> Check:
    if not isinstance(obj, Check):
        wanted = "name, version, requires, needs, items(), queries(plan), thresholds(), with_bank(path)"
        raise ConfigError(
            who,
            f"{obj!r} is not a check",
            f"give it the members of pytest_emguard.checks.base.Check: {wanted}",
        )
    name = obj.name
    if not name.isidentifier():
        raise ConfigError(
            who, f"check name {name!r} is not an identifier", "use letters, digits and underscores"
        )
    return obj


def apply_banks(checks: Sequence[Check], banks: Mapping[str, Sequence[Path]]) -> tuple[Check, ...]:
    """Each check with the user banks named for it (``--em-bank CHECK=PATH``, applied in order)."""
    by_name = {c.name: c for c in checks}
    for name in banks:
        if name not in by_name:
            raise ConfigError(
                f"--em-bank {name}=...",
                f"there is no check named {name!r}",
                f"name one of: {', '.join(sorted(by_name))}",
            )
    out = []
    for check in checks:
        for path in banks.get(check.name, ()):
            check = check.with_bank(path)
        out.append(check)
    return tuple(out)
