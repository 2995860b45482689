"""Errors that reach the user.  Each one says where (file or option), what is wrong and how to fix it."""

from __future__ import annotations

__all__ = ["ConfigError", "EmguardError", "ModelError"]


class EmguardError(Exception):
    """Base class: ``where`` names the file or option, ``fix`` says what to do."""

    def __init__(self, where: str, problem: str, fix: str) -> None:
        self.where, self.problem, self.fix = where, problem, fix
        super().__init__(f"{where}: {problem}\n  fix: {fix}")


class ConfigError(EmguardError):
    """Bad options, thresholds or model paths, found before any compute is spent."""


class ModelError(EmguardError):
    """A model or judge could not be loaded or answered in a way we cannot use."""
