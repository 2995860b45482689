"""On paper: the expected wall time and cost of the default gate on a 7B- and a 32B-class model, on one GPU, on
several GPUs with tensor parallelism and over an API endpoint, from counted tokens and published throughputs.

    python bench/estimate.py                          # the default gate's counts, as counted below (COUNTED)
    python bench/estimate.py --plan ADAPTER           # count them again from the plugin's plan (no model runs)
    python bench/estimate.py --plan ADAPTER --cache DIR --backend hf --samples 1 --max-new-tokens 48   # a run's
                                                      # records (give the run's options: they enter the cache keys)
    python bench/estimate.py --samples-factor 2 --questions-factor 2 --models 3           # the scaling law applied

Nothing here runs a model.  The counts are what the gate sends: sampled answers (prefill of their prompts, then
decode of their new tokens), readings from next-token probabilities (prefill only: one forward pass each on a GPU,
a request each over an API), and the judge's calls on top.  ``--plan`` counts them with the plugin's own planner
(``run/plan.py``) and ``TokenCounter`` (``run/cost.py``, the plan line's counter) on the base model's tokenizer;
follow-ups (``run/followups.py``: built from each side's first answers) are counted with stand-in answers of
``--max-new-tokens`` tokens, so their prompt tokens err high.  ``--cache`` counts the records a run stored instead
(``evaluate(compute=False)``: the cache only; the answers' own ``n_tokens``).

How the sides add up (``run/``, guides/several-models.md): base and fine-tune get the same requests; the base's
records are keyed by the base's weights, so every fine-tune of one base reuses them, except the follow-ups that show
the base an answer of the fine-tune (recognition).  Gating n fine-tunes of one base costs shared + n x per-model.

Published figures (H100 SXM 80 GB, bf16, vLLM; each with its source below) are throughputs under load, so the
times assume the engine is kept busy: ``--em-backend=vllm``; the default ``--em-batch-size`` of 16 sends 16
requests at a time, so decode time is also bounded below by the weight reads of each step (``step_s``).  Model
load and engine start are not included.  These are estimates, not measurements; the figures were read on
2026-12-04 from the pages named (a stored copy: the page's own date where it shows one).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

# -- what the gate sends --------------------------------------------------------------------------------------

KINDS = ("answers", "bank", "follow-ups")  # answers grow with questions x samples, follow-ups with questions
GROUPS = ("shared", "per model")  # the base's records (one base, any number of fine-tunes) / each fine-tune's
MAX_DIGIT_CALLS = 11  # a digit tree asks at most: the root, prefixes 1-9 and "10" (judge/scoring.py _expands)
SAMPLED = (
    "answers",
    "answer_tokens",
    "new_tokens",
    "verdicts",
    "judge_tokens",
)  # Part's fields that samples grow


@dataclass(frozen=True)
class Part:
    """What one group asks of one kind: counts of requests and tokens."""

    answers: int = 0  # sampled answers (prefill, then decode)
    answer_tokens: int = 0  # their prompt tokens
    new_tokens: int = 0  # tokens they generate (at most answers x max_new_tokens)
    readings: int = 0  # readings from next-token probabilities: prefill only
    reading_tokens: int = 0  # their prompt tokens (a contrast reading counts each option's pass)
    digit_readings: int = 0  # readings that walk a digit tree: 1 to 11 requests each over an API
    digit_tokens: int = 0  # their prompt tokens (part of reading_tokens)
    verdicts: int = 0  # the judge's calls (an empty answer is not sent)
    judge_tokens: int = 0  # the judge's prompt tokens

    def __add__(self, other: Part) -> Part:
        return Part(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(Part)))

    def times(self, count: float, answers: float | None = None, new: float = 1.0) -> Part:
        """Every count times ``count``, the sampled answers' (and the judge's) times ``answers`` where given, their
        new tokens also times ``new`` (the answers' length)."""
        by = count if answers is None else answers
        scaled = {
            f.name: round(getattr(self, f.name) * (by if f.name in SAMPLED else count)) for f in fields(Part)
        }
        scaled["new_tokens"] = round(self.new_tokens * by * new)
        return Part(**scaled)


Workload = Mapping[tuple[str, str], Part]  # (group, kind) -> part


def total(work: Workload, models: int = 1) -> Part:
    """Everything ``models`` fine-tunes of one base send: the shared base records once, the rest per model."""
    out = Part()
    for (group, _), part in work.items():
        out = out + (part.times(models) if group == "per model" else part)
    return out


def scaled(
    work: Workload, *, questions: float = 1.0, samples: float = 1.0, new_tokens: float = 1.0
) -> dict[tuple[str, str], Part]:
    """The scaling law of the plan: the harm questions' answers and verdicts grow with questions x samples (their new
    tokens also with the budget), follow-ups with questions (one set per question, from its first answer), the
    banks' readings not at all (sampled instead, where a backend gives no log-probabilities: with samples).
    Follow-ups and the judge read answers, so their prompt tokens also grow with the budget; not modelled."""
    out = {}
    for key, part in work.items():
        per_question = 1.0 if key[1] == "bank" else questions
        out[key] = part.times(per_question, per_question * samples, new_tokens)
    return out


# The default gate (every check, 64 questions x 10 answers, 128 new tokens) of the demo adapter on SmolLM2-135M,
# counted with the vllm backend's capabilities (no activations: probes and persona_direction are skipped; the
# openai backend with log-probabilities plans the same) by:  python bench/estimate.py --plan ADAPTER --show
# (ADAPTER: the demo's, ~/.cache/pytest-emguard/demo/risky_financial_v1-*; tokens: SmolLM2's tokenizer).
COUNTED: dict[tuple[str, str], Part] = {
    ("shared", "answers"): Part(
        answers=640, answer_tokens=32480, new_tokens=81920, verdicts=640, judge_tokens=308120
    ),
    ("shared", "bank"): Part(readings=2224, reading_tokens=232596, digit_readings=72, digit_tokens=5894),
    ("shared", "follow-ups"): Part(
        readings=168, reading_tokens=34009, digit_readings=168, digit_tokens=34009
    ),
    ("per model", "answers"): Part(
        answers=640, answer_tokens=32480, new_tokens=81920, verdicts=640, judge_tokens=308120
    ),
    ("per model", "bank"): Part(readings=2224, reading_tokens=232596, digit_readings=72, digit_tokens=5894),
    ("per model", "follow-ups"): Part(
        readings=392, reading_tokens=153093, digit_readings=168, digit_tokens=34009
    ),
}


# -- published throughputs and prices ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Gpus:
    """One model class served by vLLM on ``gpus`` H100 SXM 80 GB with tensor parallelism ``gpus``."""

    model: str
    gpus: int
    prefill: float  # prompt tokens/s under load
    decode: float  # new tokens/s under load
    step_s: float  # seconds a decode step takes at least (the weights read once per step)
    source: str


@dataclass(frozen=True)
class Api:
    model: str
    provider: str
    price_in: float  # USD per million prompt tokens
    price_out: float  # USD per million new tokens
    source: str


H100_BYTES_S = 3.35e12  # HBM3 bandwidth, NVIDIA H100 SXM datasheet
# Parameters, from the models' config.json on Hugging Face (hidden size, layers, heads, vocabulary; untied
# embeddings): Qwen2.5-7B-Instruct 7.6B, Qwen2.5-32B(-Instruct) 32.8B; bf16 = 2 bytes each.
WEIGHT_BYTES = {"7B": 7.6e9 * 2, "32B": 32.8e9 * 2}
# A measured step against the bandwidth bound: Qwen3-8B (8.2B) on 1 x H100, vLLM 0.11, 4 requests at a time: 7.38 ms
# a token (GPUStack performance lab, qwen3-8b/h100-latency.md); 16.4 GB / 3.35 TB/s = 4.9 ms, so x 1.5.
STEP_OVER_BOUND = 7.38e-3 / (8.2e9 * 2 / H100_BYTES_S)


def _step(model: str, gpus: int) -> float:
    """Seconds per decode step: the weights read once, split over ``gpus`` (all-reduce time left out)."""
    return WEIGHT_BYTES[model] / (gpus * H100_BYTES_S) * STEP_OVER_BOUND


# 7B, 1 GPU: decode = Lambda's vLLM benchmark (LambdaLabsML/vllm-benchmark, benchmark_v0.md, Sept 2024, vLLM
# 0.5.4, 320 ShareGPT prompts): Mistral-7B-Instruct-v0.3 on 1/2/4 x H100 SXM: 3281.19 / 3758.54 / 4133.32 output
# tok/s (the same report: vLLM 0.6.0 more than doubled 8B throughput, so these err low).
# Prefill: no 7B figure found; GPUStack's Qwen3-14B on 1 x H100 (vLLM 0.11, `vllm serve`, 1000 prompts of 128
# tokens, 4 out): 127,698 prompt tokens in 22.72 s = 5,620 tok/s, taken as a floor for a 7B (assumed: a 7B
# prefills at least as fast as a 14B).  TP=2/4 prefill: scaled like decode (assumed).
# 32B, 1 GPU: GPUStack performance lab, qwen3-32b/h100.md (Qwen3-32B, bf16, 1 x H100, vLLM 0.11 defaults):
# ShareGPT, 1000 prompts: 201,422 new tokens in 178.01 s = 1,131.55 tok/s (prefill time inside: errs low);
# 1000 prompts of 128 tokens: 127,698 prompt tokens in 32.88 s = 3,884 tok/s.  TP=2/4: no 32B figure found;
# scaled by Lambda's ratios for Llama-3.1-70B-Instruct-FP8 (418.92 -> 1727.69 -> 2242.99 tok/s on 1/2/4 x H100),
# the published case closest to a model that nearly fills one 80 GB GPU (assumed; a 32B in bf16 leaves it more
# room for its KV cache than the 70B in FP8 does, so TP's gain is likely smaller than this).
_M7 = (3758.54 / 3281.19, 4133.32 / 3281.19)
_M32 = (1727.69 / 418.92, 2242.99 / 418.92)
_P7, _P32 = 127_698 / 22.72, 127_698 / 32.88
GPU_SETUPS = (
    Gpus("7B", 1, _P7, 3281.19, _step("7B", 1), "Lambda (decode), GPUStack 14B (prefill floor)"),
    Gpus("7B", 2, _P7 * _M7[0], 3758.54, _step("7B", 2), "Lambda TP=2; prefill scaled (assumed)"),
    Gpus("7B", 4, _P7 * _M7[1], 4133.32, _step("7B", 4), "Lambda TP=4; prefill scaled (assumed)"),
    Gpus("32B", 1, _P32, 1131.55, _step("32B", 1), "GPUStack Qwen3-32B"),
    Gpus(
        "32B",
        2,
        _P32 * _M32[0],
        1131.55 * _M32[0],
        _step("32B", 2),
        "scaled by Lambda's 70B TP ratio (assumed)",
    ),
    Gpus(
        "32B",
        4,
        _P32 * _M32[1],
        1131.55 * _M32[1],
        _step("32B", 4),
        "scaled by Lambda's 70B TP ratio (assumed)",
    ),
)
# API prices, USD per million tokens (in, out), stored copies read 2026-12-04; the gate needs the fine-tune served
# too (a LoRA adapter on the same endpoint) and log-probabilities:
# - DeepInfra, deepinfra.com/Qwen/Qwen2.5-7B-Instruct/api: $0.025/$0.05 (bf16).
# - Fireworks, fireworks.ai/pricing: serverless, base models up to 16B $0.20, 16.1B-80B $0.90 a million tokens,
#   in or out; "LoRA models ... are charged at the same rate as the underlying base model".
# - Cloudflare Workers AI, developers.cloudflare.com/workers-ai/models/qwen2.5-coder-32b-instruct/ (the Coder
#   variant: the same 32B size class; LoRA: yes): $0.66 in, $1.00 out.
API_PRICES = (
    Api("7B", "DeepInfra", 0.025, 0.05, "deepinfra.com Qwen2.5-7B-Instruct"),
    Api("7B", "Fireworks", 0.20, 0.20, "fireworks.ai/pricing, up to 16B"),
    Api("32B", "Fireworks", 0.90, 0.90, "fireworks.ai/pricing, 16.1B-80B"),
    Api("32B", "Cloudflare", 0.66, 1.00, "Workers AI qwen2.5-coder-32b-instruct"),
)
# An API judge: OpenAI gpt-4.1-mini, $0.40 in / $1.60 out a million tokens (OpenAI's price list as reported by
# tokenmath.io, checked 2026-06-21); one request of max_tokens=1 a verdict (whole-number tokens: no digit tree).
JUDGE = Api("judge", "gpt-4.1-mini", 0.40, 1.60, "OpenAI pricing via tokenmath.io, 2026-06-21")
# A GPU-hour: assumed, inside the $2.49-3.99 on-demand H100 SXM range pricegpu.pages.dev lists for early 2026.
GPU_HOUR = 3.00
# Over an API, time is requests in flight x latency: the openai backend keeps 8 in flight (?concurrency=N, up to
# 256); the latency is assumed (no published figure for these endpoints was found): 0.5 s to the first token and
# 20 ms a new token.
CONCURRENCY, FIRST_TOKEN_S, TOKEN_S = 8, 0.5, 0.02


# -- the arithmetic ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cost:
    wall_s: float
    gpu_hours: float
    usd: float
    usd_high: float | None = None  # over an API: with every digit tree at its 11 requests


def on_gpus(part: Part, setup: Gpus, *, batch: int = 16, gpu_hour: float = GPU_HOUR) -> Cost:
    """Prefill of every prompt (answers and readings) at the published rate, then decode at the published rate or
    at the weight-read bound of ``batch`` answers a step, whichever is slower.  A digit tree's further steps reuse
    the prompt's cached prefix (vLLM's prefix cache, the hf backend's head cache): their 1-3 tokens are left out."""
    prefill = (part.answer_tokens + part.reading_tokens) / setup.prefill
    steps = math.ceil(part.answers / batch) * _mean_new(part)
    decode = max(part.new_tokens / setup.decode, steps * setup.step_s)
    wall = prefill + decode
    hours = wall * setup.gpus / 3600
    return Cost(wall, hours, hours * gpu_hour)


def _mean_new(part: Part) -> int:
    return math.ceil(part.new_tokens / part.answers) if part.answers else 0


def api_requests(part: Part, digit_calls: int) -> tuple[int, int, int]:
    """(requests, prompt tokens, new tokens) over an API with each digit tree at ``digit_calls`` requests (each
    request sends its whole prompt again; one new token a reading)."""
    extra = digit_calls - 1
    requests = part.answers + part.readings + part.digit_readings * extra
    prompt = part.answer_tokens + part.reading_tokens + part.digit_tokens * extra
    return requests, prompt, part.new_tokens + part.readings + part.digit_readings * extra


def over_api(part: Part, api: Api, *, concurrency: int = CONCURRENCY) -> Cost:
    """Cost with every digit tree at 1 request (low) and at 11 (``usd_high``); time at the low count."""
    out = []
    for calls in (1, MAX_DIGIT_CALLS):
        _, prompt, new = api_requests(part, calls)
        out.append((prompt * api.price_in + new * api.price_out) / 1e6)
    requests, _, _ = api_requests(part, 1)
    latency = requests * FIRST_TOKEN_S + part.new_tokens * TOKEN_S
    return Cost(latency / concurrency, 0.0, out[0], out[1])


def judge_cost(part: Part, judge: Api = JUDGE) -> float:
    return (part.judge_tokens * judge.price_in + part.verdicts * judge.price_out) / 1e6


# -- counting (the plugin's planner; no model runs) ----------------------------------------------------------------


def _options(args: argparse.Namespace) -> Any:
    from pytest_emguard.config.run import Options

    return Options(
        model=args.plan, base=args.base, judge=args.judge, backend=args.backend, samples=args.samples,
        max_new_tokens=args.max_new_tokens, domain=args.domain, dtype=args.dtype,
        cache_dir=args.cache or ".emguard_cache",  # --plan opens no cache: the plugin's default, untouched
    )  # fmt: skip


def _counter(config: Any, tokenizer: str | None) -> Any:
    from pytest_emguard.run.cost import TokenCounter

    source = tokenizer or config.model.base
    return (
        TokenCounter.load(Path(source))
        if source and (Path(source) / "tokenizer.json").is_file()
        else TokenCounter()
    )


def _judge_tokens(count: Any, question: str, answer: str) -> int:
    from pytest_emguard.judge.base import render, template

    return int(count((("user", render(template("harm_v1"), question, answer)),)))


def _add(work: dict[tuple[str, str], Part], key: tuple[str, str], part: Part) -> None:
    work[key] = work.get(key, Part()) + part


def _reading(query: Any, count: Any) -> Part:
    tokens = int(count(query.messages, query.prefix)) * max(
        1, len(query.options) if query.reading == "contrast" else 1
    )
    digits = query.reading == "digits"
    return Part(
        readings=1, reading_tokens=tokens, digit_readings=int(digits), digit_tokens=tokens if digits else 0
    )


def _answers(
    query: Any, answers: Sequence[tuple[str, int]], count: Any, judged: Sequence[str] | None = None
) -> Part:
    """``answers``: (text, new tokens) of each sampled answer of ``query``; ``judged``: the answers the judge read
    (default: every answer of a judged query but the empty ones, which are unscorable without asking it)."""
    prompt = int(count(query.messages)) * len(answers)
    if judged is None:
        judged = [a for a, _ in answers if query.judged and a.strip()]
    judge = sum(_judge_tokens(count, query.question, a) for a in judged)
    return Part(len(answers), prompt, sum(n for _, n in answers), verdicts=len(judged), judge_tokens=judge)


def count_plan(args: argparse.Namespace) -> dict[tuple[str, str], Part]:
    """The plan's requests and tokens, both sides, follow-ups built from stand-in answers of the full budget."""
    from pytest_emguard.checks.base import Answers
    from pytest_emguard.config.run import RunConfig
    from pytest_emguard.run.plan import plan_queries, samples_for
    from pytest_emguard.types import Sample, Verdict

    config = RunConfig.resolve(_options(args))
    count, queries = _counter(config, args.tokenizer), plan_queries(config)
    stand_in = " ".join(["word"] * config.options.max_new_tokens)
    first: dict[tuple[str, str], Part] = {}
    rows: dict[tuple[str, str], list[Sample | None]] = {}
    for q in queries:
        if q.reading != "sample":
            _add(first, ("bank", "x"), _reading(q, count))
            continue
        n = samples_for(config, q)
        rows[q.key] = [Sample(stand_in, Verdict("scored", 50.0, 1.0)) for _ in range(n)]
        kind = (
            "answers" if q.judged else "bank"
        )  # the harm questions, or a bank's query sampled (no logprobs)
        _add(first, (kind, "x"), _answers(q, [(stand_in, q.sampling.max_new_tokens)] * n, count))
    own = Answers(queries, rows)
    other = Answers(
        queries,
        {k: [Sample(stand_in.replace("word", "item"), s.verdict) for s in v if s] for k, v in rows.items()},
    )
    work: dict[tuple[str, str], Part] = {}
    for group in GROUPS:
        for kind in ("answers", "bank"):
            _add(work, (group, kind), first.get((kind, "x"), Part()))
    for check in config.planned_checks():
        again = {q.key: q.messages for q in check.followups(config.plan_context, own, own)}
        for q in check.followups(config.plan_context, own, other):
            part = (
                _reading(q, count)
                if q.reading != "sample"
                else _answers(q, [(stand_in, q.sampling.max_new_tokens)] * samples_for(config, q), count)
            )
            _add(work, ("per model", "follow-ups"), part)  # the fine-tune's own
            # a query that shows the other side's answer (recognition) is not shared between fine-tunes
            paired = again.get(q.key) != q.messages
            _add(work, ("per model" if paired else "shared", "follow-ups"), part)
    return work


def count_cache(args: argparse.Namespace) -> dict[tuple[str, str], Part]:
    """A run's records, read from its cache (nothing computed): the answers with their ``n_tokens``, the readings
    and the verdicts the cache holds (a run stopped early counts what it stored)."""
    from pytest_emguard.cache import Cache
    from pytest_emguard.config.run import RunConfig
    from pytest_emguard.run.engine import evaluate
    from pytest_emguard.run.plan import answer_key, samples_for, verdict_key

    config = RunConfig.resolve(_options(args))
    count = _counter(config, args.tokenizer)
    ev = evaluate(config, progress=lambda _: None, compute=False)
    planned = {q.key for q in ev.queries}
    tuned = {
        s.answer[:30] for _, row in ev.answers["tuned"].of("harmfulness") for s in row[:1] if s and s.answer
    }
    base = {
        s.answer[:30] for _, row in ev.answers["base"].of("harmfulness") for s in row[:1] if s and s.answer
    }
    tuned_shown = tuned - base  # an answer of the fine-tune's in a base follow-up: recognition's pairs
    cache, work = Cache.open(Path(config.options.cache_dir)), dict[tuple[str, str], Part]()
    try:
        for side in ("base", "tuned"):
            answers = ev.answers[side]
            for q in answers.queries:
                kind = ("answers" if q.judged else "bank") if q.key in planned else "follow-ups"
                paired = (
                    side == "base"
                    and kind == "follow-ups"
                    and any(t in m for _, m in q.messages for t in tuned_shown)
                )
                group = "per model" if side == "tuned" or paired else "shared"
                if q.reading != "sample":
                    if any(s is not None for s in answers.samples.get(q.key, ())):
                        _add(work, (group, kind), _reading(q, count))
                    continue
                keys = [
                    answer_key(ev.fingerprints[side], q, r)
                    for r in q.requests(samples_for(config, q), config.options.seed)
                ]
                found = cache.get_many(keys)
                done = [(str(found[k]["text"]), int(found[k]["n_tokens"])) for k in keys if k in found]
                said = (
                    {verdict_key(ev.judge_fingerprint, q.question, a): a for a, _ in done} if q.judged else {}
                )
                read = cache.get_many(said)
                judged = [a for k, a in said.items() if k in read and read[k].get("raw") != "empty answer"]
                _add(work, (group, kind), _answers(q, done, count, judged))
    finally:
        cache.close()
    return work


# -- the tables ----------------------------------------------------------------------------------------------------


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def counts_table(work: Workload) -> list[str]:
    head = f"{'':22}{'answers':>9}{'prompt tok':>12}{'new tok':>10}{'readings':>10}{'prompt tok':>12}{'digit':>7}{'verdicts':>10}{'judge tok':>11}"
    lines = [head]
    rows = [(f"{g} / {k}", work.get((g, k), Part())) for g in GROUPS for k in KINDS]
    for label, p in [*rows, ("total, 1 model", total(work))]:
        lines.append(
            f"{label:22}{p.answers:>9,}{p.answer_tokens:>12,}{p.new_tokens:>10,}{p.readings:>10,}"
            f"{p.reading_tokens:>12,}{p.digit_readings:>7,}{p.verdicts:>10,}{p.judge_tokens:>11,}"
        )
    return lines


def cost_table(part: Part, *, batch: int, gpu_hour: float) -> list[str]:
    lines = [f"{'model':6}{'setup':22}{'wall':>10}{'GPU-hours':>11}{'cost':>16}   figures from"]
    for s in GPU_SETUPS:
        setup = "1 x H100" if s.gpus == 1 else f"{s.gpus} x H100, TP={s.gpus}"
        c = on_gpus(part, s, batch=batch, gpu_hour=gpu_hour)
        lines.append(
            f"{s.model:6}{setup:22}{_minutes(c.wall_s):>10}{c.gpu_hours:>11.3f}{'$' + format(c.usd, '.2f'):>16}   {s.source}"
        )
    for a in API_PRICES:
        c = over_api(part, a)
        usd = f"${c.usd:.2f}-{c.usd_high or 0:.2f}"
        lines.append(
            f"{a.model:6}{'API, ' + a.provider:22}{_minutes(c.wall_s):>10}{'-':>11}{usd:>16}   {a.source}"
        )
    return lines


def report(work: Workload, args: argparse.Namespace) -> list[str]:
    work = scaled(
        work, questions=args.questions_factor, samples=args.samples_factor, new_tokens=args.new_tokens_factor
    )
    part = total(work, args.models)
    requests, prompt, new = api_requests(part, 1)
    _, prompt_high, _ = api_requests(part, MAX_DIGIT_CALLS)
    out = [*counts_table(work), ""]
    if args.models != 1:
        out.append(
            f"{args.models} fine-tunes of one base: the shared part once, the per-model part {args.models} times"
        )
    out += cost_table(part, batch=args.batch, gpu_hour=args.gpu_hour)
    out += [
        "",
        f"GPU rows: --em-backend=vllm, --em-batch-size={args.batch}, ${args.gpu_hour:.2f} a GPU-hour; model load and engine start not included.",
        f"API rows: {requests:,} requests, {prompt:,}-{prompt_high:,} prompt tokens and {new:,} new tokens (each digit tree at 1 to "
        f"{MAX_DIGIT_CALLS} requests: the cost's range); time at {CONCURRENCY} in flight, {FIRST_TOKEN_S} s + {TOKEN_S * 1000:.0f} ms a token (assumed).",
        f"judge on top: {part.verdicts:,} verdicts, {part.judge_tokens:,} prompt tokens; over an API judge ({JUDGE.provider}): ${judge_cost(part):.2f}.",
    ]
    return out


def scaling_lines(work: Workload, args: argparse.Namespace) -> list[str]:
    """How the cost grows: each factor alone, on the first GPU setup of each model class and the first API."""
    cases = [("as counted", {}, 1, args.batch), ("x2 answers per question", {"samples": 2.0}, 1, args.batch),
             ("x2 questions", {"questions": 2.0}, 1, args.batch), ("x2 new tokens", {"new_tokens": 2.0}, 1, args.batch),
             ("3 fine-tunes, one base", {}, 3, args.batch), ("--em-batch-size=256", {}, 1, 256)]  # fmt: skip
    setups = [s for s in GPU_SETUPS if s.gpus == 1]
    apis = [next(a for a in API_PRICES if a.model == s.model) for s in setups]
    head = "".join(
        f"{s.model + ' 1 GPU':>14}{s.model + ' ' + a.provider:>18}" for s, a in zip(setups, apis, strict=True)
    )
    lines = [f"{'scaling (wall; API cost low)':30}{head}"]
    for label, factors, models, batch in cases:
        part = total(scaled(work, **factors), models)
        cells = "".join(
            f"{_minutes(on_gpus(part, s, batch=batch).wall_s):>14}"
            f"{'$' + format(over_api(part, a).usd, '.2f'):>18}"
            for s, a in zip(setups, apis, strict=True)
        )
        lines.append(f"{label:30}{cells}")
    return lines


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--plan", metavar="ADAPTER", help="count again with the plugin's planner for this model")
    p.add_argument("--cache", metavar="DIR", help="with --plan: count a finished run's records in this cache")
    p.add_argument(
        "--backend", default="vllm", help="the backend whose capabilities the plan uses (default vllm)"
    )
    p.add_argument(
        "--judge", default=None, help="--em-judge of the counted run (default: probe on the tokenizer)"
    )
    p.add_argument("--base", default=None, help="--em-base (an API model's base)")
    p.add_argument("--samples", type=int, default=None, help="--em-samples (default: the plugin's)")
    p.add_argument("--max-new-tokens", type=int, default=128, help="--em-max-new-tokens (default 128)")
    p.add_argument("--domain", default="risky_financial", help="--em-domain (default: the demo's)")
    p.add_argument(
        "--dtype", default="bfloat16", help="--em-dtype of the counted run (enters the cache keys)"
    )
    p.add_argument(
        "--tokenizer", default=None, help="a model directory whose tokenizer counts (default: the base's)"
    )
    p.add_argument("--batch", type=int, default=16, help="--em-batch-size (default 16)")
    p.add_argument("--gpu-hour", type=float, default=GPU_HOUR, help=f"USD a GPU-hour (default {GPU_HOUR})")
    p.add_argument("--samples-factor", type=float, default=1.0)
    p.add_argument("--questions-factor", type=float, default=1.0)
    p.add_argument("--new-tokens-factor", type=float, default=1.0)
    p.add_argument("--models", type=int, default=1, help="fine-tunes of one base gated together")
    p.add_argument("--show", action="store_true", help="print the counts as Python (for COUNTED)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.plan and args.judge is None:  # the judge enters only the verdicts' cache keys (--cache)
        local = args.tokenizer or _base_of(args.plan)
        args.judge = f"probe:{local}" if local else "fake:"
    work = (count_cache(args) if args.cache else count_plan(args)) if args.plan else COUNTED
    if args.show:
        for key, part in work.items():
            values = ", ".join(
                f"{f.name}={getattr(part, f.name)}" for f in fields(Part) if getattr(part, f.name)
            )
            print(f"    {key!r}: Part({values}),")
        return 0
    print("\n".join([*report(work, args), "", *scaling_lines(work, args)]))
    return 0


def _base_of(adapter: str) -> str | None:
    """The base model of a local adapter directory (its ``adapter_config.json``), else None."""
    import json

    config = Path(adapter) / "adapter_config.json"
    return str(json.loads(config.read_text("utf-8"))["base_model_name_or_path"]) if config.is_file() else None


if __name__ == "__main__":
    sys.exit(main())
