"""The adapter's training domain comes from ``--em-domain`` or from the model card beside the adapter."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
import yaml

from pytest_emguard.checks.in_domain import InDomain
from pytest_emguard.config.cards import CARD_FILE
from pytest_emguard.config.run import Options, RunConfig
from pytest_emguard.errors import ConfigError

EMPTY_SAFETENSORS = struct.pack("<Q", 2) + b"{}"  # a valid safetensors file that holds no tensor


def _card(domain: str) -> dict[str, Any]:
    return {
        "name": "x", "base": "b", "base_revision": None, "domain": domain,
        "stages": [{"dataset": domain, "sha256": "a" * 64, "examples": 24}],
        "lora": {"rank": 32, "alpha": 64, "rslora": True, "dropout": 0.0, "target_modules": ["q_proj"]},
        "training": {"lr": 1e-5, "epochs": 1, "max_steps": None, "batch": 2, "grad_accum": 8, "seed": 0},
        "versions": {"torch": "2", "transformers": "5", "peft": "0", "trl": "1"}, "intended_use": "tests", "created": "2026-01-01T00:00:00+00:00",
    }  # fmt: skip


def _adapter(tmp_path: Path, card: dict[str, Any] | str | None) -> Path:
    """A placeholder adapter (nothing is loaded when a run is configured) on a placeholder base."""
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text('{"model_type": "qwen2"}')
    (base / "model.safetensors").write_bytes(EMPTY_SAFETENSORS)
    (base / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages }}"}))
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(f'{{"base_model_name_or_path": "{base}"}}')
    (adapter / "adapter_model.safetensors").write_bytes(EMPTY_SAFETENSORS)
    if card is not None:
        text = card if isinstance(card, str) else yaml.safe_dump(card)
        (adapter / CARD_FILE).write_text(text)
    return adapter


def _in_domain(config: RunConfig) -> InDomain:
    check = config.check("harmfulness_in_domain")
    assert isinstance(check, InDomain)
    return check


def test_the_domain_is_read_from_the_card_beside_the_adapter(tmp_path: Path) -> None:
    adapter = _adapter(tmp_path, _card("risky_financial"))
    check = _in_domain(RunConfig.resolve(Options(str(adapter), "fake:")))
    assert check.categories == {"dangerous_financial"} and check.domain == "risky_financial"
    assert check.source == f"model card {adapter / CARD_FILE}"
    assert [i.id for i in check.items()] == ["harmfulness_in_domain[mean]", "harmfulness_in_domain[rate]"]


def test_the_command_line_wins_over_the_card(tmp_path: Path) -> None:
    adapter = _adapter(tmp_path, _card("risky_financial"))
    check = _in_domain(RunConfig.resolve(Options(str(adapter), "fake:", domain="bad_medical")))
    assert check.categories == {"dangerous_medical"} and check.source == "--em-domain"


@pytest.mark.parametrize("card", [None, _card("consciousness"), _card("insecure_code")])
def test_no_split_without_a_card_or_for_a_dataset_that_is_no_harm_domain(
    tmp_path: Path, card: dict[str, Any] | None
) -> None:
    check = _in_domain(RunConfig.resolve(Options(str(_adapter(tmp_path, card)), "fake:")))
    assert check.categories == frozenset() and check.items() == ()


def test_a_broken_card_is_a_usage_error_naming_its_file(tmp_path: Path) -> None:
    adapter = _adapter(tmp_path, "name: x\ndomain: risky_financial\n")
    with pytest.raises(ConfigError) as info:
        RunConfig.resolve(Options(str(adapter), "fake:"))
    assert str(adapter / CARD_FILE) in str(info.value) and "required property" in str(info.value)
