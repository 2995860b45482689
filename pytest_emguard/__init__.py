"""pytest-emguard: gate fine-tuned LLMs for emergent misalignment against their base model.

Importing this package is cheap: the heavy libraries (torch, transformers, peft, scikit-learn) load only inside
the backends that need them.  The library entry point is :func:`pytest_emguard.api.evaluate` (``api.py`` gathers the public names).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["__version__", "evaluate"]
from pytest_emguard.version import __version__

if TYPE_CHECKING:
    from pytest_emguard.api import evaluate


def __getattr__(name: str) -> Any:
    if name == "evaluate":
        from pytest_emguard.api import evaluate

        return evaluate
    raise AttributeError(name)
