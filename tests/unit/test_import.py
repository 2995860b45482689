"""Importing the plugin (which pytest does in every run that has it installed) must stay light."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "transformers", "peft", "sklearn")
REPORTED = ("numpy", "yaml", "jsonschema")

SCRIPT = f"""
import json, sys
before = set(sys.modules)
import pytest_emguard.plugin
watched = {list(HEAVY + REPORTED)!r}
print(json.dumps(sorted(m for m in watched if m in sys.modules and m not in before)))
"""


def imported_by_plugin() -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True, timeout=60
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_plugin_import_is_light() -> None:
    loaded = imported_by_plugin()
    heavy = sorted(loaded & set(HEAVY))
    assert not heavy, f"importing pytest_emguard.plugin pulls in {heavy}"
    # numpy, PyYAML and jsonschema are core dependencies, loaded lazily today; keep it so
    assert loaded <= set(REPORTED)
    assert not loaded & set(REPORTED), f"plugin import loads {sorted(loaded)}"


def test_script_detects_a_heavy_import() -> None:
    """The detector itself works: a module that imports numpy shows up."""
    script = SCRIPT.replace("import pytest_emguard.plugin", "import numpy")
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert "numpy" in json.loads(out.stdout.strip().splitlines()[-1])
