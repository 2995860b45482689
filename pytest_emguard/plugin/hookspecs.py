"""Hooks that pytest-emguard adds (registered in ``pytest_addhooks``), in the manner of pytest-xdist's
``newhooks.py``."""

from __future__ import annotations

from typing import Any

import pytest


def pytest_emguard_add_checks(config: pytest.Config) -> list[Any]:  # type: ignore[empty-body]
    """Return checks to register beside the built-in ones and the ``pytest_emguard.checks`` entry points.

    Each must satisfy ``pytest_emguard.checks.base.Check``.  Implement it in a ``conftest.py`` at the root of the
    run, or in a plugin; every implementation's list is used.
    """
