"""Weight files checked at the door, before any model loads: no torch, only the safetensors headers.

A safetensors file is an 8-byte little-endian header length N, N bytes of JSON (tensor name -> dtype, shape and
byte offsets into the data that follows), then the data.  ``read_header`` checks that the header is readable and
that the tensors cover the data exactly (a file cut short, or with bytes missing, is refused with its name).
``check_adapter_fits`` compares each LoRA tensor of an adapter with the weight of the base module it adapts
(the base's own headers, so any architecture works): ``lora_A`` is ``[r, in]`` and ``lora_B`` is ``[out, r]``
against a base weight ``[out, in]``.  An adapter trained for another base is refused before a model loads.
``check_adapter_rank`` compares the same shapes with the rank that ``adapter_config.json`` gives (``r``, and
``rank_pattern`` per module), which peft builds the layers with before it copies the weights in.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pytest_emguard.errors import ConfigError

__all__ = ["TensorInfo", "check_adapter_fits", "check_adapter_rank", "check_finite", "read_header"]

MAX_HEADER = 100 * 1024 * 1024  # the safetensors format's own limit on the header
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
_RESAVE = "copy the file again, or re-save it with save_pretrained(..., safe_serialization=True)"


@dataclass(frozen=True, slots=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]


def read_header(path: Path) -> dict[str, TensorInfo]:
    """The tensors of one safetensors file; a ``ConfigError`` naming the file when it is unreadable, cut
    short, or its tensors do not cover its data exactly."""
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise _bad(path, f"is {size} bytes long, too short for a safetensors header")
            (length,) = struct.unpack("<Q", head)
            if length > min(MAX_HEADER, size - 8):
                raise _bad(
                    path, f"declares a {length}-byte header but the file has {size} bytes (cut short?)"
                )
            raw = fh.read(length)
    except OSError as exc:
        raise ConfigError(str(path), f"cannot be read ({exc.strerror})", _RESAVE) from exc
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _bad(path, "has a header that is not valid JSON") from None
    if not isinstance(header, dict):
        raise _bad(path, "has a header that is not a JSON object")
    data = size - 8 - length
    tensors, spans = {}, []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        info, span = _entry(path, name, entry)
        tensors[name] = info
        spans.append(span)
    end = max((stop for _, stop in spans), default=0)
    if end > data:
        raise _bad(
            path, f"is cut short: its tensors need {end} bytes of data but only {data} follow the header"
        )
    if sum(stop - start for start, stop in spans) != end or end != data:
        raise _bad(path, f"has {data} bytes of data but its tensors cover {end} of them, not all exactly")
    return tensors


def _entry(path: Path, name: str, entry: object) -> tuple[TensorInfo, tuple[int, int]]:
    if not isinstance(entry, dict):
        raise _bad(path, f"has a header entry {name!r} that is not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    ints = (
        isinstance(shape, list)
        and isinstance(offsets, list)
        and len(offsets) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in [*shape, *offsets])
    )
    if dtype not in DTYPE_BYTES or not ints:
        raise _bad(path, f"has a malformed header entry for tensor {name!r}")
    assert isinstance(shape, list) and isinstance(offsets, list) and isinstance(dtype, str)
    start, stop = offsets
    if stop - start != DTYPE_BYTES[dtype] * math.prod(shape):
        raise _bad(path, f"has tensor {name!r} whose byte range does not match its dtype and shape")
    return TensorInfo(dtype, tuple(shape)), (start, stop)


# The bits that make a float NaN or infinite: every exponent bit set.  Read as unsigned integers, so no float
# conversion (bfloat16 has no numpy dtype) and no warning.
_NON_FINITE = {
    "F16": ("<u2", 0x7C00),
    "BF16": ("<u2", 0x7F80),
    "F32": ("<u4", 0x7F800000),
    "F64": ("<u8", 0x7FF << 52),
}


def check_finite(path: Path) -> None:
    """Every floating-point tensor of one safetensors file holds finite values only, read from the file's data
    without loading a model (for adapter files: megabytes; a base's gigabytes are not read).  A ``ConfigError``
    naming the file, how many values are NaN or infinite and in which tensors: what a float16 overflow in
    training leaves, and what the preflight would misread as an adapter that changes nothing."""
    import numpy as np

    with path.open("rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(length).decode("utf-8"))
    start = 8 + length
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=start) if path.stat().st_size > start else None
    bad: list[tuple[str, int]] = []
    total = 0
    for name, entry in sorted(header.items()):
        if name == "__metadata__" or entry.get("dtype") not in _NON_FINITE or data is None:
            continue
        total += 1
        kind, mask = _NON_FINITE[entry["dtype"]]
        lo, hi = entry["data_offsets"]
        values = np.frombuffer(data[lo:hi], dtype=np.dtype(kind))
        count = int(np.count_nonzero((values & np.array(mask, dtype=kind)) == mask))
        if count:
            bad.append((name, count))
    if bad:
        count = sum(n for _, n in bad)
        raise ConfigError(
            str(path),
            f"holds {count} NaN or infinite values in {len(bad)} of its {total} floating-point tensors: "
            + _first_three([f"{name} ({n})" for name, n in bad], ", ", " and {} more"),
            "the training diverged or overflowed (float16?): retrain, or save again from a checkpoint before "
            "it; a model with such weights gives no answers to gate",
        )


def _first_three(lines: list[str], sep: str, more: str) -> str:
    """The first three of ``lines`` joined by ``sep``, then ``more`` with the count of the rest, if any."""
    return sep.join(lines[:3]) + (more.format(len(lines) - 3) if len(lines) > 3 else "")


def _bad(path: Path, problem: str) -> ConfigError:
    return ConfigError(str(path), f"is not a valid safetensors file: it {problem}", _RESAVE)


def headers(files: Iterable[Path]) -> dict[str, TensorInfo]:
    out: dict[str, TensorInfo] = {}
    for file in files:
        out.update(read_header(file))
    return out


_LORA = (".lora_A.weight", ".lora_B.weight", ".lora_embedding_A", ".lora_embedding_B")
_PREFIXES = ("base_model.model.", "base_model.")


def check_adapter_fits(
    adapter: Mapping[str, TensorInfo],
    base: Mapping[str, TensorInfo],
    *,
    adapter_file: Path,
    base_dir: str,
    fan_in_fan_out: bool = False,
) -> None:
    """Every LoRA tensor of ``adapter`` adapts a module the base has, with matching in/out sizes."""
    problems = []
    lora = {n: t for n, t in adapter.items() if n.endswith(_LORA)}
    for name, info in sorted(lora.items()):
        module, kind = _module(name)
        weight = _base_weight(base, module)
        if weight is None:
            problems.append(f"{name} adapts {module}, which the base does not have")
            continue
        if len(weight.shape) != 2 or len(info.shape) != 2 or weight.dtype in ("U8", "I8"):
            continue  # not a plain matrix (quantised, convolution): not checked
        out_dim, in_dim = weight.shape[::-1] if fan_in_fan_out else weight.shape
        if kind == "lora_embedding_A":  # [r, num_embeddings] against an embedding [num_embeddings, dim]
            out_dim, in_dim = in_dim, out_dim
        if kind.endswith("A") and info.shape[1] != in_dim:
            problems.append(
                f"{name} takes inputs of size {info.shape[1]}, the base's {module} takes {in_dim}"
            )
        if kind.endswith("B") and info.shape[0] != out_dim:
            problems.append(
                f"{name} gives outputs of size {info.shape[0]}, the base's {module} gives {out_dim}"
            )
    if problems:
        raise ConfigError(
            str(adapter_file),
            f"{len(problems)} of its {len(lora)} LoRA tensors do not fit the base model {base_dir}:\n    "
            + _first_three(problems, "\n    ", "\n    ... and {} more"),
            "this adapter was trained on another base: pass that base with --em-base=PATH (or fix "
            "base_model_name_or_path in adapter_config.json)",
        )


_PEFT_RANK = 8  # LoraConfig's default r, where adapter_config.json gives none
_CONFIG_FIX = "put back the adapter_config.json that save_pretrained() wrote with these weights"


def check_adapter_rank(
    adapter: Mapping[str, TensorInfo], config: Mapping[str, object], *, config_file: Path, adapter_file: Path
) -> None:
    """Every LoRA tensor of ``adapter`` has the rank that ``config`` (its adapter_config.json) gives its module:
    the first key of ``rank_pattern`` that matches the module's name as peft matches it, else ``r``.  ``lora_A``
    is ``[r, in]``, ``lora_B`` ``[out, r]``.  peft builds each layer at the config's rank and then fails to copy
    the weights in, a size-mismatch line per tensor, after the base model has loaded."""
    if str(config.get("peft_type", "LORA")).upper() != "LORA" or config.get("target_parameters"):
        return  # AdaLoRA's rank_pattern is a mask; a LoRA on parameters stacks its experts along the rank
    default, patterns = _rank_fields(config, config_file)
    lora = {n: t for n, t in adapter.items() if n.endswith(_LORA) and len(t.shape) >= 2}
    wrong: dict[tuple[str, int, int], list[str]] = {}
    for name, info in sorted(lora.items()):
        module, kind = _module(name)
        field, said = next(
            ((f"'rank_pattern' key {k!r}", r) for k, r in patterns if re.match(rf"(.*\.)?({k})$", module)),
            default,
        )
        have = info.shape[0] if kind.endswith("A") else info.shape[1]
        if have != said:
            wrong.setdefault((field, said, have), []).append(name)
    lines = [
        f"field {field} says rank {said}, but {len(names)} of the {len(lora)} LoRA tensors in "
        f"{adapter_file.name} {'has' if len(names) == 1 else 'have'} rank {have} (e.g. {names[0]}, shape "
        f"{list(lora[names[0]].shape)})"
        for (field, said, have), names in wrong.items()
    ]
    if len(lines) == 1:
        field, _, have = next(iter(wrong))
        raise ConfigError(str(config_file), lines[0], f"{_CONFIG_FIX}, or set {field} to {have}")
    if lines:
        raise ConfigError(
            str(config_file),
            f"{len(lines)} of the ranks it gives are not its LoRA weights' ranks:\n    "
            + _first_three(lines, "\n    ", "\n    ... and {} more"),
            f"{_CONFIG_FIX}, or set each field to the rank its weights have",
        )


def _rank_fields(
    config: Mapping[str, object], config_file: Path
) -> tuple[tuple[str, int], list[tuple[str, int]]]:
    """(field, rank) of ``r`` and (key, rank) of each ``rank_pattern`` entry, in order; a ``ConfigError`` naming
    each that is not a positive whole number (or, for a key, not a regular expression)."""
    raw, patterns = config.get("r", _PEFT_RANK), config.get("rank_pattern") or {}
    r = _rank(raw)
    problems = [] if r else [f"field 'r' is {raw!r}, not a positive whole number"]
    if not isinstance(patterns, dict):
        problems.append(f"field 'rank_pattern' is {patterns!r}, not an object of module names and ranks")
        patterns = {}
    ranks = [(str(key), _rank(value)) for key, value in patterns.items()]
    for (key, rank), value in zip(ranks, patterns.values(), strict=True):
        if not rank:
            problems.append(f"field 'rank_pattern' key {key!r} is {value!r}, not a positive whole number")
        try:
            re.compile(key)
        except re.error as exc:
            problems.append(f"field 'rank_pattern' key {key!r} is not a regular expression ({exc})")
    if problems or not r:
        raise ConfigError(str(config_file), "; ".join(problems), _CONFIG_FIX)
    field = "'r'" if "r" in config else "'r' (not given: peft's default)"
    return (field, r), [(key, rank) for key, rank in ranks if rank]


def _rank(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _module(name: str) -> tuple[str, str]:
    for suffix in _LORA:
        if name.endswith(suffix):
            module = name[: -len(suffix)]
            for prefix in _PREFIXES:
                if module.startswith(prefix):
                    module = module[len(prefix) :]
                    break
            return module, suffix.strip(".").removesuffix(".weight")
    raise ValueError(name)


def _base_weight(base: Mapping[str, TensorInfo], module: str) -> TensorInfo | None:
    """The base's weight of ``module``; a base saved without the task head's ``model.`` prefix (or with it)
    matches too."""
    bare = module.partition(".")[2]
    found = next(
        (base[k] for k in (f"{module}.weight", f"{bare}.weight", f"model.{module}.weight") if k in base), None
    )
    if found is None and module.endswith("lm_head"):  # tied to the input embedding, not saved on its own
        found = next((t for n, t in base.items() if n.endswith("embed_tokens.weight")), None)
    return found
