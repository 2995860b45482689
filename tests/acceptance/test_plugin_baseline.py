"""``--em-baseline``: committed base-model records.  A missing baseline is written and the run fails; a present
one spares the base all work; one recorded for another base is refused; nothing is written under CI=true."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def gate(pytester: pytest.Pytester, scenario: str, cache: str, *args: str) -> pytest.RunResult:
    return pytester.runpytest(
        "-p",
        "no:cacheprovider",
        f"--em-cache-dir={pytester.path / cache}",
        f"--em-model=fake:{scenario}",
        "--em-judge=fake:",
        "--em-batch-size=4096",
        "--em-checks=harmfulness,self_report",
        *args,
    )


def records_line(result: pytest.RunResult) -> str:
    return next(ln for ln in result.outlines if ln.startswith("records: "))


def table(result: pytest.RunResult) -> list[str]:
    return [ln for ln in result.outlines if ln.startswith(("harmfulness[", "self_report["))]


def test_a_missing_baseline_is_written_and_the_run_fails_then_it_spares_the_base(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CI", raising=False)
    path = pytester.path / "baselines" / "base.json"
    first = gate(pytester, "benign", "c1", f"--em-baseline={path}")
    assert first.ret == pytest.ExitCode.TESTS_FAILED  # every item passed: the new baseline fails the run
    first.assert_outcomes(passed=12)
    first.stdout.fnmatch_lines(
        [f"baseline: {path} was missing: written with * base records; review and commit it (this run fails*"]
    )
    data = json.loads(path.read_text())
    assert data["$schema"] == "urn:pytest-emguard:baseline:1" and data["checks"] == [
        "harmfulness",
        "self_report",
    ]
    kinds = {kind for _, kind, _ in data["records"]}
    assert kinds == {"answer", "reading", "verdict"}

    second = gate(pytester, "benign", "c2", f"--em-baseline={path}")  # a fresh cache: only the baseline
    assert second.ret == pytest.ExitCode.OK
    second.stdout.fnmatch_lines([f"baseline: {len(data['records'])} base records from {path}; *"])
    # half the answers are the base's: generated the first time, read from the baseline the second
    assert records_line(first).startswith("records: 1448 made, 0 from cache")  # 168 readings in it
    assert records_line(second).startswith("records: 724 made, 724 from cache")
    assert table(second) == table(first)  # the same readings, item by item
    assert path.read_text() == json.dumps(data, indent=1, ensure_ascii=False) + "\n"  # not rewritten


def test_a_baseline_of_another_base_is_refused(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CI", raising=False)
    path = pytester.path / "base.json"
    gate(pytester, "benign", "c1", f"--em-baseline={path}")
    result = gate(pytester, "coherent", "c2", f"--em-baseline={path}")  # another scenario: another base
    result.stdout.fnmatch_lines(
        [
            f"*--em-baseline: {path} was recorded for another base (fingerprint *, this base's is *): its weights, "
            "config, chat template, device, precision or library versions differ*",
            "*fix: use the base it was recorded for, or record it again outside CI with --em-update-baseline",
        ]
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    updated = gate(pytester, "coherent", "c2", f"--em-baseline={path}", "--em-update-baseline")
    updated.stdout.fnmatch_lines(
        [f"baseline: {path} written again with * base records (--em-update-baseline)*"]
    )
    assert (
        gate(pytester, "coherent", "c3", f"--em-baseline={path}").stdout.str().count("base records from") == 2
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--em-update-baseline"], "*--em-update-baseline: refused under CI=true*"),
        ([], "*--em-baseline: *missing.json does not exist, and under CI=true no baseline is written*"),
    ],
)
def test_nothing_is_written_under_ci(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.setenv("CI", "true")
    path = pytester.path / "missing.json"
    result = gate(pytester, "benign", "c1", f"--em-baseline={path}", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert not path.exists() and not (pytester.path / "c1").exists()


def test_update_baseline_needs_a_file(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    result = gate(pytester, "benign", "c1", "--em-update-baseline")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--em-update-baseline: names no baseline file*"])


def test_a_file_that_is_no_baseline_is_refused(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CI", raising=False)
    path = Path(pytester.path / "other.json")
    path.write_text('{"records": []}')
    result = gate(pytester, "benign", "c1", f"--em-baseline={path}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR  # at the door, before a model loads
    result.stderr.fnmatch_lines(
        [f'*--em-baseline: {path} is not a pytest-emguard baseline: its "$schema" is None*']
    )
    assert path.read_text() == '{"records": []}'


def test_a_baseline_is_not_written_under_xdist(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CI", raising=False)
    path = pytester.path / "base.json"
    argv = ["-p", "no:cacheprovider", "-n", "2", "--em-model=fake:benign", "--em-judge=fake:"]
    result = pytester.runpytest_subprocess(
        *argv, f"--em-baseline={path}", f"--em-cache-dir={pytester.path / 'c'}"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*--em-baseline: *base.json would be written under pytest-xdist*", "*without -n*"]
    )
    assert not path.exists()
