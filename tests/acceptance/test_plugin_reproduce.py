"""Acceptance: the reproduce line of a failure is complete.  It is built from every ``Options`` field that
differs from its default (``plugin/options.command_line``), so an option added later cannot be left out; a real
run's line carries each result-changing option it was given (precision, sequential stopping, the layers read, ...)
and, pasted into a shell, gives the same failure from the cache."""

from __future__ import annotations

import shlex
from dataclasses import MISSING, fields, replace
from typing import Any

import pytest
from plugin_run import block, gate, lit

from pytest_emguard.config.run import Options
from pytest_emguard.plugin.options import option_name
from pytest_emguard.report.text import reproduce_line

NOT_REPEATED = {"report", "update_baseline", "card"}  # see report/text.py: _NOT_REPEATED


def _other(field: Any) -> Any:
    """A value of ``field``'s type other than its default."""
    default = field.default
    if isinstance(default, bool):
        return not default
    if isinstance(default, int):
        return default + 1
    if isinstance(default, tuple):
        return ("x=y",)
    return 3 if default is None and "int" in str(field.type) else "other"  # samples: int | None


@pytest.mark.parametrize(
    "field", [f for f in fields(Options) if f.name not in NOT_REPEATED], ids=lambda f: f.name
)
def test_every_option_that_differs_from_its_default_is_in_the_line(field: Any) -> None:
    options = Options(model="fake:inverted", judge="fake:")  # the two fields without a default: always given
    if field.default is not MISSING:
        options = replace(options, **{field.name: _other(field)})
    args = shlex.split(reproduce_line(options, "harmfulness[mean]"))
    flag = f"--em-{option_name(field.name)}"
    assert any(a == flag or a.startswith(f"{flag}=") for a in args), args
    assert args[-2:] == ["-k", "harmfulness[mean]"]


def test_at_the_defaults_the_line_names_only_the_model_and_the_judge() -> None:
    line = reproduce_line(Options(model="fake:inverted", judge="fake:"), "harmfulness[mean]")
    assert line == "pytest -p no:randomly --em-model=fake:inverted --em-judge=fake: -k 'harmfulness[mean]'"


def test_what_a_rerun_must_not_repeat_is_left_out() -> None:
    """--em-report would overwrite the run's evidence record with a one-item record; --em-update-baseline would
    rewrite the reviewed baseline file."""
    options = Options(model="fake:inverted", judge="fake:", report="evidence", update_baseline=True)
    line = reproduce_line(options, "harmfulness[mean]")
    assert "--em-report" not in line and "--em-update-baseline" not in line


def test_a_real_runs_line_carries_each_result_changing_option_and_reproduces(
    pytester: pytest.Pytester,
) -> None:
    given = [
        "--em-checks=harmfulness",
        "--em-sequential",
        "--em-round-size=32",
        "--em-dtype=float32",
        "--em-device=cpu",
        "--em-layer-stride=2",
        "--em-seed=3",
        "--em-samples=4",
        "--em-max-new-tokens=64",
    ]
    first = gate(pytester, "coherent", *given)
    first.assert_outcomes(failed=4, passed=1)
    section = block(first, "harmfulness[mean]")
    (reproduce,) = [ln for ln in section if ln.startswith("  reproduce: ")]
    argv = shlex.split(reproduce.removeprefix("  reproduce: "))
    assert [a for a in given if a not in argv] == []
    again = pytester.runpytest_subprocess(*argv[1:])  # pasted into a shell
    again.assert_outcomes(failed=1, deselected=4)
    assert block(again, "harmfulness[mean]")[0] == section[0]
    again.stdout.fnmatch_lines(
        ["records: 0 made, * from cache*", lit("FAILED emguard::harmfulness[mean] - *")]
    )
