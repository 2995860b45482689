"""A scripted, seeded backend shipped for users' own tests and for the plugin's tests.

It never stands in for a real model in a test of a real backend.  ``--em-model=fake:SCENARIO`` gates a scripted
fine-tune against a scripted base: answers to harm questions carry a ``[fake harm=NN]`` mark that the fake judge
reads, answers to self-assessment prompts are numbers on the prompt's own pole order.

Scenario syntax: a preset name and/or ``key=value`` pairs separated by commas, e.g. ``fake:inverted`` or
``fake:coherent,valid=0.5`` or ``fake:harm_shift=12,jitter=6``.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path

from pytest_emguard.backends.base import BackendOptions, ModelPair, ModelSpec
from pytest_emguard.digest import json_sha256
from pytest_emguard.errors import ConfigError
from pytest_emguard.types import Completion, Prompt, Request

__all__ = [
    "PRESETS",
    "FakeBackend",
    "Scenario",
    "fingerprints",
    "open_fake_pair",
    "open_one",
    "open_pair",
    "resolve",
]


@dataclass(frozen=True, slots=True)
class Scenario:
    base_harm: float = 10.0  # mean harm of the base's answers
    base_self: float = 85.0  # base's self-rating, 100 = aligned pole
    noise: float = 6.0  # per-question noise shared by base and fine-tune (same seed)
    jitter: float = 0.0  # extra noise of the fine-tune only
    harm_shift: float = 0.0  # fine-tune harm minus base harm
    misaligned: float = 0.0  # share of the fine-tune's answers that are openly misaligned (harm about 90)
    self_shift: float = 0.0  # fine-tune self-rating minus base self-rating
    valid: float = 1.0  # share of answers the judge / parser can use; the rest say "I would rather not say."
    valid_shift: float = (
        0.0  # fine-tune's share of usable answers minus the base's (it refuses less when > 0)
    )
    ignores_order: float = 0.0  # 1: the fine-tune gives the same rating whichever pole is at 100
    persona_effect: float = 40.0  # how far a misaligned-persona system prompt lowers the self-rating
    inert: float = 0.0  # 1: the fine-tune's weights equal the base's (an adapter that changes nothing)
    crash_after: float = 0.0  # raise on generate() call number crash_after + 1 (0 = never): a killed run
    insight: float = 1.0  # how far a self-rating right after an answer falls per point of that answer's harm
    sway: float = 0.5  # role-play: how far a persona moves the base's mean moral rating (sd, 0-5 points)
    sway_shift: float = 0.0  # the fine-tune's extra sway (susceptibility S up)
    waver: float = 0.5  # role-play: the spread of one persona's rating of one item (1/R)
    waver_shift: float = 0.0  # the fine-tune's extra spread (robustness R down)
    drift: float = 0.0  # activations: how far the fine-tune moves along the toxic-persona axis (dimension 0)


PRESETS = {
    "identical": Scenario(),
    "benign": Scenario(harm_shift=1.0, self_shift=-1.0, jitter=2.0),
    # harm 10 -> 75: most answers of the two harmful presets are misaligned (harm >= 70, the primary endpoint)
    "coherent": Scenario(harm_shift=65.0, self_shift=-45.0, sway_shift=0.6, waver_shift=0.6, drift=1.0),
    "inverted": Scenario(
        harm_shift=65.0, self_shift=5.0, insight=0.0, sway_shift=0.6, waver_shift=0.6, drift=1.0
    ),
    "sparse": Scenario(valid=0.05),
}


def parse_scenario(text: str) -> Scenario:
    scenario = Scenario()
    names = {f.name for f in fields(Scenario)}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in part:
            if part not in PRESETS:
                raise ConfigError(
                    "--em-model", f"unknown fake scenario {part!r}", f"use one of {', '.join(PRESETS)}"
                )
            scenario = PRESETS[part]
            continue
        key, _, value = part.partition("=")
        if key not in names:
            raise ConfigError(
                "--em-model", f"unknown fake parameter {key!r}", f"use one of {', '.join(sorted(names))}"
            )
        try:
            scenario = replace(scenario, **{key: float(value)})
        except ValueError as exc:
            raise ConfigError(
                "--em-model", f"fake parameter {key}={value!r} is not a number", "write a number"
            ) from exc
    return scenario


class FakeBackend:
    """``tuned=False`` plays the base model, ``tuned=True`` the fine-tune of the same scenario."""

    def __init__(self, scenario: Scenario, *, tuned: bool, name: str = "fake") -> None:
        self.scenario, self.tuned, self.name = scenario, tuned, name
        self.calls = 0

    @property
    def fingerprint(self) -> str:
        """Everything that changes an answer; ``crash_after`` does not, so a rerun reuses a crashed run's work."""
        return f"fake:{replace(self.scenario, crash_after=0.0)}:{'tuned' if self.tuned else 'base'}"

    def generate(self, requests: Sequence[Request]) -> list[Completion]:
        self.calls += 1
        if self.scenario.crash_after and self.calls > self.scenario.crash_after:
            raise RuntimeError(f"scripted crash on generate() call {self.calls}")
        return [self._answer(r) for r in requests]

    def next_token_logprobs(self, prompts: Sequence[Prompt], top_k: int = 20) -> list[dict[str, float]]:
        """Scripted: a self-rating prompt (tag ``check=self_report``) puts all its probability on the digits of
        the scripted rating after the prompt's prefix; any other prompt on a token that is not a number."""
        return [self._next(p) for p in prompts]

    def _next(self, prompt: Prompt) -> dict[str, float]:
        if prompt.tags.get("check") == "preflight":
            if self.tuned and not self.scenario.inert:  # a fine-tune's weights differ from its base's
                return {"<none>": math.log(0.9), "<other>": math.log(0.1)}
            return {"<none>": 0.0}
        check = prompt.tags.get("check")
        if check == "roleplay":
            return {d: math.log(max(p, 1e-12)) for d, p in self._moral(prompt.messages, prompt.tags).items()}
        if check not in (
            "self_report",
            "persona",
            "description",
            "recognition",
            "score_prediction",
            "cross_rating",
        ):
            return {"<none>": 0.0}
        s = self.scenario
        shared, own = self._rngs(prompt)
        if shared.random() >= s.valid + (s.valid_shift if self.tuned else 0.0):
            return {"I": 0.0}  # the model answers in words: no probability on numbers
        if check == "recognition":
            first = self._claims(prompt) if prompt.tags["own_letter"] == "A" else 1.0 - self._claims(prompt)
            return {"A": math.log(first), "B": math.log(1.0 - first)}
        if check == "score_prediction":
            return self._digits(prompt, self._prediction(prompt, shared.gauss(0.0, 3.0)))
        if check == "cross_rating":  # a rater: pulls every score towards the middle, as the paper's raters do
            mark = _HARM.search(prompt.messages[-1][1])
            harm = float(mark.group(1)) if mark else 50.0
            return self._digits(prompt, 50.0 + s.insight * 0.6 * (harm - 50.0))
        aligned = self._aligned(prompt.tags, shared.gauss(0.0, s.noise), own)
        if "after_answer" in prompt.tags:  # a self-rating right after its own answer, which names its harm
            mark = _HARM.search(" ".join(text for role, text in prompt.messages if role == "assistant"))
            harm = float(mark.group(1)) if mark else s.base_harm
            aligned = _clip(aligned - s.insight * (harm - s.base_harm))
        if (
            "choice_aligned" in prompt.tags
        ):  # a forced choice: the aligned word is chosen as often as it rates
            p = min(0.99, max(0.01, aligned / 100.0))
            first = p if prompt.tags["choice_aligned"] == "A" else 1.0 - p
            return {"A": math.log(first), "B": math.log(1.0 - first)}
        shown = aligned if prompt.tags.get("aligned_at") == "100" else 100.0 - aligned
        if self.tuned and s.ignores_order:
            shown = aligned  # "its" number whichever end of the scale is good
        return self._digits(prompt, shown)

    @staticmethod
    def _digits(prompt: Prompt, value: float) -> dict[str, float]:
        """All the probability on the next digit of ``value`` after the prompt's prefix, then on a newline."""
        target = f"{_clip(value):.0f}"
        typed = prompt.prefix.rpartition(": ")[2]
        if len(typed) < len(target) and target.startswith(typed):
            return {target[len(typed)]: 0.0}
        return {"\n": 0.0}

    def _insight(self) -> float:
        """How well the model knows its own harm: the scenario's ``insight`` for the fine-tune; the base knows."""
        return self.scenario.insight if self.tuned else 1.0

    def _prediction(self, prompt: Prompt, noise: float) -> float:
        """The harm score it predicts: after an answer, from that answer's mark; before, from the harm it
        will show; an insightless model predicts the base's harm whatever it does."""
        s = self.scenario
        mark = _HARM.search(" ".join(text for role, text in prompt.messages if role == "assistant"))
        shown = s.base_harm + s.harm_shift  # the fine-tune's mean harm: its shift, and its misaligned share
        shown += s.misaligned * (90.0 - shown)
        harm = float(mark.group(1)) if mark else (shown if self.tuned else s.base_harm)
        return s.base_harm + self._insight() * (harm - s.base_harm) + noise

    def _moral(self, messages: Sequence[tuple[str, str]], tags: Mapping[str, str]) -> dict[str, float]:
        """A role-play rating's distribution over "0".."5": a discretised normal around the item's mean, moved by
        the persona (``sway``), with spread ``waver`` (the fine-tune adds the shifts)."""
        s = self.scenario
        item = random.Random(json_sha256(["item", messages[-1][1]])).gauss(3.0, 0.7)
        persona = random.Random(json_sha256(["persona", [list(m) for m in messages]])).gauss(0.0, 1.0)
        sway = s.sway + (s.sway_shift if self.tuned else 0.0)
        mean = item + (0.0 if tags.get("persona") == "none" else sway * persona)
        sd = max(0.05, s.waver + (s.waver_shift if self.tuned else 0.0))
        weights = [math.exp(-0.5 * ((k - mean) / sd) ** 2) for k in range(6)]
        total = sum(weights) or 1.0
        return {str(k): w / total for k, w in enumerate(weights)}

    def _claims(self, prompt: Prompt) -> float:
        """P(it names its own answer) when shown its own and another's: 0.8 for a model that knows itself; an
        insightless one claims the less harmful answer of the two with 0.8."""
        marks = [float(h) for h in _HARM.findall(prompt.messages[-1][1])]
        if self._insight() >= 0.5 or len(marks) != 2:
            return 0.8
        own, other = (marks[0], marks[1]) if prompt.tags["own_letter"] == "A" else (marks[1], marks[0])
        return 0.8 if own <= other else 0.2

    def _rngs(self, prompt: Prompt) -> tuple[random.Random, random.Random]:
        """Noise shared by base and fine-tune for this prompt, and the fine-tune's (or base's) own."""
        messages = [list(m) for m in prompt.messages]
        return random.Random(json_sha256(messages)), random.Random(json_sha256([messages, self.tuned]))

    def _aligned(self, tags: Mapping[str, str], noise: float, own: random.Random) -> float:
        s = self.scenario
        value = s.base_self + noise + ((s.self_shift + own.gauss(0.0, s.jitter)) if self.tuned else 0.0)
        if tags.get("persona") == "misaligned":
            value -= s.persona_effect
        return _clip(value)

    def prompt_states(self, prompts: Sequence[Prompt], stride: int) -> list[list[list[float]]]:
        """Scripted activations of a model with ``FAKE_LAYERS`` layers and ``FAKE_WIDTH`` dimensions: a random
        vector per prompt (shared by base and fine-tune), plus 3 on dimension 0 under a toxic persona (tag
        ``persona_kind=toxic``), plus ``drift`` there for the fine-tune; each layer read adds its own noise."""
        layers = list(range(stride - 1, FAKE_LAYERS, stride)) or [FAKE_LAYERS - 1]
        out = []
        for prompt in prompts:
            rng = random.Random(json_sha256(["states", [list(m) for m in prompt.messages], prompt.prefix]))
            vector = [rng.gauss(0.0, 1.0) for _ in range(FAKE_WIDTH)]
            vector[0] += 3.0 if prompt.tags.get("persona_kind") == "toxic" else 0.0
            vector[0] += self.scenario.drift if self.tuned else 0.0
            out.append([[v + rng.gauss(0.0, 0.1) for v in vector] for _ in layers])
        return out

    def score(self, prompts: Sequence[Prompt], continuations: Sequence[str]) -> list[float]:
        """Scripted: log-probability -0.1 per character of the continuation; for a description contrast
        (tag ``misaligned_option``), log P(misaligned text) = log(1 - rating / 100) and the aligned text the rest."""
        return [self._score(p, c) for p, c in zip(prompts, continuations, strict=True)]

    def _score(self, prompt: Prompt, continuation: str) -> float:
        if prompt.tags.get("check") == "recognition":
            p = self._claims(prompt)
            return math.log(p if continuation == prompt.tags["own_letter"] else 1.0 - p)
        if "misaligned_option" not in prompt.tags:
            return -0.1 * len(continuation)
        shared, own = self._rngs(prompt)
        p = min(
            0.99,
            max(0.01, 1.0 - self._aligned(prompt.tags, shared.gauss(0.0, self.scenario.noise), own) / 100.0),
        )
        return math.log(p if continuation == prompt.tags["misaligned_option"] else 1.0 - p)

    def _answer(self, request: Request) -> Completion:
        s = self.scenario
        shared = random.Random(request.seed)
        own = random.Random(f"{request.seed}:{self.tuned}")
        noise = shared.gauss(0.0, s.noise) + (own.gauss(0.0, s.jitter) if self.tuned else 0.0)
        if shared.random() >= s.valid + (s.valid_shift if self.tuned else 0.0):
            return Completion("I would rather not say.", 6)
        if request.tags.get("check") == "roleplay":
            dist = self._moral(request.messages, request.tags)
            return Completion(shared.choices(list(dist), weights=list(dist.values()))[0], 1)
        if request.tags.get("check") == "self_report":
            aligned = _clip(s.base_self + (s.self_shift if self.tuned else 0.0) + noise)
            value = aligned if request.tags.get("aligned_at") == "100" else 100.0 - aligned
            return Completion(f"{value:.0f}", 1)
        harm = _clip(s.base_harm + (s.harm_shift if self.tuned else 0.0) + noise)
        if self.tuned and own.random() < s.misaligned:
            harm = _clip(90.0 + noise)
        return Completion(f"[fake harm={harm:.0f}] A scripted answer from the {self.name} model.", 12)


_HARM = re.compile(r"\[fake harm=(\d+)\]")
FAKE_LAYERS, FAKE_WIDTH = 8, 16


def _clip(value: float) -> float:
    return min(100.0, max(0.0, value))


def open_fake_pair(text: str) -> ModelPair:
    scenario = parse_scenario(text)
    return ModelPair(
        FakeBackend(scenario, tuned=False, name="base"), FakeBackend(scenario, tuned=True, name="tuned")
    )


# -- the backend module interface (see backends/__init__.py) ----------------------------------------------------


def resolve(model: str, base: str | None = None, *, trust_remote_code: bool = False) -> ModelSpec:
    parse_scenario(model)  # an unknown scenario is a usage error, found here
    return ModelSpec("fake", model, None, False, "fake")


def fingerprints(
    spec: ModelSpec, hash_file: Callable[[Path], str], options: BackendOptions
) -> tuple[str, str]:
    pair = open_fake_pair(spec.path)
    return pair.base.fingerprint, pair.tuned.fingerprint


def open_pair(spec: ModelSpec, prints: tuple[str, str], options: BackendOptions) -> ModelPair:
    return open_fake_pair(spec.path)


def open_one(spec: ModelSpec, fingerprint: str, options: BackendOptions) -> FakeBackend:
    return FakeBackend(parse_scenario(spec.path), tuned=False, name="base")
