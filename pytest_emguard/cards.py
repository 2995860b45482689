"""Model cards (``model_cards/<name>.yaml``, one per adapter), checked by ``schemas/model_card.schema.json``.

A card records where an adapter came from (base, revision, datasets with their sha256, LoRA and training
settings, library versions); the gate adds an ``evidence`` block later.  Import-light: PyYAML and jsonschema
load inside the functions that need them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytest_emguard.errors import ConfigError
from pytest_emguard.yamlschema import load_schema, read_yaml, schema_problems

__all__ = ["CARD_FILE", "SCHEMA_FILE", "adapter_card", "load_card", "validate_card"]

SCHEMA_FILE = "pytest_emguard/schemas/model_card.schema.json"
CARD_FILE = "emguard_card.yaml"  # the card beside an adapter: <adapter>/emguard_card.yaml
_Path = tuple[str, ...]


def adapter_card(adapter: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """The card beside an adapter directory (``CARD_FILE``), validated; None where there is none."""
    path = Path(os.path.expanduser(adapter)) / CARD_FILE
    return (path, load_card(path)) if path.is_file() else None


def load_card(path: str | Path) -> dict[str, Any]:
    """Read and validate one card; every problem is reported at once with its file:line."""

    p = Path(os.path.expanduser(path))
    try:
        text = p.read_text("utf-8")
    except OSError as exc:
        raise ConfigError(
            str(p), f"cannot be read ({exc.strerror})", "pass an existing model card YAML file"
        ) from exc
    data, lines = read_yaml(text, str(p))
    validate_card(data, str(p), lines)
    assert isinstance(data, dict)
    return data


def validate_card(data: Any, filename: str, lines: Mapping[_Path, str] | None = None) -> None:
    """Raise :class:`ConfigError` listing every schema violation (file or file:line, JSON path, fix)."""
    problems = schema_problems(data, load_schema("model_card.schema.json"), lines or {}, filename)
    if problems:
        raise ConfigError(
            filename,
            f"{len(problems)} problem(s) in the model card:\n    " + "\n    ".join(problems),
            f"edit the card as each line says; the schema is {SCHEMA_FILE}",
        )
