"""The one place for canonical-JSON hashing, atomic file writes and installed package versions: what a record's
provenance is made of (stdlib only)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "canonical_json", "json_sha256", "package_versions", "text_sha256"]


def canonical_json(data: Any, *, sort_keys: bool = True) -> str:
    """Compact JSON with sorted keys: equal data gives equal text, whatever the dict order."""
    return json.dumps(data, sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=False)


def json_sha256(data: Any, *, sort_keys: bool = True) -> str:
    return text_sha256(canonical_json(data, sort_keys=sort_keys))


def text_sha256(text: str) -> str:
    """sha256 of the text's UTF-8 bytes; a lone surrogate (text decoded from invalid UTF-8) is hashed as is,
    never an error."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write to a sibling temporary file, then rename it over ``path``: readers see the old file or the new one,
    never half of one, and a killed process leaves no torn file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with partial.open("wb") as fh:
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(partial, path)


def package_versions(*names: str) -> dict[str, str]:
    """Installed versions of ``names`` ("absent" when not installed), read from metadata without importing."""
    from importlib import metadata

    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out
