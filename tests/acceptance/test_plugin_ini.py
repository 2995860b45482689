"""Acceptance: ini keys, on the shipped ``fake`` backend through ``pytester``.  An ini file's ``em_model`` gates
only with ``--em-gate`` (plain ``pytest`` in a repository that names a model runs its tests, and its header says
the model is not gated); the paths an ini file names are read from the ini file's directory, as pytest reads its
own path keys, whichever directory pytest runs from; a path on the command line stays relative to the current
directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from plugin_run import block, lit

PASSING = "def test_ok():\n    pass\n"
STRICT = "version: 1\nharmfulness:\n  mean:\n    max_increase: 20\n"


def ini(pytester: pytest.Pytester, *lines: str) -> Path:
    judge = [] if any(line.startswith("em_judge") for line in lines) else ["em_judge = fake:"]
    return pytester.makeini("\n".join(["[pytest]", *judge, "em_batch_size = 4096", *lines, ""]))


def test_an_ini_em_model_alone_gates_nothing(pytester: pytest.Pytester) -> None:
    path = ini(pytester, "em_model = fake:coherent", f"em_cache_dir = {pytester.path / 'emcache'}")
    pytester.makepyfile(test_ok=PASSING)
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [f"emguard: {path.name} names em_model fake:coherent: not gated in this run (--em-gate gates it)"]
    )
    result.stdout.no_fnmatch_line("*emguard::*")
    assert not (pytester.path / "emcache").exists()


def test_em_gate_gates_the_ini_files_models(pytester: pytest.Pytester) -> None:
    ini(pytester, "em_model = fake:inverted", "em_checks = harmfulness")
    pytester.makepyfile(test_ok=PASSING)
    result = pytester.runpytest("-p", "no:cacheprovider", "--em-gate")
    result.assert_outcomes(failed=4, passed=1)  # the gate only: test_ok is not collected
    result.stdout.fnmatch_lines(["model: fake:inverted (fake)"])


def test_em_gate_without_an_ini_model_says_where_to_name_one(pytester: pytest.Pytester) -> None:
    path = ini(pytester)
    result = pytester.runpytest("-p", "no:cacheprovider", "--em-gate")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            f"ERROR: pytest-emguard: --em-gate: there is no model to gate: the ini file {path} sets no em_model",
            "  fix: name the models in the ini file (em_model, one a line), or pass --em-model=MODEL",
        ]
    )


def test_ini_paths_are_read_from_the_ini_files_directory(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From a subdirectory, the thresholds, cache, baseline and evidence directory the ini file names are its
    directory's, not the subdirectory's."""
    monkeypatch.delenv("CI", raising=False)  # a missing baseline is written outside CI only
    root = pytester.path
    ini(
        pytester,
        "em_model = fake:inverted",
        "em_checks = harmfulness",
        "em_thresholds = strict.yaml",
        "em_cache_dir = emcache",
        "em_baseline = baselines/base.json",
        "em_report = evidence",
    )
    pytester.makefile(".yaml", strict=STRICT)
    monkeypatch.chdir(pytester.mkdir("work"))
    result = pytester.runpytest("-p", "no:cacheprovider", "--em-gate")
    result.assert_outcomes(failed=4, passed=1)
    pytest.LineMatcher(block(result, "harmfulness[mean]")).fnmatch_lines(
        [f"  threshold: +20.0 allowed increase ({root}/strict.yaml:4)"]
    )
    result.stdout.fnmatch_lines([f"baseline: {root}/baselines/base.json was missing: written with *"])
    assert (root / "emcache").is_dir() and not (root / "work" / "emcache").exists()
    assert json.loads((root / "baselines" / "base.json").read_text())["records"]
    assert (root / "evidence" / "fake-inverted.evidence.json").is_file()
    assert not any((root / "work" / name).exists() for name in ("emcache", "baselines", "evidence"))


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("em_model = adapter", "--em-model: {root}/adapter does not exist"),
        ("em_model = @models.txt", "--em-model @{root}/models.txt: cannot read the model list *"),
        ("em_judge = probe:judge-model", "--em-judge: {root}/judge-model is not a local model directory *"),
        ("em_rater = rater", "--em-rater {root}/rater: {root}/rater is not a directory"),
        (
            "em_bank = harmfulness=questions.yaml",
            "--em-bank harmfulness={root}/questions.yaml: cannot read *",
        ),
    ],
)
def test_each_kind_of_ini_path_is_read_from_the_ini_files_directory(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, line: str, error: str
) -> None:
    """The part of each value that names a file: a model, a model list, a local judge, a rater, a bank file."""
    model = [] if line.startswith("em_model") else ["em_model = fake:inverted"]
    ini(pytester, *model, line)
    monkeypatch.chdir(pytester.mkdir("work"))
    result = pytester.runpytest("-p", "no:cacheprovider", "--em-gate")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([lit("ERROR: pytest-emguard: " + error.format(root=pytester.path))])


def test_a_command_line_path_stays_relative_to_the_current_directory(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    ini(pytester)
    pytester.makefile(".yaml", strict=STRICT)
    monkeypatch.chdir(pytester.mkdir("work"))
    result = pytester.runpytest(
        "-p", "no:cacheprovider", "--em-model=fake:inverted", "--em-thresholds=strict.yaml"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: pytest-emguard: --em-thresholds: cannot read strict.yaml (No such file*"]
    )
