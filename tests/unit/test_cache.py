"""Tests for the content-addressed sqlite cache."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_emguard.backends.base import digest_files
from pytest_emguard.cache import Cache, cache_key, exclusive, hub_blob_sha256

json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.text(max_size=8),
    st.floats(allow_nan=False, allow_infinity=False),
)
json_value = st.recursive(
    json_scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
field_dicts = st.dictionaries(
    st.text(max_size=8).filter(lambda k: k != "kind"), json_value, min_size=1, max_size=6
)


@given(field_dicts, st.randoms(use_true_random=False))
def test_key_ignores_insertion_order(fields: dict[str, Any], rnd: Any) -> None:
    items = list(fields.items())
    rnd.shuffle(items)
    assert cache_key("answer", dict(items)) == cache_key("answer", fields)


@given(field_dicts, st.data())
def test_key_changes_with_any_value(fields: dict[str, Any], data: st.DataObject) -> None:
    key = data.draw(st.sampled_from(sorted(fields)))
    new = data.draw(json_value.filter(lambda v: v != fields[key] or type(v) is not type(fields[key])))
    changed = {**fields, key: new}
    assert cache_key("answer", changed) != cache_key("answer", fields)


@given(field_dicts, st.text(max_size=8), st.text(max_size=8))
def test_key_changes_with_kind(fields: dict[str, Any], a: str, b: str) -> None:
    if a != b:
        assert cache_key(a, fields) != cache_key(b, fields)


def test_key_is_sha256_hex() -> None:
    key = cache_key("verdict", {"q": "x"})
    assert len(key) == 64
    int(key, 16)


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[Cache]:
    c = Cache.open(tmp_path / "cache")
    yield c
    c.close()


def test_round_trip_and_counters(cache: Cache) -> None:
    records = {
        cache_key("answer", {"i": i}): {"text": f"answer {i}", "i": i, "nested": [1, {"a": None}]}
        for i in range(3)
    }
    assert cache.get_many(records) == {}
    assert (cache.hits, cache.misses) == (0, 3)
    cache.put_many("answer", records)
    assert cache.writes == 3
    missing = cache_key("answer", {"i": 99})
    got = cache.get_many([*records, missing, missing])
    assert got == records
    assert (cache.hits, cache.misses) == (3, 4)  # a repeated key is looked up once


def test_count_by_kind(cache: Cache) -> None:
    cache.put_many("answer", {"a1": {"x": 1}, "a2": {"x": 2}})
    cache.put_many("verdict", {"v1": {"label": "scored"}})
    cache.put_many("answer", {"a1": {"x": 3}})  # replace, not add
    assert cache.count() == 3
    assert cache.count("answer") == 2
    assert cache.count("verdict") == 1
    assert cache.count("nothing") == 0
    assert cache.get_many(["a1"]) == {"a1": {"x": 3}}


def test_many_keys_beyond_one_chunk(cache: Cache) -> None:
    records = {f"k{i}": {"i": i} for i in range(1203)}
    cache.put_many("answer", records)
    assert cache.get_many(records) == records


def test_wal_mode(cache: Cache) -> None:
    conn = sqlite3.connect(cache.path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
    finally:
        conn.close()


def test_second_open_sees_records(tmp_path: Path) -> None:
    first = Cache.open(tmp_path / "c")
    second = Cache.open(tmp_path / "c")
    try:
        first.put_many("answer", {"k": {"v": 1}})
        assert second.get_many(["k"]) == {"k": {"v": 1}}
        second.put_many("verdict", {"j": {"v": 2}})
        assert first.count() == 2
    finally:
        first.close()
        second.close()
    third = Cache.open(tmp_path / "c")
    try:
        assert third.count() == 2
    finally:
        third.close()


def test_gitignore_created_and_kept(tmp_path: Path) -> None:
    directory = tmp_path / "deep" / "cache"
    Cache.open(directory).close()
    gitignore = directory / ".gitignore"
    assert gitignore.exists()
    assert "*" in gitignore.read_text().splitlines()
    gitignore.write_text("custom\n")
    Cache.open(directory).close()
    assert gitignore.read_text() == "custom\n"


def test_file_sha256(cache: Cache, tmp_path: Path) -> None:
    f = tmp_path / "weights.bin"
    f.write_bytes(b"abc" * 1000)
    assert cache.file_sha256(f) == hashlib.sha256(b"abc" * 1000).hexdigest()
    assert cache.file_sha256(f) == hashlib.sha256(b"abc" * 1000).hexdigest()  # remembered
    st_before = f.stat()
    # same size, different bytes: the remembered hash must not be reused once mtime moves
    f.write_bytes(b"xyz" * 1000)
    os.utime(f, ns=(st_before.st_atime_ns, st_before.st_mtime_ns + 2_000_000_000))
    assert cache.file_sha256(f) == hashlib.sha256(b"xyz" * 1000).hexdigest()
    # different size
    f.write_bytes(b"longer content")
    assert cache.file_sha256(f) == hashlib.sha256(b"longer content").hexdigest()


def test_file_sha256_remembered_across_connections(tmp_path: Path) -> None:
    f = tmp_path / "w.bin"
    f.write_bytes(b"hello")
    with_cache = Cache.open(tmp_path / "c")
    digest = with_cache.file_sha256(f)
    with_cache.close()
    conn = sqlite3.connect(tmp_path / "c" / "records.sqlite3")
    try:
        rows = conn.execute("SELECT path, sha256 FROM file_hashes").fetchall()
    finally:
        conn.close()
    assert rows == [(str(f), digest)]


def test_exclusive_enter_sequentially(tmp_path: Path) -> None:
    directory = tmp_path / "lockdir"
    entered = 0
    for _ in range(3):
        with exclusive(directory):
            entered += 1
            assert (directory / "evaluate.lock").exists()
    assert entered == 3


HOLD = """\
import sys, time
from pathlib import Path
from pytest_emguard.cache import exclusive
with exclusive(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(120)
"""


def test_exclusive_holds_other_processes_off_until_its_holder_is_killed(tmp_path: Path) -> None:
    """A second process cannot take the lock while the first holds it; killed (SIGKILL: no cleanup runs), the
    holder leaves no stale lock behind."""
    import filelock

    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(filelock.Timeout):
            filelock.FileLock(tmp_path / "evaluate.lock", timeout=0.3).acquire()
        holder.kill()
        holder.wait(timeout=30)
        with filelock.FileLock(tmp_path / "evaluate.lock", timeout=10), exclusive(tmp_path / "other"):
            pass
        with exclusive(tmp_path):
            assert (tmp_path / "evaluate.lock").exists()
    finally:
        holder.kill()
        holder.wait(timeout=30)


def test_exclusive_releases_on_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), exclusive(tmp_path):
        raise RuntimeError("boom")
    with exclusive(tmp_path):
        pass


def test_kind_is_not_a_field_name() -> None:
    with pytest.raises(ValueError, match="reserved"):
        cache_key("answer", {"kind": "verdict"})


def test_a_damaged_store_is_named_with_the_fix_and_left_as_it_was(tmp_path: Path) -> None:
    """sqlite's header, then garbage: the door's header check passes it, so opening it must name it."""
    from pytest_emguard.errors import ConfigError

    store = tmp_path / "records.sqlite3"
    damaged = b"SQLite format 3\x00" + bytes(range(256)) * 16
    store.write_bytes(damaged)
    with pytest.raises(ConfigError) as err:
        Cache.open(tmp_path)
    assert err.value.where == str(store) and "record store is damaged (sqlite: " in err.value.problem
    assert f"mv {store} {store}.damaged" in err.value.fix
    assert store.read_bytes() == damaged


# -- a Hugging Face hub cache: the blob's name is the file's sha256 ---------------------------------------------


def _safetensors(n_floats: int) -> bytes:
    """A real safetensors file: one F32 tensor of ``n_floats`` values (no torch needed to write one)."""
    tensor = {"dtype": "F32", "shape": [n_floats], "data_offsets": [0, 4 * n_floats]}
    header = json.dumps({"w": tensor}).encode()
    return struct.pack("<Q", len(header)) + header + bytes(range(4 * n_floats))


def _hub_file(hub: Path, name: str, content: bytes, blob: str, repo: str = "models--org--tiny") -> Path:
    """``hub/<repo>/snapshots/<rev>/<name>`` linked to ``../../blobs/<blob>``, as huggingface_hub lays it out."""
    blobs = hub / repo / "blobs"
    snapshot = hub / repo / "snapshots" / ("0" * 40)
    blobs.mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    (blobs / blob).write_bytes(content)
    link = snapshot / name
    link.symlink_to(Path("..") / ".." / "blobs" / blob)
    return link


def test_a_hub_cache_file_is_named_by_its_blob_not_read(tmp_path: Path) -> None:
    """The blob's name is returned without hashing: a blob named by another file's sha256 proves the file was
    not read; the same bytes outside the hub cache are hashed."""
    content = _safetensors(8)
    named = hashlib.sha256(b"not these bytes").hexdigest()
    link = _hub_file(tmp_path / "hub", "model.safetensors", content, named)
    assert hub_blob_sha256(link) == named
    cache = Cache.open(tmp_path / "c")
    try:
        assert cache.file_sha256(link) == named
        copy = tmp_path / "copy.safetensors"
        copy.write_bytes(content)
        assert cache.file_sha256(copy) == hashlib.sha256(content).hexdigest()
    finally:
        cache.close()
    # huggingface_hub's cache-wide store of Xet files: the repository's blob links on to <hub>/blobs/<xx>/<xet hash>
    xet = "ab" + "c" * 62
    (tmp_path / "hub" / "blobs" / "ab").mkdir(parents=True)
    (tmp_path / "hub" / "blobs" / "ab" / xet).write_bytes(content)
    etag = hashlib.sha256(b"what the hub named it").hexdigest()
    shared = _hub_file(tmp_path / "hub", "model.safetensors", b"", etag, repo="models--org--shared")
    blob = tmp_path / "hub" / "models--org--shared" / "blobs" / etag
    blob.unlink()
    blob.symlink_to(Path("..") / ".." / "blobs" / "ab" / xet)
    assert hub_blob_sha256(shared) == etag  # the repository's name for it, not the store's
    snapshot = link.parent
    (snapshot / "config.json").write_text("{}")
    # the hasher is asked for config.json (a file of its own), never for the weights linked into the hub cache
    asked: list[str] = []

    def hasher(path: Path) -> str:
        asked.append(path.name)
        return "h"

    digest_files(snapshot, hasher)
    assert asked == ["config.json"]


def test_only_a_sound_hub_blob_is_trusted(tmp_path: Path) -> None:
    """Hashed from its bytes instead: a blob named by a 40-hex git id (the hub's small files), a blob cut short
    of its safetensors header, an empty blob, a link from outside the repository's snapshots."""
    hub = tmp_path / "hub"
    good = _safetensors(8)
    cut = _safetensors(8)[:-5]
    small = _hub_file(hub, "config.json", b"{}", hashlib.sha1(b"{}").hexdigest())
    short = _hub_file(hub, "model.safetensors", cut, hashlib.sha256(good).hexdigest())
    empty = _hub_file(hub, "empty.bin", b"", hashlib.sha256(b"").hexdigest(), repo="models--org--other")
    for path in (small, short, empty):
        assert hub_blob_sha256(path) is None, path
    elsewhere = tmp_path / "mine"
    elsewhere.mkdir()
    (elsewhere / "model.safetensors").symlink_to(short.resolve())
    assert hub_blob_sha256(elsewhere / "model.safetensors") is None
    assert hub_blob_sha256(short.resolve()) is None  # the blob itself, reached without the hub's link
    cache = Cache.open(tmp_path / "c")
    try:
        assert cache.file_sha256(short) == hashlib.sha256(cut).hexdigest()
    finally:
        cache.close()


def test_a_fresh_cache_directory_reads_the_machines_file_hashes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model's sha256 is computed once per machine: a run on a new cache directory finds it in
    EMGUARD_HOME/file_hashes.sqlite3 by (path, size, mtime) instead of reading the weights again; a file whose
    mtime moved is hashed anew."""
    import pytest_emguard.cache as cache_module

    monkeypatch.setenv("EMGUARD_HOME", str(tmp_path / "home"))
    f = tmp_path / "w.bin"
    f.write_bytes(b"weights")
    first = Cache.open(tmp_path / "one")
    digest = first.file_sha256(f)
    first.close()
    assert (tmp_path / "home" / "file_hashes.sqlite3").is_file()
    hashed: list[Path] = []

    def counted(path: Path) -> str:
        hashed.append(path)
        return "recomputed"

    monkeypatch.setattr(cache_module, "sha256_file", counted)
    second = Cache.open(tmp_path / "two")
    assert second.file_sha256(f) == digest and hashed == []
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert second.file_sha256(f) == "recomputed" and hashed == [f]
    second.close()
