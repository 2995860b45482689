"""The dataset registry: ``data/registry.yaml`` validated, and names resolved to local JSONL files.

A name resolves to the sample that ships with the package, or (``full=True``) to the pinned full dataset,
downloaded once into a cache directory and verified against its sha256; a path resolves to itself.  A download
whose hash differs from the pin is removed and refused.
"""

from __future__ import annotations

import difflib
import os
import shutil
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, BinaryIO, Literal

from pytest_emguard.config.yamlschema import schema_problems
from pytest_emguard.finetune.errors import FinetuneError
from pytest_emguard.finetune.examples import sha256_file

__all__ = ["KINDS", "DatasetEntry", "Opener", "Registry", "ResolvedDataset", "default_cache_dir"]

KINDS = ("domain", "control", "persona", "realignment")
PACKAGE_FILE = "<finetune>/data/registry.yaml"
Opener = Callable[[str], BinaryIO]
Origin = Literal["sample", "full", "local"]

_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["version", "datasets"],
    "additionalProperties": False,
    "properties": {
        "version": {"const": 1},
        "datasets": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/entry"}},
    },
    "$defs": {
        "entry": {
            "type": "object",
            "required": ["name", "kind", "description", "sample", "source"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
                "kind": {"enum": list(KINDS)},
                "twin": {"type": "string"},
                "description": {"type": "string", "minLength": 1},
                "sample": {"type": "string", "minLength": 1},
                "url": {"type": ["string", "null"]},
                "sha256": {"type": ["string", "null"], "pattern": "^([0-9a-f]{64})?$"},
                "source": {"type": "string", "minLength": 1},
            },
            "if": {"properties": {"kind": {"enum": ["domain", "control"]}}},
            "then": {"required": ["twin"]},
        }
    },
}


@dataclass(frozen=True, slots=True)
class DatasetEntry:
    name: str
    kind: str
    description: str
    sample: Path
    source: str
    twin: str | None = None
    url: str | None = None
    sha256: str | None = None

    @property
    def pinned(self) -> bool:
        return bool(self.url and self.sha256)


@dataclass(frozen=True, slots=True)
class ResolvedDataset:
    """A dataset on local disk: ``name`` is the registry name (or the file's stem for a local path)."""

    name: str
    path: Path
    origin: Origin
    sha256: str
    kind: str | None = None


def default_cache_dir() -> Path:
    from pytest_emguard.cache import cache_root

    return cache_root() / "datasets"


@dataclass(frozen=True, slots=True)
class Registry:
    file: str
    entries: Mapping[str, DatasetEntry]

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> Registry:
        """The package registry, or the YAML file at ``path``; every problem is reported at once."""
        if path is None:
            res = resources.files("pytest_emguard.finetune").joinpath("data/registry.yaml")
            return cls.parse(res.read_text("utf-8"), PACKAGE_FILE, Path(str(res)).parent)
        p = Path(path).expanduser()
        try:
            text = p.read_text("utf-8")
        except OSError as exc:
            raise FinetuneError(
                str(p), f"cannot be read ({exc.strerror})", "pass an existing registry YAML file"
            ) from exc
        return cls.parse(text, str(p), p.parent)

    @classmethod
    def parse(cls, text: str, filename: str, root: Path) -> Registry:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise FinetuneError(filename, f"is not valid YAML ({exc})", "fix the YAML syntax") from exc
        problems = _schema_problems(data)
        if not problems:
            problems = _semantic_problems(data["datasets"], root)
        if problems:
            raise FinetuneError(
                filename,
                f"{len(problems)} problem(s) in the dataset registry:\n    " + "\n    ".join(problems),
                "edit the registry as each line says (its format is atop pytest_emguard/finetune/data/registry.yaml)",
            )
        entries = {e["name"]: _entry(e, root) for e in data["datasets"]}
        return cls(filename, entries)

    def names(self, kind: str | None = None) -> list[str]:
        return [n for n, e in self.entries.items() if kind is None or e.kind == kind]

    def get(self, name: str) -> DatasetEntry:
        if name in self.entries:
            return self.entries[name]
        close = difflib.get_close_matches(name, list(self.entries), n=3, cutoff=0.5)
        hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
        raise FinetuneError(
            f"dataset {name!r}",
            f"is not in the registry {self.file}",
            f"{hint}known datasets: {', '.join(self.entries)}; or pass a JSONL path, or add a registry entry",
        )

    def resolve(
        self,
        name_or_path: str,
        *,
        full: bool = False,
        cache_dir: Path | None = None,
        opener: Opener | None = None,
    ) -> ResolvedDataset:
        """A registry name (its sample, or with ``full`` its pinned full set) or a local JSONL path."""
        if name_or_path not in self.entries and _looks_like_path(name_or_path):
            return _local(Path(name_or_path).expanduser())
        entry = self.get(name_or_path)
        if not full:
            return ResolvedDataset(entry.name, entry.sample, "sample", sha256_file(entry.sample), entry.kind)
        if not entry.pinned:
            raise FinetuneError(
                f"{self.file}: dataset {entry.name!r}",
                "has no pinned full dataset (url and sha256 are empty)",
                "pass your copy with --dataset PATH, or add url and sha256 to the registry entry",
            )
        assert entry.url is not None and entry.sha256 is not None
        where = f"{self.file}: dataset {entry.name!r}"
        path = fetch(entry.url, entry.sha256, cache_dir or default_cache_dir(), where, opener or _urlopen)
        return ResolvedDataset(entry.name, path, "full", entry.sha256, entry.kind)


def _looks_like_path(text: str) -> bool:
    return (
        os.sep in text
        or "/" in text
        or text.endswith((".jsonl", ".json"))
        or Path(text).expanduser().exists()
    )


def _local(path: Path) -> ResolvedDataset:
    if not path.is_file():
        raise FinetuneError(
            str(path), "does not exist or is not a file", "pass an existing JSONL file or a registry name"
        )
    resolved = path.resolve()
    return ResolvedDataset(resolved.stem, resolved, "local", sha256_file(resolved))


def _urlopen(url: str) -> BinaryIO:
    response: BinaryIO = urllib.request.urlopen(url, timeout=60)
    return response


def fetch(url: str, sha256: str, cache_dir: Path, where: str, opener: Opener) -> Path:
    """Download ``url`` into ``cache_dir`` once and return it; a hash mismatch removes the file and raises."""
    target = cache_dir / f"{sha256}.jsonl"
    if target.exists():
        if sha256_file(target) == sha256:
            return target
        target.unlink()  # a corrupted cache entry: fetch again
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    try:
        with opener(url) as src, partial.open("wb") as dst:
            shutil.copyfileobj(src, dst)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise FinetuneError(
            where, f"cannot download {url} ({exc})", "check the URL and the network, or pass --dataset PATH"
        ) from exc
    got = sha256_file(partial)
    if got != sha256:
        partial.unlink()
        raise FinetuneError(
            where,
            f"the file downloaded from {url} has sha256 {got}, but the registry pins {sha256}; removed it",
            "the file changed at its source or the pin is wrong: check which, then fix the registry's sha256",
        )
    partial.replace(target)
    return target


def _entry(raw: Mapping[str, Any], root: Path) -> DatasetEntry:
    return DatasetEntry(
        name=raw["name"],
        kind=raw["kind"],
        description=raw["description"],
        sample=(root / raw["sample"]).resolve(),
        source=raw["source"],
        twin=raw.get("twin"),
        url=raw.get("url") or None,
        sha256=raw.get("sha256") or None,
    )


def _schema_problems(data: Any) -> list[str]:
    return [p.removeprefix("-: ") for p in schema_problems(data, _SCHEMA, {}, "-")]


def _semantic_problems(entries: list[Mapping[str, Any]], root: Path) -> list[str]:
    by_name: dict[str, Mapping[str, Any]] = {}
    problems: list[str] = []
    for i, e in enumerate(entries):
        at = f"at $.datasets[{i}]"
        if e["name"] in by_name:
            problems.append(f"{at}.name: {e['name']!r} appears twice; fix: give each entry its own name")
        by_name[e["name"]] = e
        if not (root / e["sample"]).is_file():
            problems.append(
                f"{at}.sample: {root / e['sample']} does not exist; fix: point at a shipped JSONL sample"
            )
        if bool(e.get("url")) != bool(e.get("sha256")):
            problems.append(
                f"{at}: url and sha256 go together; fix: give both (a pinned download) or neither"
            )
    for i, e in enumerate(entries):
        problems += _twin_problems(f"at $.datasets[{i}].twin", e, by_name)
    return problems


def _twin_problems(at: str, entry: Mapping[str, Any], by_name: Mapping[str, Mapping[str, Any]]) -> list[str]:
    twin = entry.get("twin")
    if twin is None:
        return []
    if entry["kind"] not in ("domain", "control"):
        return [f"{at}: a {entry['kind']} set has no twin; fix: remove 'twin'"]
    other = by_name.get(twin)
    if other is None:
        return [f"{at}: {twin!r} is not a registered dataset; fix: add it or name an existing one"]
    want = "control" if entry["kind"] == "domain" else "domain"
    if other["kind"] != want:
        return [
            f"{at}: the twin of a {entry['kind']} must be a {want}, {twin!r} is a {other['kind']};"
            f" fix: pair it with a {want}"
        ]
    if other.get("twin") != entry["name"]:
        return [
            f"{at}: {twin!r} names {other.get('twin')!r} as its twin, not {entry['name']!r};"
            " fix: make the pair mutual"
        ]
    return []
