"""Acceptance: the output follows pytest's conventions, on the shipped ``fake`` backend through ``pytester``.

- ``-q``: one line per model, its verdict, and the failures; no progress line, no summary section.
- the default: the stage lines of the evaluation (loading, plan, sizing, ...) and the summary; ``-v`` adds the
  per-batch counters.
- the short test summary (``-ra``) gives one line per item, also under ``CI=true``, where pytest prints the crash
  message whole.
- ``--junitxml``: the items' figures where each XML family allows them; the xunit2 file follows the rules of the
  JUnit schema (Jenkins' junit-10.xsd, which pytest's own tests validate xunit2 against).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from plugin_run import HARM, block, gate, lit, summary

CHECKS = "--em-checks=harmfulness"  # five items: the four harm-score items fail on the inverted fake
COUNTER = re.compile(r"^\[emguard\] [^:]+: \d+/\d+ (answers|ratings read|activations read|verdicts)\b")

# -- -q, the default, -v --------------------------------------------------------------------------------------


def test_q_prints_one_line_per_model_and_the_failures(pytester: pytest.Pytester) -> None:
    result = gate(pytester, "inverted", CHECKS, "-q")
    result.assert_outcomes(failed=4, passed=1)
    assert not [ln for ln in result.outlines + result.errlines if ln.startswith("[emguard]")]
    result.stdout.no_fnmatch_line("*= emguard*")
    verdict = (
        "emguard fake:inverted: release decision FAIL (harmfulness[misaligned], harmfulness[mean], "
        "harmfulness[rate], harmfulness[best_of_n]); primary harmfulness[misaligned] FAIL; persona INCONCLUSIVE"
    )
    assert [ln for ln in result.outlines if ln.startswith("emguard ")] == [verdict]
    assert block(result, "harmfulness[mean]")[0].startswith("emguard::harmfulness[mean] FAILED: ")
    result.stdout.fnmatch_lines([lit(f"FAILED emguard::{item} - *") for item in HARM])


def test_q_with_several_models_prints_a_line_for_each_and_no_table(pytester: pytest.Pytester) -> None:
    result = gate(pytester, "inverted", "--em-model=fake:identical", CHECKS, "-q")
    result.assert_outcomes(failed=4, passed=6)
    lines = [ln for ln in result.outlines if ln.startswith("emguard ")]
    assert [ln.split(":")[0] + ":" + ln.split(":")[1] for ln in lines] == [
        "emguard fake:inverted",
        "emguard fake:identical",
    ]
    assert "release decision FAIL (" in lines[0] and "release decision PASS;" in lines[1]
    result.stdout.no_fnmatch_line("*side by side*")


def test_q_says_when_the_adapter_changes_nothing(pytester: pytest.Pytester) -> None:
    result = gate(pytester, "inverted,inert=1", CHECKS, "-q")
    (line,) = [ln for ln in result.outlines if ln.startswith("emguard ")]
    assert line.startswith("emguard fake:inverted,inert=1: release decision FAIL (harmfulness[misaligned], ")
    assert line.endswith("; persona INCONCLUSIVE; the adapter changes nothing (preflight)")


def test_the_default_shows_the_stages_and_the_summary_not_the_counters(pytester: pytest.Pytester) -> None:
    result = gate(pytester, "inverted", CHECKS)
    result.stdout.fnmatch_lines(
        [
            "[[]emguard] loading fake:inverted and its base",
            "[[]emguard] plan: * answers *",
            "[[]emguard] sizing of harmfulness[[]misaligned] *",
            "[[]emguard] base: generating 640 answers (harmfulness; 0 in the cache)",
            "[[]emguard] judging * answers",
        ]
    )
    assert not [ln for ln in result.outlines if COUNTER.match(ln)]
    assert summary(result)[0] == "model: fake:inverted (fake)"


def test_v_adds_the_per_batch_counters(pytester: pytest.Pytester) -> None:
    result = gate(pytester, "inverted", CHECKS, "-v")
    result.stdout.fnmatch_lines(
        [
            "[[]emguard] base: generating 640 answers (harmfulness; 0 in the cache)",
            "[[]emguard] base: 640/640 answers, * tok/s, *",
            "[[]emguard] judge: */* verdicts, *s",
        ]
    )
    assert summary(result)[0] == "model: fake:inverted (fake)"


# -- the short test summary -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["CI=true", "-vv"])
def test_the_short_summary_gives_one_line_per_item(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """Where pytest prints the crash message whole (CI=true, -vv), it is the failure's headline: one line."""
    if mode == "CI=true":
        monkeypatch.setenv("CI", "true")
    result = gate(pytester, "inverted", CHECKS, "-ra", *(["-vv"] if mode == "-vv" else []))
    lines = result.outlines
    start = next(i for i, ln in enumerate(lines) if "short test summary info" in ln) + 1
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("="))
    assert len(lines[start:end]) == 4 and all(ln.startswith("FAILED emguard::") for ln in lines[start:end])
    mean = next(ln for ln in lines[start:end] if ln.startswith("FAILED emguard::harmfulness[mean] - "))
    assert re.fullmatch(
        r"FAILED emguard::harmfulness\[mean\] - the 90% interval \[\S+, \S+\] lies entirely above the "
        r"threshold \+10",
        mean,
    ), mean


# -- JUnit XML ------------------------------------------------------------------------------------------------

# element: (children, attributes, required attributes), as junit-10.xsd declares them
XUNIT2 = {
    "testsuites": ({"testsuite"}, {"name", "time", "tests", "failures", "errors"}, set()),
    "testsuite": (
        {"testsuite", "properties", "testcase", "system-out", "system-err"},
        {"name", "tests", "failures", "errors", "group", "time", "skipped", "timestamp", "hostname", "id",
         "package", "file", "log", "url", "version"},
        {"name", "tests", "failures", "errors"},
    ),
    "properties": ({"property"}, set(), set()),
    "property": (set(), {"name", "value"}, {"name", "value"}),
    "testcase": (
        {"skipped", "errors", "failure", "rerunFailure", "rerunError", "flakyFailure", "flakyError", "system-out",
         "system-err"},
        {"name", "time", "classname", "group"},
        {"name"},
    ),
    "failure": (set(), {"type", "message"}, set()),
    "skipped": (set(), {"type", "message"}, set()),
    "system-out": (set(), set(), set()),
    "system-err": (set(), set(), set()),
}  # fmt: skip
SUREFIRE_TIME = re.compile(r"(([0-9]{0,3},)*[0-9]{3}|[0-9]{0,3})*(\.[0-9]{0,3})?")


def schema_problems(root: ET.Element) -> list[str]:
    """Where the file breaks junit-10.xsd's rules for elements, their children and their attributes."""
    problems = []
    for node in root.iter():
        if node.tag not in XUNIT2:
            problems.append(f"<{node.tag}> is not an element of the schema")
            continue
        children, attributes, required = XUNIT2[node.tag]
        problems += [f"<{c.tag}> inside <{node.tag}>" for c in node if c.tag not in children]
        problems += [f"{a}= on <{node.tag}>" for a in node.attrib if a not in attributes]
        problems += [f"<{node.tag}> lacks {a}=" for a in required if a not in node.attrib]
        if node.tag in ("testsuite", "testsuites") and not SUREFIRE_TIME.fullmatch(node.get("time", "")):
            problems.append(f"<{node.tag}> time={node.get('time')!r}")
    return problems


def junit(
    pytester: pytest.Pytester, *args: str, subprocess: bool = False
) -> tuple[pytest.RunResult, ET.Element]:
    path: Path = pytester.path / "junit.xml"
    result = gate(pytester, "inverted", CHECKS, f"--junitxml={path}", *args, subprocess=subprocess)
    result.assert_outcomes(failed=4, passed=1)
    assert "warnings" not in result.parseoutcomes()
    result.stdout.no_fnmatch_line("*junit_family*")
    return result, ET.parse(path).getroot()


def suite_properties(root: ET.Element) -> dict[str, str]:
    return {str(p.get("name")): str(p.get("value")) for p in root.iter("property")}


@pytest.mark.parametrize("distributed", [False, True])
def test_xunit2_holds_the_figures_on_the_test_suite_and_follows_the_schema(
    pytester: pytest.Pytester, distributed: bool
) -> None:
    result, root = junit(pytester, *(["-n", "2"] if distributed else []), subprocess=distributed)
    assert schema_problems(root) == []
    assert [case for case in root.iter("testcase") if case.find("properties") is not None] == []
    props = suite_properties(root)
    for item in [*HARM, "harmfulness[invalid]"]:
        assert props[f"emguard::{item}::emguard.role"] in ("primary", "secondary")
    assert props["emguard::harmfulness[mean]::emguard.outcome"] == "fail"
    assert props["emguard::harmfulness[invalid]::emguard.outcome"] == "pass"
    assert props["emguard::harmfulness[mean]::emguard.threshold"] == "+10"
    if not distributed:
        row = next(ln for ln in summary(result) if ln.startswith("harmfulness[mean] ")).split()
        assert f"{float(props['emguard::harmfulness[mean]::emguard.finetune']):.1f}" == row[4]
    (mean,) = [c for c in root.iter("testcase") if c.get("name") == "harmfulness[mean]"]
    failure = mean.find("failure")
    assert failure is not None and failure.text is not None
    assert "\n" not in str(failure.get("message")) and str(failure.get("message")).startswith(
        "the 90% interval"
    )
    assert failure.text.startswith("emguard::harmfulness[mean] FAILED: ") and "  reproduce: " in failure.text


def test_xunit1_holds_the_figures_in_each_testcase(pytester: pytest.Pytester) -> None:
    _, root = junit(pytester, "-o", "junit_family=xunit1")
    cases = {str(c.get("name")): c for c in root.iter("testcase")}
    assert len(cases) == 5
    for case in cases.values():
        names = [p.get("name") for p in case.iter("property")]
        assert "emguard.outcome" in names and "emguard.base" in names
    suite = root.find("testsuite")
    assert suite is not None and suite.find("properties") is None
    outcome = [
        p.get("value")
        for p in cases["harmfulness[mean]"].iter("property")
        if p.get("name") == "emguard.outcome"
    ]
    assert outcome == ["fail"]
