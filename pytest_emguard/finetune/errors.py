"""The one error type of the finetune package: where (file, option or dataset), what is wrong, and the fix."""

from __future__ import annotations

from pytest_emguard.errors import EmguardError

__all__ = ["FinetuneError"]


class FinetuneError(EmguardError):
    """A bad registry, dataset, option or output directory, found before training starts."""
