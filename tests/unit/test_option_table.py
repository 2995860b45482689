"""One configuration table (``pytest_emguard/plugin/table.py``) makes the command-line options, the ini keys and
the model card's ``gate:`` keys: the three agree with it, by name and by the card value's JSON type, and every
option that a surface lacks says why."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any, cast

import pytest

from pytest_emguard.config.run import Options
from pytest_emguard.config.yamlschema import load_schema
from pytest_emguard.errors import ConfigError
from pytest_emguard.plugin.options import _read, add_options, option_name
from pytest_emguard.plugin.table import BY_NAME, TABLE


class _Recorder:
    """Stands in for ``pytest.Parser`` and its option group."""

    def __init__(self) -> None:
        self.options: dict[str, dict[str, Any]] = {}
        self.ini: dict[str, str | None] = {}

    def getgroup(self, name: str, description: str = "") -> _Recorder:
        return self

    def addoption(self, *opts: str, **attrs: Any) -> None:
        self.options[opts[0]] = attrs

    def addini(self, name: str, help: str, type: str | None = None, default: Any = None) -> None:
        self.ini[name] = type


def _registered() -> _Recorder:
    recorder = _Recorder()
    add_options(cast(pytest.Parser, recorder))
    return recorder


def test_the_command_line_options_are_the_table_s() -> None:
    options = _registered().options
    assert list(options) == [o.flag for o in TABLE]
    for o in TABLE:
        action = {"flag": "store_true", "list": "append", "value": "store"}[o.form]
        assert options[o.flag]["action"] == action and options[o.flag]["dest"] == o.dest, o.name


def test_the_ini_keys_are_the_table_s_with_the_same_names() -> None:
    ini = _registered().ini
    assert set(ini) == {o.ini_key for o in TABLE if o.ini_key is not None}
    for o in TABLE:
        if o.ini_key is not None:
            assert o.ini_key == "em_" + o.name.replace("-", "_")
            assert ini[o.ini_key] == {"flag": "bool", "list": "linelist", "value": None}[o.form], o.name


def test_the_card_schema_s_gate_keys_are_the_table_s_with_its_types() -> None:
    gate = load_schema("model_card.schema.json")["properties"]["gate"]
    keys = {o.card_key: o for o in TABLE if o.card_key is not None}
    assert gate["additionalProperties"] is False
    assert set(gate["properties"]) == set(keys)
    for key, o in keys.items():
        assert key == o.name.replace("-", "_")
        assert gate["properties"][key]["type"] == o.card_type, key
        assert (o.card_type == "boolean") == (o.form == "flag"), key
        assert o.card_type != "array" or o.form == "list" or o.name == "checks", key


def test_every_surface_an_option_lacks_is_declared_with_its_reason() -> None:
    for o in TABLE:
        for reason in (o.ini, o.card):
            assert reason is None or len(reason) > 20, o.name
    lacking = {o.name: (o.ini is not None, o.card is not None) for o in TABLE if o.ini or o.card}
    assert lacking == {
        "model": (False, True),  # the card's adapter:
        "base": (False, True),  # the card's base:
        "trust-remote-code": (True, True),
        "update-baseline": (True, True),
        "update-cards": (True, True),
        "gate": (True, True),
        "with-tests": (False, True),
    }


def test_every_options_field_is_set_by_one_option_of_the_table() -> None:
    for f in fields(Options):
        if f.name != "card":  # the card a run gates: set by card_options, no option
            assert BY_NAME[option_name(f.name)].field == f.name


@pytest.mark.parametrize(
    ("name", "value"),
    [("device", "tpu"), ("dtype", "half"), ("seed", "-1"), ("budget", "lots"), ("price", "5"), ("bank", ["x"])],
)
def test_a_value_is_refused_with_the_same_message_wherever_it_was_given(name: str, value: Any) -> None:
    o = BY_NAME[name]
    with pytest.raises(ConfigError) as cli:
        _read(o, value, o.flag)
    where = f"{Path('model_cards/x.yaml')}: gate.{o.card_key}"
    with pytest.raises(ConfigError) as card:
        _read(o, value, where)
    assert cli.value.where == o.flag and card.value.where == where
    assert (card.value.problem, card.value.fix) == (cli.value.problem, cli.value.fix)
    assert str(card.value).startswith(f"model_cards/x.yaml: gate.{o.card_key}: ")
