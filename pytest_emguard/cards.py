"""Model cards (``model_cards/<name>.yaml``, one per adapter), checked by ``schemas/model_card.schema.json``.

A card records where an adapter came from (base, revision, datasets with their sha256, LoRA and training
settings, library versions); the gate adds an ``evidence`` block later.  Import-light: PyYAML and jsonschema
load inside the functions that need them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from pytest_emguard.errors import ConfigError

__all__ = ["SCHEMA_FILE", "load_card", "validate_card"]

SCHEMA_FILE = "pytest_emguard/schemas/model_card.schema.json"
_Path = tuple[str, ...]


def load_card(path: str | Path) -> dict[str, Any]:
    """Read and validate one card; every problem is reported at once with its file:line."""
    import yaml

    p = Path(path).expanduser()
    try:
        text = p.read_text("utf-8")
    except OSError as exc:
        raise ConfigError(
            str(p), f"cannot be read ({exc.strerror})", "pass an existing model card YAML file"
        ) from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(str(p), f"is not valid YAML ({exc})", "fix the YAML syntax") from exc
    lines = dict(_lines(node, (), str(p))) if node is not None else {}
    validate_card(data, str(p), lines)
    assert isinstance(data, dict)
    return data


def validate_card(data: Any, filename: str, lines: Mapping[_Path, str] | None = None) -> None:
    """Raise :class:`ConfigError` listing every schema violation (file or file:line, JSON path, fix)."""
    from jsonschema import Draft202012Validator

    schema = json.loads(
        resources.files("pytest_emguard").joinpath("schemas/model_card.schema.json").read_text("utf-8")
    )
    errors = sorted(
        Draft202012Validator(schema).iter_errors(data), key=lambda e: list(map(str, e.absolute_path))
    )
    problems = []
    for error in errors:
        where = (lines or {}).get(tuple(str(p) for p in error.absolute_path), filename)
        problems.append(f"{where}: at {error.json_path}: {_describe(error)}")
    if problems:
        raise ConfigError(
            filename,
            f"{len(problems)} problem(s) in the model card:\n    " + "\n    ".join(problems),
            f"edit the card as each line says; the schema is {SCHEMA_FILE}",
        )


def _lines(node: Any, path: _Path, filename: str) -> Iterator[tuple[_Path, str]]:
    import yaml

    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = (*path, str(key.value))
            yield sub, f"{filename}:{key.start_mark.line + 1}"
            yield from _lines(value, sub, filename)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            sub = (*path, str(i))
            yield sub, f"{filename}:{item.start_mark.line + 1}"
            yield from _lines(item, sub, filename)


def _describe(error: Any) -> str:
    kind, value = error.validator, error.validator_value
    if kind == "required":
        return f"{error.message}; fix: add it"
    if kind == "additionalProperties":
        allowed = ", ".join(error.schema.get("properties", {}))
        return f"{error.message}; fix: remove or rename it (allowed here: {allowed})"
    if kind == "type":
        want = value if isinstance(value, str) else " or ".join(value)
        return f"{error.instance!r} is not a {want}; fix: write a {want}"
    if kind == "enum":
        return f"{error.instance!r} is not allowed; fix: use one of {', '.join(map(str, value))}"
    if kind == "pattern" and error.json_path.endswith("sha256"):
        return f"{error.instance!r} is not a sha256; fix: write the dataset's sha256 (64 lower-case hex)"
    if kind == "pattern":
        return f"{error.instance!r} does not match {value}; fix: write a value of that form"
    if kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minItems", "minLength"):
        return f"{error.message}; fix: use a value within the allowed range"
    return str(error.message)
