"""What a check asks: ``Probe`` records (one prompt, its cluster id, its sampling), turned into seeded requests."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from pytest_emguard.backends.base import Message, Request, Sampling

__all__ = ["Probe", "derive_seed", "load_bank"]


@dataclass(frozen=True, slots=True)
class Probe:
    """One prompt of a check.  ``cluster`` is the unit the bootstrap resamples (a question)."""

    check: str
    version: int
    cluster: str
    messages: tuple[Message, ...]
    sampling: Sampling
    judged: bool
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def question(self) -> str:
        return self.messages[-1][1]

    def requests(self, samples: int, seed: int) -> list[Request]:
        """``samples`` requests with seeds derived from the run seed, the check and the cluster: the base and
        the fine-tune get identical requests."""
        tags = {"check": self.check, **self.tags}
        return [
            Request(self.messages, self.sampling, derive_seed(seed, self.check, self.cluster, k), k, tags)
            for k in range(samples)
        ]


def derive_seed(*parts: object) -> int:
    digest = hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def load_bank(name: str) -> Any:
    import yaml

    return yaml.safe_load(
        resources.files("pytest_emguard.checks").joinpath(f"data/{name}").read_text("utf-8")
    )
