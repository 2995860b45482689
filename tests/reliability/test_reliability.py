"""Reliability, part one: bad input is stopped at the door, and a failure during evaluation is reported once.

At the door: exit code 4 (pytest's usage error), one message that names the file or option and the fix, and
nothing written to the cache.  Real files throughout: the tiny Qwen2 and its LoRA adapter, SmolLM2, and copies of
them damaged the way a failed copy or download damages files.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]


def _copy(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def _door(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """A gate run that must stop at the door: exit code 4, a few lines, no cache written."""
    cache = pytester.path / "cache"
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--em-judge=fake:", f"--em-cache-dir={cache}", *args
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR, "\n".join(result.outlines + result.errlines)
    assert len(result.outlines + result.errlines) < 12, "\n".join(result.outlines + result.errlines)
    assert not cache.exists(), "nothing may be written to the cache before the door is passed"
    return result


def _error(result: pytest.RunResult) -> str:
    return "\n".join(result.errlines)


def test_a_truncated_adapter_weights_file_is_stopped_at_the_door(
    pytester: pytest.Pytester, tiny_adapter: Path
) -> None:
    adapter = _copy(tiny_adapter, pytester.path / "adapter")
    weights = adapter / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    result = _door(pytester, f"--em-model={adapter}")
    result.stderr.fnmatch_lines(
        [
            f"ERROR: pytest-emguard: {weights}: is not a valid safetensors file: it is cut short: its tensors "
            "need * bytes of data but only * follow the header",
            "  fix: copy the file again, or re-save it with save_pretrained(..., safe_serialization=True)",
        ]
    )


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda b: b"", "is 0 bytes long, too short for a safetensors header"),
        (lambda b: b[:100], "declares a *-byte header but the file has 100 bytes (cut short?)"),
        (lambda b: b[:8] + b"\xff" * (len(b) - 8), "has a header that is not valid JSON"),
        (lambda b: b + b"\0" * 64, "has * bytes of data but its tensors cover * of them, not all exactly"),
    ],
    ids=["empty", "header-cut", "garbage", "trailing-bytes"],
)
def test_damaged_weights_name_the_file(
    pytester: pytest.Pytester, tiny_adapter: Path, damage: Callable[[bytes], bytes], problem: str
) -> None:
    adapter = _copy(tiny_adapter, pytester.path / "adapter")
    weights = adapter / "adapter_model.safetensors"
    weights.write_bytes(damage(weights.read_bytes()))
    result = _door(pytester, f"--em-model={adapter}")
    result.stderr.fnmatch_lines(
        [f"ERROR: pytest-emguard: {weights}: is not a valid safetensors file: it {problem}"]
    )


def test_an_adapter_with_nan_weights_is_refused_as_such(
    pytester: pytest.Pytester, tiny_adapter: Path
) -> None:
    """A float16 overflow in training leaves NaN and inf in the weights; the preflight would read such an adapter
    as one that changes nothing (KL 0).  The door reads the adapter's values and names the tensors."""
    import json
    import struct

    adapter = _copy(tiny_adapter, pytester.path / "adapter")
    weights = adapter / "adapter_model.safetensors"
    raw = bytearray(weights.read_bytes())
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + size])
    name = sorted(k for k in header if k.endswith("lora_B.weight"))[0]
    assert header[name]["dtype"] == "F32"
    start = 8 + size + header[name]["data_offsets"][0]
    raw[start : start + 8] = struct.pack("<ff", float("nan"), float("inf"))
    weights.write_bytes(bytes(raw))
    result = _door(pytester, f"--em-model={adapter}")
    result.stderr.fnmatch_lines(
        [
            f"ERROR: pytest-emguard: {weights}: holds 2 NaN or infinite values in 1 of its 28 floating-point "
            f"tensors: {name} (2)",
            "  fix: the training diverged or overflowed (float16?): retrain, or save again from a checkpoint*",
        ]
    )


def test_damaged_base_weights_are_stopped_too(
    pytester: pytest.Pytester, tiny_adapter: Path, tiny_qwen: Path
) -> None:
    base = _copy(tiny_qwen, pytester.path / "base")
    weights = base / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: len(weights.read_bytes()) // 2])
    result = _door(pytester, f"--em-model={tiny_adapter}", f"--em-base={base}")
    result.stderr.fnmatch_lines(
        [f"ERROR: pytest-emguard: {weights}: is not a valid safetensors file: it is cut short*"]
    )


def test_an_adapter_trained_for_another_base_is_stopped_at_the_door(
    pytester: pytest.Pytester, tiny_adapter: Path, smollm2: Path
) -> None:
    """The tiny Qwen2's adapter (hidden size 64) against SmolLM2 (hidden size 576)."""
    result = _door(pytester, f"--em-model={tiny_adapter}", f"--em-base={smollm2}")
    result.stderr.fnmatch_lines(
        [
            f"ERROR: pytest-emguard: {tiny_adapter / 'adapter_model.safetensors'}: 28 of its 28 LoRA tensors do not "
            f"fit the base model {smollm2}:",
            "    base_model.model.model.layers.0.mlp.down_proj.lora_A.weight takes inputs of size 128, the base's "
            "model.layers.0.mlp.down_proj takes 1536",
            "    *",
            "    *",
            "    ... and 25 more",
            "  fix: this adapter was trained on another base: pass that base with --em-base=PATH*",
        ]
    )


def test_an_adapter_for_a_module_the_base_lacks_is_stopped(
    pytester: pytest.Pytester, tiny_adapter: Path
) -> None:
    """Renamed tensors (another architecture's module names) adapt nothing in this base."""
    import json
    import struct

    adapter = _copy(tiny_adapter, pytester.path / "adapter")
    weights = adapter / "adapter_model.safetensors"
    raw = weights.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + size])
    renamed = {k.replace("self_attn.q_proj", "attn.c_attn"): v for k, v in header.items()}
    body = json.dumps(renamed).encode()
    body += b" " * (size - len(body)) if len(body) <= size else b""
    weights.write_bytes(struct.pack("<Q", len(body)) + body + raw[8 + size :])
    result = _door(pytester, f"--em-model={adapter}")
    result.stderr.fnmatch_lines(
        ["ERROR: pytest-emguard: *adapter_model.safetensors: 4 of its 28 LoRA tensors do not fit the base model *:",
         "    base_model.model.model.layers.0.attn.c_attn.lora_A.weight adapts model.layers.0.attn.c_attn, which the "
         "base does not have"]
    )  # fmt: skip


def test_a_cache_dir_that_is_a_file_is_stopped_at_the_door(pytester: pytest.Pytester) -> None:
    taken = pytester.path / "taken"
    taken.write_text("not a directory")
    result = pytester.runpytest_subprocess(
        "--em-model=fake:identical", "--em-judge=fake:", f"--em-cache-dir={taken}"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            f"ERROR: pytest-emguard: --em-cache-dir: {taken} is a file, not a directory",
            "  fix: pass a directory*",
        ]
    )
    assert len(result.outlines + result.errlines) < 12 and taken.read_text() == "not a directory"
    inside = pytester.runpytest_subprocess(
        "--em-model=fake:identical", "--em-judge=fake:", f"--em-cache-dir={taken}/c"
    )
    assert inside.ret == pytest.ExitCode.USAGE_ERROR
    inside.stderr.fnmatch_lines(
        [f"ERROR: pytest-emguard: --em-cache-dir: {taken} is a file, so {taken}/c cannot be created"]
    )


def test_a_cache_store_that_is_not_a_database_is_named_and_never_written(pytester: pytest.Pytester) -> None:
    cache = pytester.mkdir("cache")
    store = cache / "records.sqlite3"
    store.write_bytes(b"this is not an sqlite database\n" * 64)
    result = pytester.runpytest_subprocess(
        "--em-model=fake:identical", "--em-judge=fake:", f"--em-cache-dir={cache}", "-p", "no:cacheprovider"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR, "\n".join(result.outlines + result.errlines)
    result.stderr.fnmatch_lines(
        [
            f"ERROR: pytest-emguard: {store}: the cache's record store is not an sqlite database (damaged, or "
            "another file in its place)",
            f"  fix: move it aside (mv {store} {store}.damaged) and run again: the records are made anew",
        ]
    )
    assert len(result.outlines + result.errlines) < 12
    assert store.read_bytes() == b"this is not an sqlite database\n" * 64
    assert sorted(p.name for p in cache.iterdir()) == ["records.sqlite3"]


@pytest.mark.parametrize("option", ["model", "judge", "base", "cache-dir", "thresholds", "samples", "domain"])
def test_an_option_given_empty_is_a_usage_error(pytester: pytest.Pytester, option: str) -> None:
    args = {"model": "--em-model=fake:identical", "judge": "--em-judge=fake:"}
    args[option] = f"--em-{option}="
    result = pytester.runpytest_subprocess(*args.values())
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            f"ERROR: pytest-emguard: --em-{option}: is given but empty",
            f"  fix: give it a value, or leave --em-{option} out",
        ]
    )


def test_a_full_model_without_a_base_names_the_directory(pytester: pytest.Pytester, tiny_qwen: Path) -> None:
    result = _door(pytester, f"--em-model={tiny_qwen}")
    result.stderr.fnmatch_lines(
        [
            f"ERROR: pytest-emguard: --em-base: {tiny_qwen} is a full model (not a PEFT adapter), which carries no "
            "record of its base model",
            "  fix: pass the base model to compare against with --em-base=PATH",
        ]
    )


def _set_fields(adapter: Path, **fields: object) -> Path:
    """adapter_config.json with ``fields`` set, as a hand edit or a config copied from another run leaves it."""
    config = adapter / "adapter_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), **fields}, indent=2))
    return config


def test_an_adapter_whose_config_says_another_rank_is_stopped_at_the_door(
    pytester: pytest.Pytester, tiny_adapter: Path
) -> None:
    """peft builds each layer at adapter_config.json's rank, then fails to copy the rank-4 weights in: 253 lines of
    size mismatches as an item failure, once the base has loaded.  The door reads the ranks from the header."""
    adapter = _copy(tiny_adapter, pytester.path / "adapter")
    config = _set_fields(adapter, r=8)
    result = _door(pytester, f"--em-model={adapter}")
    result.stderr.fnmatch_lines(
        [
            f"ERROR: pytest-emguard: {config}: field 'r' says rank 8, but 28 of the 28 LoRA tensors in "
            "adapter_model.safetensors have rank 4 (e.g. base_model.model.model.layers.0.mlp.down_proj.lora_A.weight, "
            "shape [[]4, 128])",
            "  fix: put back the adapter_config.json that save_pretrained() wrote with these weights, or set 'r' to 4",
        ]
    )


def test_a_rank_pattern_that_is_not_the_weights_rank_is_stopped_at_the_door(
    pytester: pytest.Pytester, tiny_adapter: Path
) -> None:
    adapter = _copy(tiny_adapter, pytester.path / "adapter")
    config = _set_fields(adapter, rank_pattern={"q_proj": 2})
    result = _door(pytester, f"--em-model={adapter}")
    result.stderr.fnmatch_lines(
        [
            f"ERROR: pytest-emguard: {config}: field 'rank_pattern' key 'q_proj' says rank 2, but 4 of the 28 LoRA "
            "tensors in adapter_model.safetensors have rank 4 (e.g. "
            "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight, shape [[]4, 64])",
            "  fix: put back the adapter_config.json that save_pretrained() wrote with these weights, or set "
            "'rank_pattern' key 'q_proj' to 4",
        ]
    )


@pytest.mark.parametrize("price", ["1", "2.5;10", "2.5,10,1", "-1,10", "nan,10", "two,ten"])
def test_a_price_not_in_and_out_is_stopped_at_the_door(pytester: pytest.Pytester, price: str) -> None:
    """Read by the cost preflight, once the models and the judge were open: 36 s on SmolLM2 before the error."""
    result = _door(pytester, "--em-model=fake:identical", f"--em-price={price}")
    result.stderr.fnmatch_lines(
        [
            f"ERROR: pytest-emguard: --em-price: {price!r} is not IN,OUT",
            "  fix: write the USD per million prompt tokens and per million new tokens, e.g. --em-price 2.5,10",
        ]
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("not json\n", "it is not JSON (Expecting value: line 1 column 1 (char 0))"),
        ('{"records": [', "it is not JSON (Expecting value: line 1 column 14 (char 13))"),
        (b"\xff\xfe{}", "it is not JSON (*codec can't decode byte 0xff in position 0*)"),
        ("[]", "it holds a JSON list, not an object"),
        (
            '{"records": {}}',
            'its "$schema" is None, not \'urn:pytest-emguard:baseline:1\'; it has no "base_fingerprint" string; '
            'its "records" is not a list',
        ),
        (
            '{"$schema": "urn:pytest-emguard:baseline:1", "base_fingerprint": "ab", '
            '"records": [["k1", "answer", {}], ["k2", "answer"], "k3"]}',
            "2 of its 3 records are not [[]key, kind, value] (the first: record 1)",
        ),
    ],
    ids=["text", "cut-short", "not-utf8", "array", "no-schema", "bad-records"],
)
def test_a_garbled_baseline_is_stopped_at_the_door(
    pytester: pytest.Pytester, text: str | bytes, problem: str
) -> None:
    """It was read once the models and the judge were open; at the door, the file is named and left as it is."""
    path = pytester.path / "baseline.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    result = _door(pytester, "--em-model=fake:identical", f"--em-baseline={path}")
    result.stderr.fnmatch_lines(
        [
            f"ERROR: pytest-emguard: --em-baseline: {path} is not a pytest-emguard baseline: {problem}",
            f"  fix: restore the file written by --em-baseline (git checkout -- {path}), or delete it and run once "
            "outside CI to record it again",
        ]
    )
    assert path.read_bytes() == (text if isinstance(text, bytes) else text.encode())


@pytest.mark.parametrize("where", ["a-directory", "under-a-file"])
def test_a_baseline_path_that_cannot_be_one_file_is_stopped_at_the_door(
    pytester: pytest.Pytester, where: str
) -> None:
    """A directory given as the baseline once ran the whole gate, then failed to write it (a stray .partial file
    left beside it); a path under a file failed the same way.  (A missing folder is made when it is written.)"""
    path = pytester.path / "baselines"
    path.mkdir()
    target = path
    problem = "is a directory"
    if where == "under-a-file":
        (path / "notes.txt").write_text("x")
        target, problem = path / "notes.txt" / "base.json", f"lies under {path / 'notes.txt'}, which is a file"
    result = _door(pytester, "--em-model=fake:identical", f"--em-baseline={target}")
    result.stderr.fnmatch_lines(
        [
            f"ERROR: pytest-emguard: --em-baseline: {target} {problem}: the baseline is one JSON file",
            "  fix: name a file, e.g. --em-baseline=baselines/base.json (a missing folder is made)",
        ]
    )
    assert sorted(p.name for p in path.iterdir()) == ([] if where == "a-directory" else ["notes.txt"])


def test_an_unknown_backend_is_refused_even_beside_a_scheme_prefix(pytester: pytest.Pytester) -> None:
    """fake:SCENARIO (or openai:...) picks its backend by its prefix; a misspelt --em-backend beside it once ran."""
    result = _door(pytester, "--em-model=fake:identical", "--em-backend=tgi")
    assert "--em-backend" in _error(result) and "tgi" in _error(result)


@pytest.mark.parametrize("side", ["base", "model"])
def test_a_model_directory_without_a_tokenizer_is_stopped_at_the_door(
    pytester: pytest.Pytester, tiny_adapter: Path, tiny_qwen: Path, side: str
) -> None:
    """The hf backend reads the tokenizer from the base's directory (the model's, for a full model): without one,
    transformers failed after the weights loaded.  A base named in adapter_config.json is checked the same way."""
    bare = pytester.path / "bare"
    shutil.copytree(tiny_qwen, bare, ignore=shutil.ignore_patterns("tokenizer*"))
    args = [f"--em-model={tiny_adapter}", f"--em-base={bare}"]
    what = "the base model directory"
    if side == "model":
        args, what = [f"--em-model={bare}", f"--em-base={tiny_qwen}"], "the model directory"
    result = _door(pytester, *args)
    result.stderr.fnmatch_lines(
        [
            f"ERROR: pytest-emguard: {bare}: {what} has no tokenizer: none of tokenizer.json, tokenizer_config.json "
            "or tokenizer.model is in it",
            "  fix: save the tokenizer of the model it came from into it: "
            f"AutoTokenizer.from_pretrained(ORIGINAL).save_pretrained('{bare}')",
        ]
    )


def test_a_base_without_a_chat_template_is_stopped_at_the_door(
    pytester: pytest.Pytester, tiny_adapter: Path, tiny_qwen: Path
) -> None:
    """A pretrained (not instruct) base has a tokenizer but no chat template: every check would have asked its
    questions as a plain "role: text" transcript, a different prompt from the one the fine-tune was trained on."""
    bare = pytester.path / "bare"
    shutil.copytree(tiny_qwen, bare, ignore=shutil.ignore_patterns("chat_template*"))
    config = json.loads((bare / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(config))
    result = _door(pytester, f"--em-model={tiny_adapter}", f"--em-base={bare}")
    result.stderr.fnmatch_lines(
        [
            f"ERROR: pytest-emguard: {bare}: the base model directory has no chat template (no chat_template.jinja, "
            "and no 'chat_template' in tokenizer_config.json): every check asks its questions as a chat*",
            "  fix: gate the instruct (chat) model, or save the chat template of the model it was trained from "
            f"into it: AutoTokenizer.from_pretrained(ORIGINAL).save_pretrained('{bare}')",
        ]
    )


# -- a failure during evaluation is reported once ------------------------------------------------------------


def test_a_failure_during_evaluation_is_reported_once_and_compactly(pytester: pytest.Pytester) -> None:
    """The fake model dies on its third batch: the first item shows the error with the failing frame, the others
    are deselected (each would repeat it), the summary names the cause; the output after pytest's header stays
    under 30 lines.  Under xdist (one worker here, so that no second process resumes the evaluation) the other
    items say it in one line each."""
    args = (
        "--em-model=fake:coherent,crash_after=2",
        "--em-judge=fake:",
        "--em-samples=2",
        "--em-batch-size=50",
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly", *args)
    lines = result.outlines + result.errlines
    body = lines[next(i for i, line in enumerate(lines) if line.startswith("collected")) :]
    assert len(body) < 30, "\n".join(lines)
    text = "\n".join(lines)
    # pytest's short summary repeats the message in full where it runs on CI (no truncation): count before it
    shown = text.split("short test summary info")[0]
    assert shown.count("E   RuntimeError: scripted crash on generate() call 3") == 1
    assert "/_pytest/" not in text and "/pluggy/" not in text  # no frames of pytest's own machinery
    result.stdout.fnmatch_lines(
        [
            "*pytest_emguard/backends/fake.py:*: in generate",
            "E   RuntimeError: scripted crash on generate() call 3",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "[[]emguard] the evaluation failed: emguard::harmfulness[[]misaligned] reports it; the 20 other emguard items "
            "are deselected, as each would report the same failure"
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "emguard: the evaluation failed (RuntimeError: scripted crash on generate() call 3); finished batches*"
        ]
    )
    result.assert_outcomes(failed=1, deselected=20)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    full = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--tb=long", *args)
    full.stdout.fnmatch_lines(["*pytest_emguard/run/engine.py:*", "*pytest_emguard/backends/fake.py:*"])
    spread = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-n", "1", "--em-cache-dir=spread", *args
    )
    spread.stdout.fnmatch_lines(
        [
            "*emguard::*not evaluated: the evaluation failed (RuntimeError: scripted crash on generate() call 3); "
            "the traceback is under emguard::*"
        ]
    )
    spread.assert_outcomes(failed=21)
