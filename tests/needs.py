"""What a test needs from the machine: skipped where it is missing, a failure under CI (``CI`` set to 1, true or
yes, as .ci/run exports it), where .ci/run installs every such dependency and a skip would hide that it did not."""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import NoReturn

import pytest


def in_ci() -> bool:
    """``CI`` as the plugin reads it (pytest_emguard.run.baseline): 1, true or yes."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def missing(reason: str) -> NoReturn:
    """Skip for ``reason``; under CI, fail instead."""
    if in_ci():
        pytest.fail(f"{reason}; .ci/run installs it, so under CI it is a failure, not a skip", pytrace=False)
    pytest.skip(reason, allow_module_level=True)  # as pytest.importorskip: at a module's top level too


def need_module(name: str, reason: str) -> ModuleType:
    """``pytest.importorskip`` that fails under CI."""
    try:
        return importlib.import_module(name)
    except ImportError:
        missing(reason)
