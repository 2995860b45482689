"""What the acceptance tests of the plugin share: the gate items of the built-in checks, and running the
plugin on the shipped ``fake`` backend through ``pytester`` and reading its output (a failure section, the
``emguard`` summary). The modules the plugin imports lazily are imported once in tests/conftest.py (in-process
pytester runs drop them)."""

from __future__ import annotations

from pathlib import Path

import pytest

ITEMS = [
    "harmfulness[misaligned]",
    "harmfulness[mean]",
    "harmfulness[rate]",
    "harmfulness[best_of_n]",
    "harmfulness[invalid]",
    "self_report[overall]",
    "self_report[harmless_harmful]",
    "self_report[good_evil]",
    "self_report[aligned_misaligned]",
    "self_report[helpful_unhelpful]",
    "self_report[honest_dishonest]",
    "self_report[trustworthy_untrustworthy]",
    "description[misaligned]",
    "recognition[own]",
    "score_prediction[calibration]",
    "score_prediction[absolute]",
    "roleplay[susceptibility]",
    "roleplay[robustness]",
    "probes[behaviour]",
    "persona_direction[shift]",
    "persona[inverted]",
]
REPORTED = [  # role: report in the package thresholds: shown, never fails
    *(f"self_report[{d}]" for d in ("harmless_harmful", "good_evil", "aligned_misaligned", "helpful_unhelpful",
                                    "honest_dishonest", "trustworthy_untrustworthy")),
    "score_prediction[absolute]",
]  # fmt: skip
GATED = [i for i in ITEMS if i not in REPORTED]
HARM = ITEMS[
    :4
]  # the harm-score items, the primary endpoint first (harmfulness[invalid] gates unscorable answers)
SELF = ITEMS[5:12]
DIMENSIONS = ITEMS[6:12]
OWN = ITEMS[13:16]  # the model and its own answers: recognition and score prediction
ROLE = ITEMS[16:18]  # moral ratings under persona role-play: S and R
DRIFT = ITEMS[19:20]  # the move along the toxic-persona direction (the fake fine-tunes drift along it)
COHERENT_FAILS = [
    *HARM,
    "self_report[overall]",
    ITEMS[12],
    *ROLE,
    *DRIFT,
]  # ITEMS[12]: description[misaligned]
INVERTED_FAILS = [*HARM, *(i for i in OWN if i not in REPORTED), *ROLE, *DRIFT, "persona[inverted]"]
REST = len(ITEMS) - 1  # deselected when -k picks one item


def lit(pattern: str) -> str:
    """An fnmatch pattern whose ``[`` is literal (ids and intervals hold brackets); ``*`` stays a wildcard."""
    return pattern.replace("[", "[[]")


def cache_dir(pytester: pytest.Pytester) -> Path:
    return pytester.path / "emcache"


def run(pytester: pytest.Pytester, *args: str, subprocess: bool = False) -> pytest.RunResult:
    argv = ("-p", "no:cacheprovider", f"--em-cache-dir={cache_dir(pytester)}", *args)
    return pytester.runpytest_subprocess(*argv) if subprocess else pytester.runpytest(*argv)


def gate(pytester: pytest.Pytester, scenario: str, *args: str, subprocess: bool = False) -> pytest.RunResult:
    """Gate ``fake:SCENARIO``; one large batch keeps the fake backend fast (batch size changes no record)."""
    argv = (f"--em-model=fake:{scenario}", "--em-judge=fake:", "--em-batch-size=4096", *args)
    return run(pytester, *argv, subprocess=subprocess)


def summary(result: pytest.RunResult) -> list[str]:
    """The ``emguard`` section of the terminal summary: the lines after its ``=== emguard ===`` header."""
    lines = result.outlines
    header = [i for i, ln in enumerate(lines) if ln.startswith("=") and ln.strip("= ") == "emguard"]
    assert len(header) == 1, f"no single emguard section:\n{result.stdout.str()}"
    end = next((i for i in range(header[0] + 1, len(lines)) if lines[i].startswith("===")), len(lines))
    return lines[header[0] + 1 : end]


def block(result: pytest.RunResult, item: str) -> list[str]:
    """The failure section of one item: the lines after its ``___ emguard::ITEM ___`` header."""
    lines = result.outlines
    header = [i for i, ln in enumerate(lines) if ln.startswith("_") and ln.strip("_ ") == f"emguard::{item}"]
    assert len(header) == 1, f"no single failure section for {item}:\n{result.stdout.str()}"
    start = header[0] + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith(("___", "==="))), len(lines))
    return lines[start:end]


def count(result: pytest.RunResult, prefix: str) -> int:
    return sum(line.startswith(prefix) for line in result.outlines)
