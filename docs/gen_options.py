"""Write ``docs/reference/options.md`` from the plugin's own option table, so the options and their page cannot drift.

    python docs/gen_options.py           # write the page
    python docs/gen_options.py --check   # exit 1, writing nothing, where the committed page differs

What the page lists comes from the code alone:

- the options: ``add_options`` (``pytest_emguard/plugin/options.py``) is called on a recording parser, so the page
  holds exactly the ``--em-*`` options and ``em_*`` ini keys pytest registers, with their help, in their order;
- the defaults: the field defaults of ``Options`` (``pytest_emguard/config/run.py``), where defaults are written once;
- the ini keys and the model-card keys: the configuration table (``TABLE``, ``pytest_emguard/plugin/table.py``)
  that ``add_options`` and ``card_options`` are made from, with the reason an option is missing from a surface
  (``tests/unit/test_option_table.py`` checks that the card schema's ``gate:`` block holds the table's card keys),
  and the card's top-level fields ``card_options`` reads in place of an option.

The output depends on nothing else (no time, no path of this machine), so two runs write the same bytes.
``tests/unit/test_docs.py`` fails when the committed page is not what ``render()`` returns.
"""

from __future__ import annotations

import re
import sys
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any, cast

import pytest

from pytest_emguard.config.run import DEFAULT_SAMPLES, Options
from pytest_emguard.plugin.options import add_options
from pytest_emguard.plugin.table import BY_NAME

PAGE = Path(__file__).resolve().parent / "reference" / "options.md"
COMMAND = "python docs/gen_options.py"

# What "not given" means, for an option whose ``Options`` default is None (or that has none): the words of the
# page, where a bare "none" would mislead.
UNSET = {
    "model": "none: the plugin stays out of the way",
    "judge": "none: required whenever a model is gated",
    "base": "read from the adapter's `adapter_config.json`",
    "thresholds": "the package's thresholds (`pytest_emguard/thresholds/`)",
    "samples": f"`{DEFAULT_SAMPLES}`, or a bank file's `samples_per_paraphrase`",
    "domain": "the `domain` of the model card beside the adapter, if there is one",
    "checks": "every registered check",
}
# The card's top-level fields that ``card_options`` reads in place of an option (``gate:`` keys are the table's).
CARD_FIELDS = {
    "model": "`adapter:`",
    "base": "`base:`",
    "domain": "`gate: domain:`, else the card's `domain:`",
}
_SPECIALS = re.compile(r"([\\`*_\[\]<>|])")
_INI_SUFFIX = re.compile(r"\.? ini: em_[a-z_]+$")
_OPTION = re.compile(r"--em-[a-z][a-z-]*[a-z]")


@dataclass(frozen=True)
class Option:
    """One ``--em-*`` option as ``add_options`` registers it."""

    flag: str
    dest: str
    help: str
    action: str | None
    ini: str | None  # the ini key's type ("linelist", "bool", "string"), None where there is no ini key
    ini_note: str  # what the ini key's help adds to the option's, e.g. "gated with --em-gate only"

    @property
    def name(self) -> str:
        return self.flag.removeprefix("--em-")

    @property
    def anchor(self) -> str:
        return self.flag.removeprefix("--")


class _Recorder:
    """Stands in for ``pytest.Parser`` and its option group: records what ``add_options`` registers."""

    def __init__(self) -> None:
        self.options: list[tuple[str, dict[str, Any]]] = []
        self.ini: dict[str, tuple[str, str]] = {}

    def getgroup(self, name: str, description: str = "", after: str | None = None) -> _Recorder:
        return self

    def addoption(self, *opts: str, **attrs: Any) -> None:
        self.options.append((opts[0], attrs))

    def addini(self, name: str, help: str, type: str | None = None, default: Any = None) -> None:
        self.ini[name] = (type or "string", help)


def registered() -> list[Option]:
    """Every option ``add_options`` registers, in its order."""
    recorder = _Recorder()
    add_options(cast(pytest.Parser, recorder))
    out = []
    for flag, attrs in recorder.options:
        dest = str(attrs["dest"])
        text = _INI_SUFFIX.sub("", str(attrs.get("help", "")))
        kind, ini_help = recorder.ini.get(dest, (None, ""))
        note = ini_help.removeprefix("pytest-emguard: ")
        note = note.removeprefix(text).strip(" ();,.") if note.startswith(text) else ""
        out.append(Option(flag, dest, text, attrs.get("action"), kind, note))
    return out


def _field(option: Option) -> Any:
    """The ``Options`` field default behind an option (a repeatable option's field is its plural), or MISSING."""
    defaults = {f.name: f.default for f in fields(Options)}
    key = option.dest.removeprefix("em_")
    return defaults.get(key, defaults.get(key + "s", MISSING))


def default(option: Option) -> str:
    if option.action == "store_true":
        return "off"
    value = _field(option)
    if option.name in UNSET and value in (None, MISSING, ()):
        return UNSET[option.name]
    if value in (None, MISSING, ()):
        return "none"
    return f"`{value}`"


def card_key(option: Option) -> str:
    entry = BY_NAME[option.name]
    if option.name in CARD_FIELDS:
        return CARD_FIELDS[option.name]
    return f"`gate: {entry.card_key}:`" if entry.card_key is not None else "-"


def missing(option: Option) -> list[str]:
    """Why the option has no ini key, or no model card key, as the table says (a card's own field aside)."""
    entry, out = BY_NAME[option.name], []
    if entry.ini is not None and entry.ini == entry.card:
        return [f"No ini key and no model card key: {_prose(entry.ini)}."]
    if entry.ini is not None:
        out.append(f"No ini key: {_prose(entry.ini)}.")
    if entry.card is not None and option.name not in CARD_FIELDS:
        out.append(f"No model card key: {_prose(entry.card)}.")
    return out


def ini_key(option: Option) -> str:
    if option.ini is None:
        return "- (command line only)"
    notes = {"linelist": ["one per line"], "bool": ["true or false"]}.get(option.ini, [])
    if option.ini_note:
        notes.append(_prose(option.ini_note))
    return f"`{option.dest}`" + (f" ({'; '.join(notes)})" if notes else "")


def _prose(text: str) -> str:
    """Help text as Markdown: special characters escaped, each ``--em-*`` option a link to its section."""
    escaped = _SPECIALS.sub(r"\\\1", text)
    return _OPTION.sub(lambda m: f"[`{m.group(0)}`](#{m.group(0).removeprefix('--')})", escaped)


def render() -> str:
    options = registered()
    lines = [
        f"<!-- Generated by {COMMAND} from pytest_emguard/plugin/table.py and options.py, Options in "
        "pytest_emguard/config/run.py. Do not edit: run the script. -->",
        "",
        "# Options",
        "",
        "Every `--em-*` option of the plugin. An option with an ini key can be set once in `pytest.ini`, or under",
        "`[tool.pytest.ini_options]` in `pyproject.toml`; a model card sets the options of its `gate:` block (the",
        "option's name without the prefix, underscores for dashes; relative paths are read from the card's",
        "directory, as the ini file's from its own). The command line wins over the card, and the card over the",
        "ini file; a repeatable option takes one value per use on the command line, one per line of its ini key",
        "and a YAML list in a card. All three are made from one table in the code, so a value is checked the same",
        "way wherever it is written (a bad card value is refused naming the card file and key); an option",
        "missing from a surface says why in its section.",
        "",
        "| option | ini key | model card | default |",
        "|---|---|---|---|",
    ]
    for o in options:
        repeat = " (repeatable)" if o.action == "append" else ""
        lines.append(f"| [`{o.flag}`](#{o.anchor}){repeat} | {ini_key(o)} | {card_key(o)} | {default(o)} |")
    for o in options:
        lines += [
            "",
            f"## `{o.flag}` {{#{o.anchor}}}",
            "",
            _prose(o.help) + ("" if o.help.endswith(".") else "."),
        ]
        facts = [f"ini key: {ini_key(o)}", f"model card: {card_key(o)}", f"default: {default(o)}"]
        if o.action == "append":
            facts.append("repeatable")
        if o.action == "store_true":
            facts.append("a flag, without a value")
        lines += ["", " ".join(["; ".join(facts) + ".", *missing(o)])]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        current = PAGE.read_text("utf-8") if PAGE.exists() else ""
        if current != text:
            print(f"{PAGE} is out of date: run {COMMAND}", file=sys.stderr)
            return 1
        return 0
    PAGE.parent.mkdir(parents=True, exist_ok=True)
    PAGE.write_text(text, "utf-8", newline="\n")
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
