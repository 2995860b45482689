"""Run by .ci/run after the suite, with the built wheel installed in place of the editable checkout
(``EMGUARD_EXPECT_WHEEL=1``): the package imported is the wheel's, and it holds every data file the checkout has."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    not os.environ.get("EMGUARD_EXPECT_WHEEL"), reason="runs against an installed wheel (.ci/run sets it up)"
)


def tracked(package: str) -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", package], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return [
        p for p in out if not p.endswith((".py", ".md"))
    ]  # code is checked by importing it; docs stay out


def test_the_package_imported_is_the_installed_wheel() -> None:
    from importlib import metadata

    import pytest_emguard
    from pytest_emguard import finetune

    for module in (pytest_emguard, finetune):
        path = Path(str(module.__file__)).resolve()
        assert ROOT not in path.parents, f"{module.__name__} imported from the checkout: {path}"
        assert "site-packages" in path.parts
    # one top-level package: the trainer lives in it (a top-level 'finetune' would clash with a user's own)
    tops = {Path(str(f)).parts[0] for f in metadata.files("pytest-emguard") or ()}
    assert {t for t in tops if not t.endswith((".dist-info", ".pth"))} == {"pytest_emguard"}, tops


@pytest.mark.parametrize("package", ["pytest_emguard"])
def test_the_wheel_holds_every_data_file_of_the_checkout(package: str) -> None:
    module = __import__(package)
    installed = Path(str(module.__file__)).resolve().parent
    files = tracked(package)
    assert files, f"no data files tracked under {package}/"
    missing = [f for f in files if not (installed.parent / f).is_file()]
    assert not missing, f"left out of the wheel (pyproject.toml [tool.setuptools.package-data]): {missing}"
