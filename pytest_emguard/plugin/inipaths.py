"""Relative paths in the ini file, read from the ini file's directory, as pytest reads its own ``paths`` keys
(``testpaths``, ``cache_dir``): the same ``pytest.ini`` gates the same files from whichever directory pytest
runs.  A path given on the command line stays relative to the current directory, as every command-line path; a
path in a model card's ``gate:`` block is read from the card's directory, by the same rules (``anchored_at``).

Each option names its files in its own syntax: the whole value (``em_thresholds``), the ``PATH`` of
``CHECK=PATH`` (``em_bank``), the target of a local judge (``probe:PATH?golden=v3``), a model that is not served
(``./adapter``, ``hf:PATH``, ``@FILE``, but not ``openai:...`` or ``fake:...``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pytest_emguard.judge import JUDGES

__all__ = ["PATH_OPTIONS", "anchored", "anchored_at", "anchored_base", "ini_dir"]

Anchor = Callable[[str], str]


def ini_dir(config: pytest.Config) -> Path:
    """Where the ini file's relative paths start: its directory (the invocation directory without one, as
    pytest does for ``-o`` overrides)."""
    return config.inipath.parent if config.inipath is not None else config.invocation_params.dir


def _plain(value: str, anchor: Anchor) -> str:
    return anchor(value)


def _bank(value: str, anchor: Anchor) -> str:
    check, sep, path = value.partition("=")
    return f"{check}={anchor(path)}" if sep and path else value  # a malformed value is reported as given


def _judge(value: str, anchor: Anchor) -> str:
    scheme, sep, target = value.partition(":")
    if not (sep and scheme in JUDGES and JUDGES[scheme].local_model and target):
        return value  # an endpoint, the fake judge, or a malformed value (reported as given)
    path, query, params = target.partition("?")
    return f"{scheme}:{anchor(path)}{query}{params}"


def _served(model: str) -> bool:
    """A model that names no local file: a scripted fake, or an endpoint's model."""
    return model.startswith(("fake:", "openai:"))


def _model(value: str, anchor: Anchor) -> str:
    if value.startswith("@"):
        return "@" + anchor(value[1:])
    if _served(value):
        return value
    scheme, sep, target = value.partition(":")
    if sep and scheme in ("hf", "vllm"):
        return f"{scheme}:{anchor(target)}"
    return anchor(value)


def _rater(value: str, anchor: Anchor) -> str:
    if value.startswith("fake:"):
        return value
    return "hf:" + anchor(value[3:]) if value.startswith("hf:") else anchor(value)


# option -> how its value names local files
_KINDS: dict[str, Callable[[str, Anchor], str]] = {
    "thresholds": _plain,
    "cache-dir": _plain,
    "report": _plain,
    "baseline": _plain,
    "bank": _bank,
    "judge": _judge,
    "second-judge": _judge,
    "model": _model,
    "rater": _rater,
}
# the options whose whole value is a path: their ini keys hold no default, so that "set in the ini file" (read
# from its directory) and "not set" (the default, relative to the current directory) stay apart
PATH_OPTIONS = frozenset({"base", *(name for name, kind in _KINDS.items() if kind is _plain)})


def _anchor_at(here: Path) -> Anchor:
    def anchor(path: str) -> str:
        expanded = os.path.expanduser(path)
        return expanded if os.path.isabs(expanded) else str(here / expanded)

    return anchor


def _anchor(config: pytest.Config) -> Anchor:
    return _anchor_at(ini_dir(config))


def anchored_at(name: str, value: Any, here: Path) -> Any:
    """``--em-NAME``'s value (a string, or a list for a repeatable option) with its relative paths read from the
    directory ``here`` (the ini file's, a model card's); a value that names no file is returned as it is."""
    kind = _KINDS.get(name)
    if kind is None or not value:
        return value
    anchor = _anchor_at(here)
    if isinstance(value, list):
        return [kind(str(v), anchor) for v in value]
    return kind(str(value), anchor)


def anchored(config: pytest.Config, name: str, value: Any) -> Any:
    """``em_NAME``'s value as the ini file gives it (a string, or a list for a key of one value a line), its
    relative paths read from the ini file's directory; a value that names no file is returned as it is."""
    return anchored_at(name, value, ini_dir(config))


def anchored_base(config: pytest.Config, value: str, model: str) -> str:
    """``em_base`` from the ini file, for ``model``: a directory read from the ini file's directory, except beside
    a served model, where it is the endpoint's name of the base model (``openai:MODEL@URL``)."""
    return value if _served(model) else _anchor(config)(value)
