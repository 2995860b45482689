"""Committed base-model results (``--em-baseline=FILE``): the base side's records, so that CI gates a fine-tune
without generating, reading or judging its base again.

A baseline is a JSON file of cache records (key, kind, value): the base model's answers and readings and the
judge's verdicts on those answers, with the base fingerprint they were made under.  Loading one puts its records
into the run's cache, where the evaluation finds them exactly as if it had made them; it is used only when its
base fingerprint matches the base being gated (weights, config, chat template, device, precision and library
versions), otherwise the run stops with a clear error.  As in pytest-regressions, a missing baseline is written
and the run fails (review the file, commit it, rerun); ``--em-update-baseline`` writes it again.  Under
``CI=true`` nothing is written: a missing baseline and ``--em-update-baseline`` are usage errors there.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_emguard.errors import ConfigError

if TYPE_CHECKING:
    from pytest_emguard.checks.base import Query
    from pytest_emguard.run.context import RunContext
    from pytest_emguard.run.records import Rows

__all__ = [
    "SCHEMA_ID",
    "base_keys",
    "check_options",
    "in_ci",
    "load",
    "load_baseline",
    "read",
    "write",
    "write_baseline",
]

SCHEMA_ID = "urn:pytest-emguard:baseline:1"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def check_options(path: str | None, update: bool, distributed: bool = False) -> None:
    """Configure-time checks: nothing is written under CI=true, nor under pytest-xdist (its workers would not all
    fail the run that wrote it)."""
    if update and path is None:
        raise ConfigError(
            "--em-update-baseline", "names no baseline file", "add --em-baseline=FILE (the file to write)"
        )
    blocked = None if path is None else next((p for p in Path(path).parents if p.exists()), None)
    if path is not None and (Path(path).is_dir() or (blocked is not None and not blocked.is_dir())):
        where = "is a directory" if Path(path).is_dir() else f"lies under {blocked}, which is a file"
        raise ConfigError(
            "--em-baseline",
            f"{path} {where}: the baseline is one JSON file",
            "name a file, e.g. --em-baseline=baselines/base.json (a missing folder is made)",
        )
    if update and in_ci():
        raise ConfigError(
            "--em-update-baseline",
            "refused under CI=true: a baseline is written and reviewed outside CI, then committed",
            "run it on a workstation, review the file's diff and commit it",
        )
    writes = path is not None and (update or not Path(path).is_file())
    if writes and distributed and not in_ci():
        raise ConfigError(
            "--em-baseline",
            f"{path} would be written under pytest-xdist, whose workers cannot all fail the run that wrote it",
            "write it in a run without -n, review it and commit it; later runs may use -n",
        )
    if path is not None and not update and Path(path).is_file():
        read(Path(path))
    if path is not None and in_ci() and not Path(path).is_file():
        raise ConfigError(
            "--em-baseline",
            f"{path} does not exist, and under CI=true no baseline is written",
            "run the gate once outside CI with --em-baseline (it writes the missing file), review it and commit it",
        )


def read(path: Path) -> dict[str, Any]:
    """The baseline file's JSON, its form checked (the schema id, a base fingerprint, records that are [key, kind,
    value] triples); a ``ConfigError`` naming the file and what is wrong.  Run at configure time too, so that a
    garbled file stops the run before a model loads."""
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise ConfigError(
            "--em-baseline", f"cannot read {path} ({exc.strerror})", "check its permissions"
        ) from exc
    except ValueError as exc:  # bad UTF-8 or bad JSON
        raise _garbled(path, f"it is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise _garbled(path, f"it holds a JSON {type(data).__name__}, not an object")
    problems = []
    if data.get("$schema") != SCHEMA_ID:
        problems.append(f'its "$schema" is {data.get("$schema")!r}, not {SCHEMA_ID!r}')
    if not isinstance(data.get("base_fingerprint"), str):
        problems.append('it has no "base_fingerprint" string')
    records = data.get("records")
    if not isinstance(records, list):
        problems.append('its "records" is not a list')
    else:
        bad = [i for i, r in enumerate(records) if not _record(r)]
        if bad:
            problems.append(
                f"{len(bad)} of its {len(records)} records {'is' if len(bad) == 1 else 'are'} not [key, kind, "
                f"value] (the first: record {bad[0]})"
            )
    if problems:
        raise _garbled(path, "; ".join(problems))
    return data


def _record(record: object) -> bool:
    return (
        isinstance(record, list)
        and len(record) == 3
        and isinstance(record[0], str)
        and isinstance(record[1], str)
        and isinstance(record[2], dict)
    )


def _garbled(path: Path, problem: str) -> ConfigError:
    return ConfigError(
        "--em-baseline",
        f"{path} is not a pytest-emguard baseline: {problem}",
        f"restore the file written by --em-baseline (git checkout -- {path}), or delete it and run once "
        "outside CI to record it again",
    )


def load(path: Path, cache: Any, base_fingerprint: str) -> int:
    """Put the baseline's records into the cache (records already there are kept); returns how many it holds."""
    data = read(path)
    if data.get("base_fingerprint") != base_fingerprint:
        raise ConfigError(
            "--em-baseline",
            f"{path} was recorded for another base (fingerprint {str(data.get('base_fingerprint'))[:16]}..., this "
            f"base's is {base_fingerprint[:16]}...): its weights, config, chat template, device, precision or "
            "library versions differ, so its records would not be this base's",
            "use the base it was recorded for, or record it again outside CI with --em-update-baseline",
        )
    rows: dict[str, dict[str, Mapping[str, Any]]] = {}
    for key, kind, value in data["records"]:
        rows.setdefault(str(kind), {})[str(key)] = value
    for kind, items in rows.items():
        cache.put_many(kind, items, keep=True)
    return len(data["records"])


def write(
    path: Path,
    cache: Any,
    keys: Iterable[str],
    base_fingerprint: str,
    judge_fingerprint: str,
    about: Mapping[str, Any],
) -> int:
    """Write the records under ``keys`` (the base side's) to ``path``; returns how many."""
    from pytest_emguard.digest import atomic_write
    from pytest_emguard.version import __version__

    records = cache.export(keys)
    data = {
        "$schema": SCHEMA_ID,
        "plugin": __version__,
        "base_fingerprint": base_fingerprint,
        "judge_fingerprint": judge_fingerprint,
        **about,
        "records": [[key, kind, value] for key, (kind, value) in sorted(records.items())],
    }
    try:
        atomic_write(path, json.dumps(data, indent=1, sort_keys=False, ensure_ascii=False) + "\n")
    except OSError as exc:
        raise ConfigError(
            "--em-baseline", f"cannot write {path} ({exc.strerror})", "pass a writable path"
        ) from exc
    return len(records)


def load_baseline(ctx: RunContext) -> Path | None:
    """--em-baseline: load its base records into the cache where it exists (and is not being rewritten)."""
    given = ctx.config.options.baseline
    if given is None:
        return None
    path = Path(given)
    if path.is_file() and not ctx.config.options.update_baseline:
        n = load(path, ctx.cache, ctx.fingerprints["base"])
        ctx.stats.baseline = ("loaded", str(path), n)
        ctx.progress(f"baseline: {n} base records from {path}")
    return path


def write_baseline(ctx: RunContext, asked: Sequence[Query], rows: Rows) -> None:
    """--em-baseline: write the base side's records where the file is missing, or with --em-update-baseline."""
    options = ctx.config.options
    path = Path(str(options.baseline))
    existed = path.is_file()
    if existed and not options.update_baseline:
        return
    about = {"base": ctx.config.model.base, "seed": options.seed, "checks": sorted({q.check for q in asked})}
    keys = base_keys(ctx, asked, rows)
    n = write(path, ctx.cache, keys, ctx.fingerprints["base"], ctx.judge.fingerprint, about)
    ctx.stats.baseline = ("updated" if existed else "written", str(path), n)
    ctx.progress(f"baseline: {n} base records written to {path}")


def base_keys(ctx: RunContext, asked: Sequence[Query], rows: Rows) -> list[str]:
    """The cache keys of the base side's records: answers and readings under the base fingerprint, and the
    judge's verdicts on the base answers."""
    from pytest_emguard.run.plan import answer_key, reading_key, samples_for, verdict_key

    keys, seed, fp = [], ctx.config.options.seed, ctx.fingerprints["base"]
    for q in asked:
        if q.reading != "sample":
            keys.append(reading_key(fp, q))
            continue
        keys += [answer_key(fp, q, r) for r in q.requests(samples_for(ctx.config, q), seed)]
        if q.judged:
            keys += [
                verdict_key(ctx.judge.fingerprint, q.question, s.answer)
                for s in rows.get(q.key, ())
                if s is not None
            ]
    return keys
