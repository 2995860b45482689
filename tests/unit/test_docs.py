"""The documentation cannot drift from the code: the options page is what ``docs/gen_options.py`` writes from the
plugin's option table, every built-in check has its page, every page is in the site's nav, links between files
resolve, and the README opens with its two commands.  ``mkdocs build --strict`` (``.ci/run``) checks the rest:
anchors, and the snippets of package files the pages include."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from pytest_emguard.checks import BUILTIN

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
LINK = re.compile(r"\]\(([^)\s]+)\)")
DEMO = """pip install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
pip install -e ".[hf,report]" && python -m pytest_emguard.demo"""
TESTS = 'pip install -e ".[hf,finetune,dev,openai]" && pytest'


@functools.cache
def generator() -> ModuleType:
    """``docs/gen_options.py``, loaded once (it is a script, not a module of the package)."""
    spec = importlib.util.spec_from_file_location("docs_gen_options", DOCS / "gen_options.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def nav_pages() -> list[str]:
    def walk(node: Any) -> list[str]:
        if isinstance(node, str):
            return [node]
        if isinstance(node, list):
            return [p for n in node for p in walk(n)]
        if isinstance(node, dict):
            return [p for v in node.values() for p in walk(v)]
        return []

    return walk(yaml.safe_load((ROOT / "mkdocs.yml").read_text("utf-8"))["nav"])


def test_the_options_page_is_what_the_script_writes() -> None:
    gen = generator()
    assert gen.PAGE == DOCS / "reference" / "options.md"
    assert gen.PAGE.read_text("utf-8") == gen.render(), (
        "docs/reference/options.md is out of date with pytest_emguard/plugin/options.py: run python docs/gen_options.py"
    )


def test_the_page_does_not_depend_on_where_it_is_written_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gen = generator()
    here = gen.render()
    monkeypatch.chdir(tmp_path)
    assert gen.render() == here
    assert str(ROOT) not in here and "/home/" not in here and "/root/" not in here


def test_the_page_lists_every_option_pytest_registers(pytestconfig: pytest.Config) -> None:
    """The script reads the options through a stand-in parser: it must see every ``--em-*`` option pytest has."""
    gen = generator()
    listed = {o.dest for o in gen.registered()}
    assert listed == {name for name in vars(pytestconfig.option) if name.startswith("em_")}
    page = gen.render()
    for option in gen.registered():
        assert f"## `{option.flag}` {{#{option.anchor}}}" in page
        assert option.help and option.help.split()[0] in page


def test_the_page_takes_defaults_and_card_keys_from_the_code() -> None:
    page = generator().render()
    rows = {line.split("|")[1].strip(): line for line in page.splitlines() if line.startswith("| [`--em-")}
    assert (
        "| `gate: samples:` | `10`, or a bank file's `samples_per_paraphrase` |"
        in rows["[`--em-samples`](#em-samples)"]
    )
    assert (
        "| `em_cache_dir` | `gate: cache_dir:` | `.emguard_cache` |"
        in rows["[`--em-cache-dir`](#em-cache-dir)"]
    )
    assert "- (command line only) | - | off |" in rows["[`--em-trust-remote-code`](#em-trust-remote-code)"]
    assert "`em_bank` (one per line)" in rows["[`--em-bank`](#em-bank) (repeatable)"]


def test_every_built_in_check_has_its_page_in_the_nav() -> None:
    nav = set(nav_pages())
    for target in BUILTIN:
        module, _, attr = target.partition(":")
        name = getattr(importlib.import_module(module), attr).name
        page = f"reference/checks/{name}.md"
        assert (DOCS / page).is_file(), f"check {name!r} has no page {page}"
        assert page in nav, f"{page} is not in mkdocs.yml's nav"


def test_every_page_is_in_the_nav_once_and_every_nav_entry_exists() -> None:
    nav = nav_pages()
    assert len(nav) == len(set(nav)), "a page is in the nav twice"
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert set(nav) == pages, f"in the nav only: {set(nav) - pages}; not in the nav: {pages - set(nav)}"


@pytest.mark.parametrize(
    "page", [README, *sorted(DOCS.rglob("*.md"))], ids=lambda p: p.relative_to(ROOT).as_posix()
)
def test_relative_links_resolve(page: Path) -> None:
    text = re.sub(r"```.*?```", "", page.read_text("utf-8"), flags=re.S)
    broken = []
    for target in LINK.findall(text):
        path = target.split("#", 1)[0]
        if not path or "://" in path or path.startswith("mailto:"):
            continue
        if not (page.parent / path).exists():
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: links to missing files: {broken}"


def test_the_readme_opens_with_its_two_commands_and_stays_short() -> None:
    text = README.read_text("utf-8")
    blocks = re.findall(r"```bash\n(.*?)\n```", text, flags=re.S)
    assert blocks[:2] == [DEMO, TESTS]
    assert len(text.splitlines()) <= 200
