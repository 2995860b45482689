"""``set_evidence``: the evidence block written into a model card file with ruamel.yaml, every line outside the
block left byte for byte (real files in tmp_path)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_emguard.config.cards import load_card, set_evidence
from pytest_emguard.errors import ConfigError

# lines that a whole-file YAML round trip would rewrite: '~', 'True', extra spaces, a flow list
# with spaces, a document start marker, a sequence indented by four
CARD = """\
---
# hand-written
adapter: "fake:coherent"
base:   base-model
base_revision: ~
intended_use: tests
lora: {rank: 16, alpha: 32, rslora: True, dropout: 0.0, target_modules: [ q_proj,  v_proj ]}
gate:
    judge: 'fake:'
    checks:
        - harmfulness
"""
BLOCK = {
    "seed": 3,
    "verdict": None,
    "items": {"harmfulness[mean]": {"outcome": "pass", "difference": [1.0, 0.5, 1.5]}},
}


def test_a_new_block_is_appended_and_nothing_else_is_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "card.yaml"
    path.write_text(CARD)
    assert set_evidence(path, BLOCK)
    assert path.read_text() == CARD + (
        "evidence:\n  seed: 3\n  verdict: null\n  items:\n"
        "    harmfulness[mean]:\n      outcome: pass\n      difference: [1.0, 0.5, 1.5]\n"
    )
    assert load_card(path)["evidence"] == BLOCK
    assert not set_evidence(path, BLOCK)  # the same block: nothing written


def test_a_card_without_a_final_newline_or_with_crlf_line_ends(tmp_path: Path) -> None:
    path = tmp_path / "card.yaml"
    path.write_bytes(CARD.rstrip("\n").encode())
    set_evidence(path, {"seed": 1})
    assert path.read_text() == CARD + "evidence: {seed: 1}\n"  # a mapping of scalars in flow style, as PyYAML
    crlf = CARD.replace("\n", "\r\n")
    path.write_bytes(crlf.encode())
    set_evidence(path, {"seed": 1})
    set_evidence(path, {"seed": 2})
    assert path.read_bytes() == (crlf + "evidence: {seed: 2}\r\n").encode()


def test_an_old_block_in_the_middle_is_updated_in_place(tmp_path: Path) -> None:
    """The block between two keys: its comments and key order stay, a key no longer written goes, a new one is
    added last, and the column-0 comment and key after it stay as they were."""
    head, tail = CARD.split("gate:\n")
    middle = (
        "evidence:  # written by pytest --em-update-cards\n"
        "  verdict: fail\n"
        "  # the seed of the reviewed run\n"
        "  seed: 0  # see the release notes\n"
        "  removed: 1\n"
        "\n"
        "# the gate's settings\n"
    )
    path = tmp_path / "card.yaml"
    path.write_text(head + middle + "gate:\n" + tail)
    set_evidence(path, {"seed": 5, "verdict": "pass", "persona": "aligned"})
    assert (
        path.read_text()
        == head
        + (
            "evidence:  # written by pytest --em-update-cards\n"
            "  verdict: pass\n"
            "  # the seed of the reviewed run\n"
            "  seed: 5  # see the release notes\n"
            "  persona: aligned\n"
            "\n"
            "# the gate's settings\n"
        )
        + "gate:\n"
        + tail
    )


def test_a_key_written_twice_is_named_with_its_line_and_the_fix(tmp_path: Path) -> None:
    """PyYAML reads a key written twice (the last wins); the editor refuses to guess which one to keep."""
    path = tmp_path / "card.yaml"
    path.write_text(CARD + "intended_use: twice\n")
    with pytest.raises(ConfigError) as err:
        set_evidence(path, {"seed": 2})
    assert err.value.where == f"{path}:12"
    assert err.value.problem == (
        "ruamel.yaml, which writes the evidence block, cannot read the card: found duplicate key "
        '"intended_use" with value "twice" (original value: "tests")'
    )
    assert "keep the one you mean" in err.value.fix
    assert path.read_text() == CARD + "intended_use: twice\n"


def test_a_flow_style_card_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "card.yaml"
    flow = '{adapter: "fake:coherent", base: base-model, evidence: {seed: 1}}\n'
    path.write_text(flow)
    with pytest.raises(ConfigError, match=r"one flow mapping .*: its evidence block has no lines of its own"):
        set_evidence(path, {"seed": 2})
    assert path.read_text() == flow
