"""Reviewed YAML files checked against a JSON Schema (Draft 2020-12): every problem at once, each with the
``file:line`` it sits on, its JSON path and the fix.  Used by thresholds, model cards and the finetune registry.

yaml and jsonschema are imported inside the functions: this module stays cheap to import.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from importlib import resources
from typing import Any

from pytest_emguard.errors import ConfigError

__all__ = ["YamlPath", "describe", "load_schema", "read_yaml", "schema_problems"]

YamlPath = tuple[str, ...]


def load_schema(name: str) -> dict[str, Any]:
    """A schema shipped in ``pytest_emguard/schemas/``."""
    text = resources.files("pytest_emguard").joinpath(f"schemas/{name}").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def read_yaml(text: str, filename: str) -> tuple[Any, dict[YamlPath, str]]:
    """The parsed document and the ``file:line`` of every key and list item in it."""
    import yaml

    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{filename}:{mark.line + 1}" if mark is not None else filename
        raise ConfigError(
            where, f"is not valid YAML ({getattr(exc, 'problem', exc)})", "fix the YAML syntax"
        ) from exc
    return data, (dict(_lines(node, (), filename)) if node is not None else {})


def _lines(node: Any, path: YamlPath, filename: str) -> Iterator[tuple[YamlPath, str]]:
    import yaml

    children: list[tuple[str, Any, Any]] = []
    if isinstance(node, yaml.MappingNode):
        children = [(str(key.value), key, value) for key, value in node.value]
    elif isinstance(node, yaml.SequenceNode):
        children = [(str(i), item, item) for i, item in enumerate(node.value)]
    for name, mark_node, child in children:
        sub = (*path, name)
        yield sub, f"{filename}:{mark_node.start_mark.line + 1}"
        yield from _lines(child, sub, filename)


def schema_problems(
    data: Any, schema: Mapping[str, Any], lines: Mapping[YamlPath, str], filename: str
) -> list[str]:
    """One line per violation: ``file:line: at $.path: what; fix: how``."""
    from jsonschema import Draft202012Validator

    problems = []
    for error in sorted(
        Draft202012Validator(schema).iter_errors(data), key=lambda e: list(map(str, e.absolute_path))
    ):
        path = tuple(str(p) for p in error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
            # point at the unexpected key itself, not at the mapping that holds it (the root has no line)
            extra = [k for k in error.instance if k not in error.schema.get("properties", {})]
            path = (*path, str(extra[0])) if extra else path
        problems.append(f"{lines.get(path, filename)}: at {error.json_path}: {describe(error)}")
    return problems


def describe(error: Any) -> str:
    """The validator's finding, plus the concrete fix for the common cases."""
    kind, value = error.validator, error.validator_value
    if kind == "additionalProperties":
        allowed = ", ".join(error.schema.get("properties", {}))
        return f"{error.message}; fix: remove or rename it (allowed here: {allowed})"
    if kind == "type":
        want = value if isinstance(value, str) else " or ".join(value)
        an = "an" if want[0] in "aeiou" else "a"
        return f"{error.instance!r} is not {an} {want}; fix: write {an} {want}"
    if kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minItems", "minLength"):
        return f"{error.message}; fix: use a value within the allowed range"
    if kind == "enum":
        return f"{error.instance!r} is not allowed; fix: use one of {', '.join(map(str, value))}"
    if kind == "const":
        return f"{error.instance!r} is not supported; fix: write {value!r}"
    if kind == "required":
        return f"{error.message}; fix: add it"
    if kind == "pattern" and error.json_path.endswith("sha256"):
        return f"{error.instance!r} is not a sha256; fix: write the 64 lower-case hex digits of sha256sum"
    if kind == "pattern":
        return f"{error.instance!r} does not match {value}; fix: write a value of that form"
    return str(error.message)
