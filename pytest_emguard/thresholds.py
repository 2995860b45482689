"""Thresholds: reviewed YAML, validated against a JSON Schema (Draft 2020-12), with file:line for every value.

A user file is merged over the package default key by key, so a profile names only what it changes; every value
remembers the file and line it came from, and failure messages quote them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from pytest_emguard.errors import ConfigError
from pytest_emguard.yamlschema import load_schema, read_yaml, schema_problems

__all__ = ["DEFAULT_FILE", "ItemThreshold", "Thresholds"]

DEFAULT_FILE = "<package>/thresholds/default.yaml"
_COMMON = ("enabled", "alpha", "min_clusters", "bootstrap", "inconclusive")
Path_ = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ItemThreshold:
    """The settings of one gate item, each value with the ``file:line`` that set it."""

    values: Mapping[str, Any]
    sources: Mapping[str, str]

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def source(self, key: str) -> str:
        return self.sources.get(key, DEFAULT_FILE)

    @property
    def enabled(self) -> bool:
        return bool(self.values.get("enabled", True))


@dataclass(frozen=True, slots=True)
class Thresholds:
    data: Mapping[str, Any]
    sources: Mapping[Path_, str]
    files: tuple[str, ...]

    @classmethod
    def load(cls, path: str | None = None) -> Thresholds:
        """The package default, with ``path`` (if given) merged over it."""
        text = resources.files("pytest_emguard").joinpath("thresholds/default.yaml").read_text("utf-8")
        data, sources = _parse(text, DEFAULT_FILE)
        files = [DEFAULT_FILE]
        if path is not None:
            p = Path(path).expanduser()
            try:
                user_text = p.read_text("utf-8")
            except OSError as exc:
                raise ConfigError(
                    "--em-thresholds", f"cannot read {p} ({exc.strerror})", "pass an existing YAML file"
                ) from exc
            user, user_sources = _parse(user_text, str(p))
            data, sources = _merge(data, user), {**sources, **user_sources}
            files.append(str(p))
        return cls(data, sources, tuple(files))

    def item(self, check: str, name: str) -> ItemThreshold:
        """Defaults, then the check's ``dimension`` block (self_report), then the item's own block."""
        layers: list[Path_] = [("defaults",)]
        if check == "self_report" and name != "overall":
            layers.append(("self_report", "dimension"))
        layers.append((check, name))
        values: dict[str, Any] = {}
        srcs: dict[str, str] = {}
        for layer in layers:
            block = _get(self.data, layer)
            if not isinstance(block, Mapping):
                continue
            for key, value in block.items():
                if layer == ("defaults",) and key not in _COMMON:
                    continue
                values[key] = value
                srcs[key] = self.sources.get((*layer, key), DEFAULT_FILE)
        return ItemThreshold(values, srcs)


def _get(data: Mapping[str, Any], path: Path_) -> Any:
    node: Any = data
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), Mapping):
            merged[key] = _merge(base[key], value)
        else:
            merged[key] = value
    return merged


def _parse(text: str, filename: str) -> tuple[dict[str, Any], dict[Path_, str]]:
    data, lines = read_yaml(text, filename)
    if not isinstance(data, dict):
        raise ConfigError(
            filename,
            "must be a YAML mapping with 'version: 1' at the top",
            "start from thresholds/default.yaml",
        )
    problems = schema_problems(data, load_schema("thresholds.schema.json"), lines, filename)
    if problems:
        raise ConfigError(
            filename,
            f"{len(problems)} problem(s) in the thresholds file:\n    " + "\n    ".join(problems),
            "edit the file as each line says; the schema is pytest_emguard/schemas/thresholds.schema.json",
        )
    return data, lines
