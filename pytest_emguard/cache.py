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
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pytest_emguard.digest import json_sha256

__all__ = ["Cache", "cache_key", "exclusive", "file_lock", "sha256_file"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (key TEXT PRIMARY KEY, kind TEXT NOT NULL, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS file_hashes (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL
);
"""


def cache_key(kind: str, fields: Mapping[str, Any]) -> str:
    """sha256 over canonical JSON of ``fields``; ``kind`` keeps answers and verdicts apart."""
    if "kind" in fields:  # it would overwrite ``kind`` and let two kinds share a key
        raise ValueError("cache_key: 'kind' is reserved and cannot be a field name")
    return json_sha256({"kind": kind, **fields})


class Cache:
    """One sqlite file; safe to share between processes (WAL, busy timeout)."""

    __slots__ = ("_conn", "hits", "misses", "path", "writes")

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn, self.path = conn, path
        self.hits = self.misses = self.writes = 0

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
        wanted = list(dict.fromkeys(keys))
        found: dict[str, dict[str, Any]] = {k: json.loads(v) for k, _, v in self._rows(wanted)}
        self.hits += len(found)
        self.misses += len(wanted) - len(found)
        return found

    def put_many(self, kind: str, items: Mapping[str, Mapping[str, Any]], *, keep: bool = False) -> None:
        """Store records; ``keep``: a key already stored keeps its record (a baseline loaded into the cache)."""
        rows = [(k, kind, json.dumps(v, sort_keys=True)) for k, v in items.items()]
        verb = "INSERT OR IGNORE" if keep else "INSERT OR REPLACE"
        with self._transaction():
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
        """sha256 of a file's bytes, remembered by (path, size, mtime) so large weights are hashed once."""
        st = path.stat()
        row = self._conn.execute(
            "SELECT sha256 FROM file_hashes WHERE path = ? AND size = ? AND mtime_ns = ?",
            (str(path), st.st_size, st.st_mtime_ns),
        ).fetchone()
        if row:
            return str(row[0])
        digest = sha256_file(path)
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


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive inter-process lock on ``path`` (created if missing); no lock where fcntl is missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            import fcntl
        except ImportError:  # Windows: run without the lock; sqlite still serialises writes
            yield
            return
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def exclusive(directory: Path) -> contextlib.AbstractContextManager[None]:
    """One pytest-xdist worker evaluates while the others wait, then read the cache."""
    return file_lock(directory / "evaluate.lock")
