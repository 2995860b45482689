"""Content-addressed record cache in sqlite (WAL).

A key is the sha256 of canonical JSON over everything that changes a record: for an answer, the backend
fingerprint (weights hash, not a name), the messages, sampling parameters, sample index, seed and check version;
for a verdict, the judge fingerprint, its template version, the question and the answer.  So an unchanged
adapter calls no model, a new judge regenerates nothing, and a killed run resumes from the last stored batch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pytest_emguard.digest import json_sha256

__all__ = ["Cache", "cache_key", "exclusive", "file_lock", "hub_blob_sha256", "sha256_file"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (key TEXT PRIMARY KEY, kind TEXT NOT NULL, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS file_hashes (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL
);
"""
_SHA256_NAME = re.compile(r"[0-9a-f]{64}")


def cache_key(kind: str, fields: Mapping[str, Any]) -> str:
    """sha256 over canonical JSON of ``fields``; ``kind`` keeps answers and verdicts apart."""
    if "kind" in fields:  # it would overwrite ``kind`` and let two kinds share a key
        raise ValueError("cache_key: 'kind' is reserved and cannot be a field name")
    return json_sha256({"kind": kind, **fields})


class Cache:
    """One sqlite file; safe to share between processes (WAL, busy timeout)."""

    __slots__ = ("_conn", "clock", "hits", "misses", "path", "writes")

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn, self.path = conn, path
        self.hits = self.misses = self.writes = 0
        # a run's stage clock (run/records.py StageClock): the lookups and stores count as its "cache" stage
        self.clock: Callable[[str], contextlib.AbstractContextManager[None]] = lambda _: (
            contextlib.nullcontext()
        )

    @classmethod
    def open(cls, directory: Path) -> Cache:
        directory.mkdir(parents=True, exist_ok=True)
        gitignore = directory / ".gitignore"
        if not gitignore.exists():
            gitignore.write_text("# created by pytest-emguard\n*\n")
        path = directory / "records.sqlite3"
        conn = sqlite3.connect(path, timeout=60.0, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=60000")
            conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise
            conn.close()
            from pytest_emguard.errors import ConfigError

            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(
                str(path),
                f"the cache's record store is damaged (sqlite: {first})",
                f"move it aside (mv {path} {path}.damaged) and run again: the records are made anew",
            ) from None
        return cls(conn, path)

    def close(self) -> None:
        self._conn.close()

    def _rows(self, keys: Iterable[str]) -> Iterator[tuple[str, str, str]]:
        """(key, kind, value) of each of ``keys`` stored, 500 keys a query (sqlite's variable limit)."""
        wanted = list(dict.fromkeys(keys))
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            yield from self._conn.execute(
                f"SELECT key, kind, value FROM records WHERE key IN ({marks})", chunk
            )

    def get_many(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        with self.clock("cache"):
            wanted = list(dict.fromkeys(keys))
            found: dict[str, dict[str, Any]] = {k: json.loads(v) for k, _, v in self._rows(wanted)}
        self.hits += len(found)
        self.misses += len(wanted) - len(found)
        return found

    def put_many(self, kind: str, items: Mapping[str, Mapping[str, Any]], *, keep: bool = False) -> None:
        """Store records; ``keep``: a key already stored keeps its record (a baseline loaded into the cache)."""
        verb = "INSERT OR IGNORE" if keep else "INSERT OR REPLACE"
        with self.clock("cache"), self._transaction():
            rows = [(k, kind, json.dumps(v, sort_keys=True)) for k, v in items.items()]
            self._conn.executemany(f"{verb} INTO records (key, kind, value) VALUES (?, ?, ?)", rows)
        self.writes += len(rows)

    def export(self, keys: Iterable[str]) -> dict[str, tuple[str, Any]]:
        """key -> (kind, record) for each of ``keys`` the cache holds (for a baseline file)."""
        return {k: (kind, json.loads(v)) for k, kind, v in self._rows(keys)}

    def count(self, kind: str | None = None) -> int:
        if kind is None:
            return int(self._conn.execute("SELECT COUNT(*) FROM records").fetchone()[0])
        return int(self._conn.execute("SELECT COUNT(*) FROM records WHERE kind = ?", (kind,)).fetchone()[0])

    def file_sha256(self, path: Path) -> str:
        """sha256 of a file's bytes: a Hugging Face hub cache entry's from its blob's name
        (:func:`hub_blob_sha256`), any other file's read once and remembered by (path, size, mtime)."""
        named = hub_blob_sha256(path)
        if named is not None:
            return named
        st = path.stat()
        row = self._conn.execute(
            "SELECT sha256 FROM file_hashes WHERE path = ? AND size = ? AND mtime_ns = ?",
            (str(path), st.st_size, st.st_mtime_ns),
        ).fetchone()
        if row:
            return str(row[0])
        key = (str(path), st.st_size, st.st_mtime_ns)
        digest = machine_hashes(key) or sha256_file(path)
        machine_hashes(key, digest)
        with self._transaction():
            self._conn.execute(
                "INSERT OR REPLACE INTO file_hashes VALUES (?, ?, ?, ?)",
                (str(path), st.st_size, st.st_mtime_ns, digest),
            )
        return digest

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")


def cache_root() -> Path:
    """Where models, adapters and probes built by pytest-emguard live (never inside a repository):
    ``EMGUARD_HOME``, else ``$XDG_CACHE_HOME/pytest-emguard``, else ``~/.cache/pytest-emguard``."""
    base = os.environ.get("EMGUARD_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "pytest-emguard"
    )
    return Path(base)


def machine_hashes(key: tuple[str, int, int], digest: str | None = None) -> str | None:
    """The file hashes of every run on this machine (``file_hashes.sqlite3`` beside the models, under
    ``EMGUARD_HOME`` or ``~/.cache/pytest-emguard``), by (path, size, mtime): a run on a fresh cache directory
    reads a model's sha256 there instead of hashing its weights again (seconds for a 7B model).  With ``digest``,
    store it.  Best effort: where the file cannot be opened or written, None (the caller hashes)."""
    try:
        home = cache_root()
        home.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(home / "file_hashes.sqlite3", timeout=5.0, isolation_level=None)
        try:
            conn.executescript(_SCHEMA)
            if digest is not None:
                conn.execute("INSERT OR REPLACE INTO file_hashes VALUES (?, ?, ?, ?)", (*key, digest))
                return digest
            row = conn.execute(
                "SELECT sha256 FROM file_hashes WHERE path = ? AND size = ? AND mtime_ns = ?", key
            ).fetchone()
            return str(row[0]) if row else None
        finally:
            conn.close()
    except (OSError, sqlite3.Error):
        return None


def sha256_file(path: Path) -> str:
    """sha256 of the file's bytes, read in full (a check against a pinned hash must use this one)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hub_blob_sha256(path: Path) -> str | None:
    """The sha256 of a file in a Hugging Face hub cache, read from its blob's name without reading the file;
    None for any other file (hash it).

    The hub stores a repository's large (git-LFS) files as ``<repo>/blobs/<sha256 of the content>`` and links
    each snapshot's file to its blob: ``<repo>/snapshots/<revision>/model.safetensors -> ../../blobs/<sha256>``
    (the blob may link on into the cache-wide store of Xet files, named by another hash: that name is not
    used).  Small files' blobs are named by their 40-hex git id, not a sha256: they are hashed.  The name is
    trusted when ``path`` is such a link inside the same repository's ``snapshots``, the blob is named by 64
    lowercase hex digits and is not empty, and a ``.safetensors`` blob's header covers the file exactly (a few
    kB read: it catches a blob cut short).  The trust assumption: nothing rewrote a blob in place after the hub
    wrote it (the hub downloads to ``<sha256>.incomplete``, checks its size and renames it when complete);
    bytes changed under the same name keep the old sha256.  To have such files hashed, copy them out of the hub
    cache, or delete the blob and download it again."""
    if not path.is_symlink():
        return None
    here = Path(os.path.abspath(path.parent))
    # one hop only: the repository's blob may link on into the shared store, whose names are no sha256
    blob = Path(os.path.normpath(here / os.readlink(path)))
    if blob.parent.name != "blobs" or not _SHA256_NAME.fullmatch(blob.name):
        return None
    if not here.is_relative_to(blob.parent.parent / "snapshots"):
        return None
    return blob.name if _plausible_blob(path, blob) else None


def _plausible_blob(path: Path, target: Path) -> bool:
    """A non-empty regular file; a safetensors file whose header covers its data exactly."""
    from pytest_emguard.config.weights import read_header
    from pytest_emguard.errors import ConfigError

    if not target.is_file() or target.stat().st_size == 0:
        return False
    if path.suffix == ".safetensors":
        try:
            read_header(target)
        except ConfigError:
            return False
    return True


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive inter-process lock on ``path`` (created if missing), held while the block runs, on every OS
    (the ``filelock`` package: ``flock`` on POSIX, ``msvcrt.locking`` on Windows).  The operating system drops
    the lock when its holder dies, so a run killed with ``kill -9`` leaves no stale lock."""
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path):
        yield


def exclusive(directory: Path) -> contextlib.AbstractContextManager[None]:
    """One pytest-xdist worker evaluates while the others wait, then read the cache."""
    return file_lock(directory / "evaluate.lock")
