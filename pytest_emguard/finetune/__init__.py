"""Reproduce the consistency paper's emergent-misalignment adapters, their controls and sequential variants.

A sibling of the ``pytest_emguard`` plugin (which never imports it).  Importing this package is cheap: torch,
transformers, peft, trl and datasets load only inside :mod:`pytest_emguard.finetune.train`.  Entry points::

    python -m pytest_emguard.finetune list
    python -m pytest_emguard.finetune train --domain insecure_code --base PATH --out DIR

and the pytest plugin :mod:`pytest_emguard.finetune.fixtures` (``pytest_plugins = ["pytest_emguard.finetune.fixtures"]``).
"""

from __future__ import annotations

from pytest_emguard.finetune.config import PRESETS, TrainConfig
from pytest_emguard.finetune.errors import FinetuneError
from pytest_emguard.finetune.registry import DatasetEntry, Registry, ResolvedDataset

__all__ = ["PRESETS", "DatasetEntry", "FinetuneError", "Registry", "ResolvedDataset", "TrainConfig"]
__version__ = "0.1.0"
