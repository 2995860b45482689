"""Reproduce the consistency paper's emergent-misalignment adapters, their controls and sequential variants.

A sibling of the ``pytest_emguard`` plugin (which never imports it).  Importing this package is cheap: torch,
transformers, peft, trl and datasets load only inside :mod:`finetune.train`.  Entry points::

    python -m finetune list
    python -m finetune train --domain insecure_code --base PATH --out DIR

and the pytest plugin :mod:`finetune.fixtures` (``pytest_plugins = ["finetune.fixtures"]``).
"""

from __future__ import annotations

from finetune.config import PRESETS, TrainConfig
from finetune.errors import FinetuneError
from finetune.registry import DatasetEntry, Registry, ResolvedDataset

__all__ = ["PRESETS", "DatasetEntry", "FinetuneError", "Registry", "ResolvedDataset", "TrainConfig"]
__version__ = "0.1.0"
