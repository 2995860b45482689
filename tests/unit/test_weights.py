"""Weight files read at the door without a model: the finite-values check on hand-written safetensors files, and
the ranks adapter_config.json gives against the LoRA tensors' shapes."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from pytest_emguard.config.weights import TensorInfo, check_adapter_rank, check_finite, read_header
from pytest_emguard.errors import ConfigError


def _write(path: Path, tensors: dict[str, tuple[str, bytes, tuple[int, ...]]]) -> Path:
    """A safetensors file from raw little-endian bytes per tensor: name -> (dtype, data, shape)."""
    header, body, offset = {}, b"", 0
    for name, (dtype, data, shape) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        body += data
        offset += len(data)
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + body)
    read_header(path)  # a well-formed file: only its values are at stake here
    return path


def _bf16(values: list[float]) -> bytes:
    """bfloat16 as the top 16 bits of each float32."""
    return (np.array(values, dtype="<f4").view("<u4") >> 16).astype("<u2").tobytes()


def test_finite_weights_of_every_float_type_pass(tmp_path: Path) -> None:
    ok = {
        "a.lora_A.weight": ("F32", np.array([0.5, -2.0, 1e30, 0.0], dtype="<f4").tobytes(), (2, 2)),
        "a.lora_B.weight": ("F16", np.array([65504.0, -1.0], dtype="<f2").tobytes(), (2, 1)),
        "b.lora_A.weight": ("BF16", _bf16([3.0e38, -1.5]), (1, 2)),
        "b.lora_B.weight": ("F64", np.array([1e300], dtype="<f8").tobytes(), (1, 1)),
        "steps": ("I32", np.array([-1], dtype="<i4").tobytes(), (1,)),  # all bits set: an integer, not a NaN
    }
    check_finite(_write(tmp_path / "ok.safetensors", ok))


@pytest.mark.parametrize(
    ("dtype", "data"),
    [
        ("F32", np.array([1.0, np.nan, np.inf, 2.0], dtype="<f4").tobytes()),
        ("F16", np.array([1.0, np.inf, -np.inf, 2.0], dtype="<f2").tobytes()),
        ("BF16", _bf16([1.0, float("nan"), float("-inf"), 2.0])),
        ("F64", np.array([1.0, np.nan, -np.inf, 2.0], dtype="<f8").tobytes()),
    ],
)
def test_nan_or_infinite_values_are_refused_naming_the_tensor(
    tmp_path: Path, dtype: str, data: bytes
) -> None:
    path = _write(
        tmp_path / "adapter_model.safetensors",
        {
            "m.lora_A.weight": (dtype, data, (2, 2)),
            "m.lora_B.weight": ("F32", np.zeros(4, dtype="<f4").tobytes(), (2, 2)),
        },
    )
    with pytest.raises(ConfigError) as err:
        check_finite(path)
    assert err.value.where == str(path)
    assert "holds 2 NaN or infinite values in 1 of its 2 floating-point tensors: m.lora_A.weight (2)" in str(
        err.value
    )
    assert "retrain" in err.value.fix


# -- check_adapter_rank: r and rank_pattern against the shapes ([r, in] for lora_A, [out, r] for lora_B) ---------

CONFIG, WEIGHTS = Path("a/adapter_config.json"), Path("a/adapter_model.safetensors")


def _lora(ranks: dict[str, int]) -> dict[str, TensorInfo]:
    """A and B of each module (``layers.0.q_proj``) at its rank, as peft saves them; an embedding's too."""
    out = {}
    for module, r in ranks.items():
        prefix = f"base_model.model.model.{module}"
        if module.endswith("embed_tokens"):
            out[f"{prefix}.lora_embedding_A"] = TensorInfo("F32", (r, 100))
            out[f"{prefix}.lora_embedding_B"] = TensorInfo("F32", (16, r))
        else:
            out[f"{prefix}.lora_A.weight"] = TensorInfo("F32", (r, 16))
            out[f"{prefix}.lora_B.weight"] = TensorInfo("F32", (32, r))
    return out


def _rank_error(ranks: dict[str, int], config: dict[str, object]) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        check_adapter_rank(_lora(ranks), config, config_file=CONFIG, adapter_file=WEIGHTS)
    assert err.value.where == str(CONFIG)
    return err.value


def test_ranks_that_match_pass_with_rank_pattern_matched_as_peft_matches_it() -> None:
    """peft takes the first key of rank_pattern that matches the end of the module's name (after a dot), as a
    regular expression; else r.  Key order matters: both keys below match layers.0.q_proj, the first wins."""
    ranks = {"layers.0.q_proj": 2, "layers.1.q_proj": 6, "layers.0.v_proj": 4, "embed_tokens": 4}
    config = {"r": 4, "rank_pattern": {"layers.0.q_proj": 2, "q_proj": 6}, "peft_type": "LORA"}
    check_adapter_rank(_lora(ranks), config, config_file=CONFIG, adapter_file=WEIGHTS)
    check_adapter_rank(_lora({"layers.0.xq_proj": 4}), config, config_file=CONFIG, adapter_file=WEIGHTS)
    no_r: dict[str, object] = {}  # peft's default, 8
    check_adapter_rank(_lora({"layers.0.q_proj": 8}), no_r, config_file=CONFIG, adapter_file=WEIGHTS)


def test_a_rank_that_is_not_the_weights_is_named_with_the_field_and_both_ranks() -> None:
    err = _rank_error({"layers.0.q_proj": 4, "layers.0.v_proj": 4}, {"r": 16})
    assert err.problem == (
        "field 'r' says rank 16, but 4 of the 4 LoRA tensors in adapter_model.safetensors have rank 4 (e.g. "
        "base_model.model.model.layers.0.q_proj.lora_A.weight, shape [4, 16])"
    )
    assert err.fix.endswith(", or set 'r' to 4")
    missing = _rank_error({"layers.0.q_proj": 4}, {})
    assert missing.problem.startswith("field 'r' (not given: peft's default) says rank 8, but 2 of the 2 ")


def test_each_wrong_field_is_listed_once_with_its_tensor_count() -> None:
    """The config of another run: r and two rank_pattern keys wrong; an embedding's A is [r, vocab], its B
    [dim, r]; a B alone (weights that disagree with themselves) counts on its own."""
    weights = _lora({"layers.0.q_proj": 8, "layers.1.q_proj": 8, "layers.0.v_proj": 8, "embed_tokens": 8})
    weights["base_model.model.model.layers.0.v_proj.lora_B.weight"] = TensorInfo("F32", (32, 2))
    config = {"r": 4, "rank_pattern": {"q_proj": 16, "embed_tokens": 8}}
    with pytest.raises(ConfigError) as raised:
        check_adapter_rank(weights, config, config_file=CONFIG, adapter_file=WEIGHTS)
    err = raised.value
    assert err.problem.splitlines() == [
        "3 of the ranks it gives are not its LoRA weights' ranks:",
        "    field 'rank_pattern' key 'q_proj' says rank 16, but 4 of the 8 LoRA tensors in adapter_model.safetensors "
        "have rank 8 (e.g. base_model.model.model.layers.0.q_proj.lora_A.weight, shape [8, 16])",
        "    field 'r' says rank 4, but 1 of the 8 LoRA tensors in adapter_model.safetensors has rank 8 (e.g. "
        "base_model.model.model.layers.0.v_proj.lora_A.weight, shape [8, 16])",
        "    field 'r' says rank 4, but 1 of the 8 LoRA tensors in adapter_model.safetensors has rank 2 (e.g. "
        "base_model.model.model.layers.0.v_proj.lora_B.weight, shape [32, 2])",
    ]
    assert err.fix.endswith(", or set each field to the rank its weights have")


@pytest.mark.parametrize(
    "config", [{"r": 16, "peft_type": "ADALORA"}, {"r": 16, "target_parameters": ["mlp.experts.down_proj"]}]
)
def test_adapters_whose_rank_is_not_the_shape_are_not_checked(config: dict[str, object]) -> None:
    """AdaLoRA's rank_pattern is a mask and its ranks shrink; a LoRA on parameters stacks experts along r."""
    check_adapter_rank(_lora({"layers.0.q_proj": 4}), config, config_file=CONFIG, adapter_file=WEIGHTS)


def test_rank_fields_of_the_wrong_type_are_all_named() -> None:
    err = _rank_error({}, {"r": "8", "rank_pattern": {"q_proj": 0, "(": 4, "v_proj": True}})
    assert err.problem == (
        "field 'r' is '8', not a positive whole number; field 'rank_pattern' key 'q_proj' is 0, not a positive "
        "whole number; field 'rank_pattern' key '(' is not a regular expression (missing ), unterminated "
        "subpattern at position 0); field 'rank_pattern' key 'v_proj' is True, not a positive whole number"
    )
    assert err.fix == "put back the adapter_config.json that save_pretrained() wrote with these weights"
    assert "not an object" in _rank_error({}, {"r": 4, "rank_pattern": [4]}).problem
