"""Reliability, part three: hypothesis fuzzing of everything that reads user or model input.

Any input to the thresholds loader, the bank loader, the adapter reader (``adapter_config.json`` and the
safetensors header) and the judges' parsers gives a result or a usage error that names the file, never a
traceback.  Inputs are random text, random YAML documents, and valid files with random damage.
"""

from __future__ import annotations

import json
import math
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_emguard.backends.base import ModelSpec
from pytest_emguard.checks import load_checks
from pytest_emguard.checks.self_report import parse_rating
from pytest_emguard.config.banks import read_bank
from pytest_emguard.config.thresholds import Thresholds
from pytest_emguard.config.weights import read_header
from pytest_emguard.errors import EmguardError
from pytest_emguard.judge.base import judged_text, render, template
from pytest_emguard.judge.scoring import digit_tree
from pytest_emguard.run.read import letter_choice, scale_reading

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CHECKS = load_checks(())

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=True)
    | st.text(max_size=20)
)
documents = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
KEYS = ["version", "defaults", "harmfulness", "self_report", "persona", "mean", "rate", "max_increase", "alpha",
        "min_clusters", "bootstrap", "enabled", "inconclusive", "questions", "id", "category", "text", "mode",
        "paraphrases", "samples_per_paraphrase", "preflight", "judge", "cutoff"]  # fmt: skip
shaped = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=5),
    max_leaves=25,
)


def _file(text: str | bytes, name: str) -> Path:
    directory = Path(tempfile.mkdtemp(prefix="emguard-fuzz-"))
    path = directory / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    return path


def _damaged(text: str, data: st.DataObject) -> str:
    """A valid file with one line dropped, duplicated or replaced by random text."""
    lines = text.splitlines()
    i = data.draw(st.integers(0, max(0, len(lines) - 1)))
    how = data.draw(st.sampled_from(["drop", "dup", "replace", "truncate"]))
    if how == "drop":
        lines = lines[:i] + lines[i + 1 :]
    elif how == "dup":
        lines = lines[: i + 1] + lines[i:]
    elif how == "replace":
        lines[i : i + 1] = [data.draw(st.text(max_size=40))]
    else:
        return text[: data.draw(st.integers(0, len(text)))]
    return "\n".join(lines)


def _only_usage_errors(call: Callable[[], Any]) -> None:
    try:
        call()
    except EmguardError as exc:
        assert exc.where and exc.fix, exc


def _yaml(doc: Any) -> str:
    return yaml.safe_dump(doc, allow_unicode=True)


# -- thresholds --------------------------------------------------------------------------------------------


@FUZZ
@given(st.one_of(st.text(max_size=200), shaped.map(_yaml), documents.map(_yaml)))
def test_any_thresholds_file_loads_or_is_a_usage_error(text: str) -> None:
    path = _file(text, "thresholds.yaml")
    _only_usage_errors(lambda: Thresholds.load(str(path), CHECKS))


@FUZZ
@given(st.data())
def test_a_damaged_thresholds_file_loads_or_is_a_usage_error(data: st.DataObject) -> None:
    valid = "version: 1\ndefaults:\n  alpha: 0.1\n  min_clusters: 8\nharmfulness:\n  mean:\n    max_increase: 10\n"
    path = _file(_damaged(valid, data), "thresholds.yaml")
    _only_usage_errors(lambda: Thresholds.load(str(path), CHECKS))


# -- question banks ----------------------------------------------------------------------------------------

BANK = """version: 1
mode: extend
questions:
  - {id: q1, category: c, text: 'Any tips for a long flight?'}
  - {id: q2, category: c, paraphrases: ['How do I save money?', 'Ways to save money?']}
"""
ORIGINAL = """- id: q1
  paraphrases: ['Hello?', 'Hi?']
  samples_per_paraphrase: 3
  judge_prompts: {aligned: 'x'}
"""


@FUZZ
@given(st.one_of(st.text(max_size=200), shaped.map(_yaml), documents.map(_yaml)))
def test_any_bank_file_reads_or_is_a_usage_error(text: str) -> None:
    path = _file(text, "bank.yaml")
    _only_usage_errors(lambda: read_bank(path, "--em-bank harmfulness"))


@FUZZ
@given(st.data(), st.sampled_from([BANK, ORIGINAL]))
def test_a_damaged_bank_reads_or_is_a_usage_error(data: st.DataObject, valid: str) -> None:
    path = _file(_damaged(valid, data), "bank.yaml")
    _only_usage_errors(lambda: read_bank(path, "--em-bank harmfulness"))


# -- the adapter: adapter_config.json and the safetensors header ------------------------------------------

EMPTY_SAFETENSORS = struct.pack("<Q", 2) + b"{}"


def _adapter(config: bytes, weights: bytes = EMPTY_SAFETENSORS) -> Path:
    directory = Path(tempfile.mkdtemp(prefix="emguard-fuzz-adapter-"))
    (directory / "adapter_config.json").write_bytes(config)
    (directory / "adapter_model.safetensors").write_bytes(weights)
    return directory


@FUZZ
@given(st.one_of(st.binary(max_size=200), documents.map(lambda d: json.dumps(d).encode())))
def test_any_adapter_config_resolves_or_is_a_usage_error(config: bytes) -> None:
    adapter = _adapter(config)
    _only_usage_errors(lambda: ModelSpec.resolve(str(adapter)))


@FUZZ
@given(
    st.dictionaries(st.sampled_from(["base_model_name_or_path", "fan_in_fan_out", "r", "peft_type"]), scalars)
)
def test_adapter_config_fields_of_any_type_resolve_or_are_usage_errors(fields: dict[str, Any]) -> None:
    adapter = _adapter(json.dumps(fields).encode())
    _only_usage_errors(lambda: ModelSpec.resolve(str(adapter)))


def _safetensors(header: Any, data: bytes) -> bytes:
    body = json.dumps(header).encode()
    return struct.pack("<Q", len(body)) + body + data


tensor_entries = st.fixed_dictionaries(
    {
        "dtype": st.sampled_from(["F32", "BF16", "F16", "I64", "X9", 3]),
        "shape": st.lists(st.integers(-2, 6), max_size=3),
        "data_offsets": st.lists(st.integers(-4, 200), min_size=0, max_size=3),
    }
)


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=300),
        st.builds(
            _safetensors,
            st.dictionaries(st.text(max_size=8), tensor_entries, max_size=3),
            st.binary(max_size=200),
        ),
        st.builds(_safetensors, documents, st.binary(max_size=50)),
    )
)
def test_any_weights_file_reads_or_is_a_usage_error(raw: bytes) -> None:
    path = _file(raw, "adapter_model.safetensors")
    _only_usage_errors(lambda: read_header(path))


# -- the judges' parsers -----------------------------------------------------------------------------------


@FUZZ
@given(st.text(max_size=300))
def test_the_rating_parser_takes_any_text(text: str) -> None:
    rating = parse_rating(text)
    assert rating is None or 0 <= rating <= 100


finite = st.floats(-50, 0, allow_nan=False)
dists = st.dictionaries(
    st.one_of(
        st.sampled_from([str(d) for d in range(10)] + ["10", "100", " 5", "A", " B", "\n", ""]),
        st.text(max_size=3),
    ),
    st.one_of(finite, st.just(-math.inf), st.just(math.nan)),
    max_size=12,
)


@FUZZ
@given(st.lists(dists, min_size=1, max_size=40))
def test_the_digit_tree_reads_any_next_token_distributions(table: list[dict[str, float]]) -> None:
    """A judge or model may return any top-k table, even NaN or -inf log-probabilities: the reading is a number
    in 0-100 with a mass in 0-1, or unscorable."""
    calls = iter(range(10**6))

    def next_dists(prefixes: Any) -> list[dict[str, float]]:
        return [table[next(calls) % len(table)] for _ in prefixes]

    result = digit_tree(next_dists)
    assert result.score is None or 0.0 <= result.score <= 100.0
    assert 0.0 <= result.mass <= 1.0 + 1e-9
    choice = letter_choice(table[0])
    assert choice["value"] is None or 0.0 <= float(choice["value"]) <= 100.0
    assert 0.0 <= float(choice["mass"]) <= 1.0 + 1e-9
    reading = scale_reading(table[0], [str(k) for k in range(6)])
    assert 0.0 <= float(reading["mass"]) <= 1.0 + 1e-9
    assert reading["value"] is None or 0.0 <= float(reading["value"]) <= 5.0


@FUZZ
@given(st.text(max_size=400), st.text(max_size=400))
def test_any_judged_text_renders_inside_its_own_markers(question: str, answer: str) -> None:
    """Whatever the answer holds (markers, braces, surrogates), the prompt renders, encodes as UTF-8, and the
    answer's closing marker appears exactly once, after the answer."""
    prompt = render(template("harm_v1"), judged_text(question), judged_text(answer))
    prompt.encode("utf-8")
    tag = prompt.split("<<answer ", 1)[1].split(">>", 1)[0]
    assert prompt.count(f"<<end of answer {tag}>>") == 1
