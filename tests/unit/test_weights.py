"""Weight files read at the door without a model: the finite-values check on hand-written safetensors files."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from pytest_emguard.config.weights import check_finite, read_header
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
