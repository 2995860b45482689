"""The ``--em-*`` command-line options, the ``em_*`` ini keys and the model card's ``gate:`` keys, all made from
the configuration table (``TABLE``, ``table.py``), and read once into the frozen, pytest-free ``Options``
(``config/run.py``), which ``RunConfig.resolve`` validates further.

Precedence: the command line, then the model card's ``gate:`` block (``pytest model_cards/``), then the ini file,
then the default.  A value from any surface is first put in the option's command-line form (a card's integer as
its digits, its list of checks comma-separated; a relative path read from the card's directory, or the ini file's:
``inipaths.py``), then goes through the option's one validator, so a bad value is refused at configure time with
the same message wherever it was written, naming where (``--em-NAME``, or ``CARD: gate.KEY``) and the fix.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import MISSING, dataclass, fields, replace
from pathlib import Path
from typing import Any

import pytest

from pytest_emguard.config.run import Options
from pytest_emguard.errors import ConfigError
from pytest_emguard.plugin.inipaths import anchored, anchored_at, anchored_base
from pytest_emguard.plugin.table import BY_NAME, TABLE, Option

__all__ = [
    "TABLE",
    "Option",
    "add_options",
    "card_options",
    "command_line",
    "models",
    "option_name",
    "read_options",
]


def add_options(parser: pytest.Parser) -> None:
    """The ``--em-*`` options and ``em_*`` ini keys of ``TABLE``."""
    group = parser.getgroup("emguard", "emergent-misalignment gate (pytest-emguard)")
    for o in TABLE:
        suffix = f". ini: {o.ini_key}" if o.ini_key is not None else ""
        if o.form == "flag":
            group.addoption(o.flag, dest=o.dest, action="store_true", default=False, help=o.help + suffix)
        else:  # a repeatable option: one value per use on the command line, one per line of the ini key
            action = "append" if o.form == "list" else "store"
            group.addoption(o.flag, dest=o.dest, action=action, default=None, help=o.help + suffix)
        if o.ini_key is None:
            continue
        note = " (gated with --em-gate only)" if o.name == "model" else ""
        text = f"pytest-emguard: {o.help}{note}"
        if o.form == "flag":
            parser.addini(o.ini_key, text, type="bool", default=False)
        elif o.form == "list":
            parser.addini(o.ini_key, text, type="linelist", default=[])
        else:  # no ini default: a value the ini file sets stays apart from "not set" (a card's value wins over it)
            parser.addini(o.ini_key, text, default=None)


def _raw(config: pytest.Config, name: str) -> Any:
    """``--em-NAME`` as given on the command line, else ``em_NAME`` from the ini file with its relative paths read
    from the ini file's directory (``inipaths.py``)."""
    o = BY_NAME[name]
    value = config.getoption(o.dest)
    return value if value is not None else anchored(config, name, config.getini(o.dest))


@dataclass(frozen=True)
class _Card:
    """A model card's ``gate:`` block and the file it is in (its relative paths are read from its directory)."""

    path: Path
    gate: dict[str, Any]

    def value(self, o: Option) -> Any:
        """The card's value of ``o`` in the option's command-line form, relative paths read from the card's
        directory: a YAML list of a repeatable option as its values, the list of ``checks`` comma-separated."""
        value = self.gate[o.card_key or ""]
        if o.form == "list":
            value = [str(v) for v in (value if isinstance(value, list) else [value])]
        elif o.form == "value":
            value = ",".join(map(str, value)) if isinstance(value, list) else str(value)
        return anchored_at(o.name, value, self.path.parent)


def _given(config: pytest.Config, o: Option, card: _Card | None) -> tuple[Any, str] | None:
    """``o``'s value and where it was given (what a message names), by precedence: the command line, the card's
    ``gate:`` block, the ini file; None where none gives it."""
    value = config.getoption(o.dest)
    if value is not None and value is not False:
        return value, o.flag
    if card is not None and o.card_key in card.gate:
        return card.value(o), f"{card.path}: gate.{o.card_key}"
    if o.ini_key is not None:
        value = anchored(config, o.name, config.getini(o.ini_key))
        if value not in (None, "", [], False):
            return value, o.flag
    return None


def _read(o: Option, value: Any, where: str) -> Any:
    """``o.read(value)``; a problem with a card's value names the card and key instead of the option."""
    try:
        return o.read(o.flag, value)
    except ConfigError as exc:
        if where == o.flag or exc.where != o.flag:
            raise
        raise ConfigError(where, exc.problem, exc.fix) from None


def _options(config: pytest.Config, card: _Card | None = None) -> tuple[Options, dict[str, str]]:
    """Every option but the model and its base, read and validated from its surfaces; and where each was given."""
    values: dict[str, Any] = {}
    where: dict[str, str] = {}
    for o in TABLE:
        if o.field is None or o.name in ("model", "base"):
            continue
        given = _given(config, o, card)
        if given is None:
            values[o.field] = o.default
            continue
        values[o.field], where[o.name] = _read(o, *given), given[1]
    _check_baseline(config, values["baseline"], values["update_baseline"], where.get("baseline"))
    return Options(model="", **values), where


def _no_empty_values(config: pytest.Config) -> None:
    """An option given on the command line with an empty value (``--em-model=``) is a mistake, not "unset"."""
    for o in TABLE:
        value = config.getoption(o.dest)
        values = value if isinstance(value, list) else [value]
        if o.form != "flag" and value is not None and any(not str(v).strip() for v in values):
            raise ConfigError(o.flag, "is given but empty", f"give it a value, or leave {o.flag} out")


def models(config: pytest.Config) -> list[str]:
    """The models to gate, in order: each ``--em-model`` (``@FILE``: one model per line of FILE, blank lines and
    ``#`` comments skipped), else, with ``--em-gate``, the ``em_model`` ini lines; else none."""
    given = config.getoption("em_model")
    if given is None and not config.getoption("em_gate"):
        return []
    raw: list[str] = [str(v) for v in (given if given is not None else _raw(config, "model"))]
    if not raw:
        where = f"the ini file {config.inipath}" if config.inipath is not None else "no ini file"
        raise ConfigError(
            "--em-gate",
            f"there is no model to gate: {where} sets no em_model",
            "name the models in the ini file (em_model, one a line), or pass --em-model=MODEL",
        )
    out: list[str] = []
    for value in raw:
        if not value.startswith("@"):
            out.append(value)
            continue
        path = os.path.expanduser(value[1:])
        try:
            with open(path, encoding="utf-8") as fh:
                lines = [line.split("#", 1)[0].strip() for line in fh]
        except OSError as exc:
            raise ConfigError(
                f"--em-model {value}", f"cannot read the model list ({exc.strerror})", "pass an existing file"
            ) from None
        listed = [line for line in lines if line]
        if not listed:
            raise ConfigError(
                f"--em-model {value}", "the model list names no model", "write one model per line"
            )
        out += listed
    if len(set(out)) != len(out):
        twice = sorted({m for m in out if out.count(m) > 1})
        raise ConfigError("--em-model", f"{', '.join(twice)} is given twice", "name each model once")
    return out


def read_options(config: pytest.Config) -> list[Options]:
    """One ``Options`` per model to gate; none when no ``--em-model`` (or ``em_model``) is given: the plugin then
    stays out of the way."""
    _no_empty_values(config)
    names = models(config)
    if not names:
        return []
    common, _ = _options(config)
    given = [os.path.expanduser(name) for name in names]
    return [replace(common, model=model, base=_base(config, model)) for model in given]


def option_name(field: str) -> str:
    """The ``--em-*`` option (without the prefix) that sets the ``Options`` field ``field``: ``cache_dir`` ->
    ``cache-dir``, ``banks`` -> ``bank`` (a repeatable option fills a tuple)."""
    for o in TABLE:
        if o.field == field:
            return o.name
    raise KeyError(f"no --em-* option sets Options.{field}")


def command_line(options: Options, leave_out: Collection[str] = ()) -> list[str]:
    """The ``--em-*`` arguments that give ``options``: one for each field that differs from its default (a field
    without one: when set), in the order of ``Options``'s fields; an on/off option as its flag, a repeatable
    one once a value, ``--em-checks`` comma-separated.  Derived from the dataclass, so a new field is never left
    out of a reproduce line (``option_name`` raises for a field no option sets)."""
    args: list[str] = []
    for f in fields(Options):
        value = getattr(options, f.name)
        if f.name in leave_out or value is None or (f.default is not MISSING and value == f.default):
            continue
        name = option_name(f.name)
        if isinstance(value, bool):
            args.append(f"--em-{name}")
        elif isinstance(value, tuple):
            values = list(value) if BY_NAME[name].form == "list" else [",".join(value)]
            args += [f"--em-{name}={v}" for v in values]
        else:
            args.append(f"--em-{name}={value}")
    return args


def card_options(config: pytest.Config, path: Any, card: dict[str, Any]) -> Options:
    """The options that gate one model card (``pytest model_cards/``): the card's adapter and base, its ``gate``
    block over the ini file and the defaults, and any ``--em-*`` option given on the command line over both; the
    card's values go through the same validators as the command line's."""
    from pytest_emguard.config.cards import card_paths

    _no_empty_values(config)
    found = card_paths(path, card)
    options, where = _options(config, _Card(Path(path), found["gate"]))
    changes: dict[str, Any] = {"model": found["model"], "base": _base(config, found["model"])}
    if config.getoption("em_base") is None and found["base"] is not None:
        changes["base"] = found["base"]
    if where.get("domain") != "--em-domain" and "domain" not in found["gate"]:
        changes["card"] = str(path)  # the card's domain, read leniently (a control names no harm domain) ...
        if found["domain"]:
            changes["domain"] = None  # ... over the ini file's em_domain
    return replace(options, **changes)


def _base(config: pytest.Config, model: str) -> str | None:
    """``--em-base`` as given, else ``em_base`` from the ini file (read from its directory, unless ``model`` is
    served by an endpoint, where the base is the endpoint's model name)."""
    given = config.getoption("em_base")
    if given is not None:
        return os.path.expanduser(str(given)) if given else None
    value = config.getini("em_base")
    return anchored_base(config, os.path.expanduser(str(value)), model) if value else None


def _check_baseline(config: pytest.Config, path: str | None, update: bool, where: str | None) -> None:
    from pytest_emguard.run.baseline import check_options

    distributed = bool(getattr(config.option, "numprocesses", None)) or hasattr(config, "workerinput")
    try:
        check_options(path, update, distributed)
    except ConfigError as exc:
        if where is None or exc.where != "--em-baseline":
            raise
        raise ConfigError(where, exc.problem, exc.fix) from None
