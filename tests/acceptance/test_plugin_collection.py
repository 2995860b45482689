"""Acceptance: what a gate run collects, on the shipped ``fake`` backend through ``pytester``.  ``pytest
--em-model=...`` in a repository runs the gate, not the repository's tests (nor imports them: only the conftest.py
files pytest itself loads at start, those of the current directory and its ``test*`` directories, are read);
``--em-with-tests`` (ini ``em_with_tests``) runs both, and so do test paths named on the command line, as pytest
collects what it is given.  Under pytest-xdist the workers collect as the controller decided."""

from __future__ import annotations

import pytest
from plugin_run import ITEMS, gate, run

BROKEN = "def test_broken():\n    assert False, 'an ordinary failing test ran'\n"
# a conftest.py that cannot even be imported: a gate-only run never enters its directory
UNIMPORTABLE = "raise RuntimeError('suite/conftest.py was imported')\n"
HEADER = "emguard: gate only: the repository's own tests are not collected (--em-with-tests runs them too)"


def repository(pytester: pytest.Pytester) -> None:
    """A repository with an ordinary failing test at its root, another in tests/, and a third in suite/ beside a
    conftest.py that fails on import."""
    pytester.makepyfile(test_broken=BROKEN)
    for name in ("tests", "suite"):
        (pytester.mkdir(name) / "test_more.py").write_text(BROKEN)
    (pytester.path / "suite" / "conftest.py").write_text(UNIMPORTABLE)


def test_a_gate_run_runs_the_gate_and_not_the_repositorys_tests(pytester: pytest.Pytester) -> None:
    repository(pytester)
    result = gate(pytester, "identical")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=len(ITEMS))
    result.stdout.fnmatch_lines([HEADER, f"collected {len(ITEMS)} items", f"*= {len(ITEMS)} passed in *"])
    out = result.stdout.str()
    assert "test_broken" not in out and "test_more" not in out and "was imported" not in out


@pytest.mark.parametrize(("testpaths", "deselected"), [("tests", 0), ("test_broken.py", 1)])
def test_testpaths_are_left_out_as_the_current_directory_is(
    pytester: pytest.Pytester, testpaths: str, deselected: int
) -> None:
    """A directory in testpaths is not entered; a file that testpaths names itself is collected by pytest
    without asking the plugin (an initial path), then deselected."""
    repository(pytester)
    pytester.makeini(f"[pytest]\ntestpaths = {testpaths}\n")
    result = gate(pytester, "identical")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=len(ITEMS), deselected=deselected)
    assert "test_more" not in result.stdout.str() and "FAILED" not in result.stdout.str()


def test_em_with_tests_runs_the_gate_and_the_repositorys_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_broken=BROKEN)
    result = gate(pytester, "identical", "--em-with-tests")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=len(ITEMS), failed=1)
    result.stdout.fnmatch_lines(
        [
            "emguard: the gate's items and the repository's tests (--em-with-tests)",
            f"collected {len(ITEMS) + 1} items",
            "FAILED test_broken.py::test_broken - AssertionError: an ordinary*",
        ]
    )


def test_the_ini_key_em_with_tests_runs_both(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_broken=BROKEN)
    pytester.makeini("[pytest]\nem_with_tests = true\n")
    result = gate(pytester, "identical")
    result.assert_outcomes(passed=len(ITEMS), failed=1)


def test_test_paths_on_the_command_line_are_collected_beside_the_gate(pytester: pytest.Pytester) -> None:
    repository(pytester)
    result = gate(pytester, "identical", "test_broken.py")
    result.assert_outcomes(passed=len(ITEMS), failed=1)
    result.stdout.fnmatch_lines(
        [
            "emguard: the gate's items and the repository's tests (test paths named on the command line)",
            "FAILED test_broken.py::test_broken - *",
        ]
    )
    assert "test_more" not in result.stdout.str()  # only what was named


def test_without_em_model_the_repositorys_tests_run_as_always(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_broken=BROKEN)
    result = run(pytester, "--em-judge=fake:")
    result.assert_outcomes(failed=1)
    result.stdout.no_fnmatch_line("emguard:*")


def test_gate_only_under_xdist(pytester: pytest.Pytester) -> None:
    """Each worker collects what the controller decided: the gate's items, not the failing test."""
    repository(pytester)
    result = gate(pytester, "identical", "-n", "2", subprocess=True)
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=len(ITEMS))
    result.stdout.fnmatch_lines([f"*2 workers [[]{len(ITEMS)} items]*"])
    assert "test_broken" not in result.stdout.str()
