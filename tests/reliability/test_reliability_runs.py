"""Reliability, part two: real runs killed with SIGKILL, and runs that share one cache directory.

Each run is a real ``pytest`` subprocess gating the tiny Qwen2 LoRA adapter against its base with the real
``hf`` backend and the real ``probe`` judge (on the tiny Qwen2).  A run killed while it generates, or while it
judges, and then rerun reuses every stored answer and verdict and ends with exactly the table of a run that was
never interrupted.  Two runs started together on one cache, and ``-n 4``, give the same table, and the cache's
run log (``runs.jsonl``) shows that no answer or verdict was made twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ITEMS = ("harmfulness[", "self_report[", "description[", "persona[")


MACHINERY = (  # the checks of the table below; the others add readings, not machinery
    "version: 1\nroleplay: {susceptibility: {enabled: false}, robustness: {enabled: false}}\n"
    "probes: {behaviour: {enabled: false}}\npersona_direction: {shift: {enabled: false}}\n"
    "recognition: {own: {enabled: false}}\n"
    "score_prediction: {calibration: {enabled: false}, absolute: {enabled: false}}\n"
)


def _args(adapter: Path, judge_model: Path, cache: Path) -> list[str]:
    """The kill and concurrency runs test the machinery, not a check: role-play's 4040 readings, the activations
    and the recognition and prediction follow-ups are left out (the self-rating after each answer still follows
    the first round)."""
    thresholds = cache.parent / "machinery.yaml"
    thresholds.write_text(MACHINERY, encoding="utf-8")
    return [
        f"--em-model={adapter}",
        f"--em-thresholds={thresholds}",
        f"--em-judge=probe:{judge_model}",
        "--em-samples=1",
        "--em-max-new-tokens=6",
        "--em-batch-size=4",
        "--em-device=cpu",
        f"--em-cache-dir={cache}",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:randomly",
        "-v",  # the per-batch counters the kills wait for ("tuned: 4/...")
    ]


def _start(workdir: Path, args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", *args],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _finish(proc: subprocess.Popen[str], timeout: float = 600) -> list[str]:
    """The run's output; its exit code must be the one its release decision line states (1 when an item blocks
    the release; 0 otherwise), so a crash or a wrong exit code fails the test."""
    out, _ = proc.communicate(timeout=timeout)
    lines = out.splitlines()
    _table(lines)
    failing = next(ln for ln in lines if ln.startswith("release decision: ")).startswith(
        "release decision: FAIL"
    )
    assert proc.returncode == (1 if failing else 0), out
    return lines


def _kill_at(proc: subprocess.Popen[str], marker: str, timeout: float = 600) -> list[str]:
    """Read the run's output until a line contains ``marker``, then SIGKILL it (no cleanup runs)."""
    assert proc.stdout is not None
    seen, deadline = [], time.monotonic() + timeout
    for line in proc.stdout:
        seen.append(line.rstrip("\n"))
        if marker in line:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
            assert proc.returncode == -signal.SIGKILL
            return seen
        assert time.monotonic() < deadline, "\n".join(seen)
    raise AssertionError(f"the run ended before {marker!r} appeared:\n" + "\n".join(seen))


def _table(lines: list[str]) -> list[str]:
    rows = [line for line in lines if line.startswith(ITEMS)]
    assert len(rows) == 14, "\n".join(lines)
    return rows


def _records(lines: list[str]) -> str:
    return next(line for line in lines if line.startswith("records: "))


def _log(cache: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (cache / "runs.jsonl").read_text().splitlines()]


def _made(cache: Path) -> tuple[int, int]:
    """Answers and verdicts made over every logged run of this cache."""
    runs = _log(cache)
    return sum(int(r["records_made"]) for r in runs), sum(int(r["verdicts_computed"]) for r in runs)  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def reference(
    tiny_adapter: Path, tiny_qwen: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[list[str], Path]:
    """One uninterrupted run: its table, and its cache (whose run log says how much work a whole run is)."""
    workdir = tmp_path_factory.mktemp("reference")
    lines = _finish(_start(workdir, _args(tiny_adapter, tiny_qwen, workdir / "cache")))
    return lines, workdir / "cache"


def test_a_run_killed_while_generating_resumes_and_ends_identical(
    reference: tuple[list[str], Path], tiny_adapter: Path, tiny_qwen: Path, tmp_path: Path
) -> None:
    lines, ref_cache = reference
    cache = tmp_path / "cache"
    args = _args(tiny_adapter, tiny_qwen, cache)
    killed = _kill_at(_start(tmp_path, args), "tuned: 4/")  # the base side is done, the fine-tune's has begun
    assert not any(line.startswith("records: ") for line in killed)
    resumed = _finish(_start(tmp_path, args))
    generated, cached = _counts(_records(resumed))
    whole = _made(ref_cache)[0]
    # stored before the kill: the base's 64 answers, 84 ratings and 120 description readings, and a batch of the
    # fine-tune's answers
    assert cached >= 64 + 84 + 120 + 4, _records(resumed)
    assert generated + cached == whole
    assert _table(resumed) == _table(lines)


def test_a_run_killed_while_judging_resumes_and_ends_identical(
    reference: tuple[list[str], Path], tiny_adapter: Path, tiny_qwen: Path, tmp_path: Path
) -> None:
    lines, ref_cache = reference
    cache = tmp_path / "cache"
    args = _args(tiny_adapter, tiny_qwen, cache)
    _kill_at(_start(tmp_path, args), "judge: 32/")  # one batch of verdicts stored
    resumed = _finish(_start(tmp_path, args))
    record = _records(resumed)
    answers, verdicts = _made(ref_cache)
    # every first-round answer was stored (2 x (64 answers + 84 ratings + 120 description readings)); the
    # follow-ups of the answers come after judging, so they are made now; one batch of 32 verdicts was stored
    first_round = 2 * (64 + 84 + 120)
    assert record.startswith(
        f"records: {answers - first_round} made, {first_round} from cache; "
        f"{verdicts - 32} verdicts computed, 32 from cache"
    ), record
    assert _table(resumed) == _table(lines)


def test_two_runs_on_one_cache_at_once_do_the_work_once(
    reference: tuple[list[str], Path], tiny_adapter: Path, tiny_qwen: Path, tmp_path: Path
) -> None:
    lines, ref_cache = reference
    cache = tmp_path / "cache"
    args = _args(tiny_adapter, tiny_qwen, cache)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = _start(tmp_path / "a", args), _start(tmp_path / "b", args)
    outputs = [_finish(first), _finish(second)]
    assert [_table(out) for out in outputs] == [_table(lines)] * 2
    assert len(_log(cache)) == 2 and _made(cache) == _made(ref_cache)  # all the work once, none twice
    _integrity(cache)


def test_xdist_workers_share_one_evaluation(
    reference: tuple[list[str], Path], tiny_adapter: Path, tiny_qwen: Path, tmp_path: Path
) -> None:
    lines, ref_cache = reference
    cache = tmp_path / "cache"
    out = _finish(_start(tmp_path, [*_args(tiny_adapter, tiny_qwen, cache), "-n", "4"]))
    assert _table(out) == _table(lines)
    runs = _log(cache)
    assert len(runs) == 4 and _made(cache) == _made(ref_cache), runs  # four workers, one did the work
    assert sum(int(r["records_made"]) > 0 for r in runs) == 1  # type: ignore[call-overload]
    # the evaluating worker's progress reaches the terminal, tagged with its id; only that worker loads the model
    # (twice: the first round, then the follow-ups, after the judge had the memory)
    loads = [line for line in out if line.startswith("[emguard gw") and line.endswith(" and its base")]
    assert loads and len({line.split("]")[0] for line in loads}) == 1, out
    worker = loads[0].split("]")[0]
    assert any(line.startswith(worker) and "generating" in line for line in out), out
    _integrity(cache)


def _counts(record: str) -> tuple[int, int]:
    """(answers generated, answers from cache) from a summary's records line."""
    head = record.removeprefix("records: ").split(";")[0]
    generated, _, rest = head.partition(" made, ")
    return int(generated), int(rest.split(" ")[0])


def _integrity(cache: Path) -> None:
    import sqlite3

    conn = sqlite3.connect(cache / "records.sqlite3")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()
