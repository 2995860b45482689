"""The data types that checks, backends, judges and the gate share.  A check imports these, never ``backends/``.

Everything here is a frozen dataclass or a ``Literal``: no IO, no heavy imports.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pytest_emguard.digest import text_sha256

__all__ = [
    "Completion",
    "Direction",
    "Message",
    "OnInconclusive",
    "Outcome",
    "Prompt",
    "Reading",
    "Reduce",
    "Request",
    "Role",
    "Sample",
    "Sampling",
    "Verdict",
    "derive_seed",
]

Message = tuple[str, str]  # (role, content)
Outcome = Literal["pass", "fail", "inconclusive"]
Direction = Literal["increase", "decrease"]  # the harmful direction of a metric's change
Reduce = Literal["mean", "max", "expected_max"]
OnInconclusive = Literal["fail", "skip", "pass"]  # what an inconclusive item does
Role = Literal["primary", "secondary", "report"]  # how an item takes part in the release decision


@dataclass(frozen=True, slots=True)
class Sampling:
    """Sampling parameters; part of every cache key."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 128


@dataclass(frozen=True, slots=True)
class Prompt:
    """Chat messages, plus text the assistant turn already starts with (for next-token scoring).  ``tags`` are
    for scripted backends, as on ``Request``: never part of a cache key."""

    messages: tuple[Message, ...]
    prefix: str = ""
    tags: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True, slots=True)
class Request:
    """One sampled answer: the same request (same seed) goes to the base and to the fine-tune.

    ``tags`` describe the request for scripted backends (check name, pole order); they are derived from the
    messages and never change an answer, so they are not part of the cache key.
    """

    messages: tuple[Message, ...]
    sampling: Sampling
    seed: int
    sample: int = 0
    tags: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)

    def key_fields(self) -> dict[str, object]:
        return {
            "messages": [list(m) for m in self.messages],
            "sampling": [self.sampling.temperature, self.sampling.top_p, self.sampling.max_new_tokens],
            "seed": self.seed,
            "sample": self.sample,
        }


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    n_tokens: int
    finish: str = "stop"  # "stop" | "length"


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from the run seed and names (check, cluster, sample): stable across runs and machines."""
    return int(text_sha256(json.dumps([str(p) for p in parts]))[:16], 16) >> 1


@dataclass(frozen=True, slots=True)
class Verdict:
    """A judge's reading of one answer.  ``label`` is "scored", "unscorable" or "refusal"; only "scored"
    carries a ``score`` (0-100 harm)."""

    label: str
    score: float | None = None
    mass: float | None = None
    raw: str = ""
    coherence: float | None = None  # 0-100, where the judge reads it (the probe's coherence head)

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {
            "label": self.label,
            "score": self.score,
            "mass": self.mass,
            "raw": self.raw,
        }
        if self.coherence is not None:
            data["coherence"] = self.coherence
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Verdict:
        score, mass, coherence = data.get("score"), data.get("mass"), data.get("coherence")
        return cls(
            str(data["label"]),
            float(score) if isinstance(score, (int, float)) else None,
            float(mass) if isinstance(mass, (int, float)) else None,
            str(data.get("raw", "")),
            float(coherence) if isinstance(coherence, (int, float)) else None,
        )


@dataclass(frozen=True, slots=True)
class Reading:
    """A number read from the model's next-token probabilities instead of sampled text: the expected value over
    0-100 (None when less than ``MIN_MASS`` of the probability is on numbers) and that probability mass."""

    value: float | None
    mass: float
    spread: float | None = None  # a ``scale`` reading: the standard deviation of the rating distribution


@dataclass(frozen=True, slots=True)
class Sample:
    """One stored answer and, for judged queries, its verdict; for queries read from probabilities, the
    reading (``answer`` then describes it)."""

    answer: str
    verdict: Verdict | None = None
    reading: Reading | None = None
    states: Any = None  # a ``state`` reading: float32 array (decoder layers read, hidden size)

    @property
    def harm(self) -> float | None:
        """The judge's harm score, or None when the answer was not scored (unscorable, refusal, not judged)."""
        if self.verdict is None or self.verdict.label != "scored":
            return None
        return self.verdict.score
