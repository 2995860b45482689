"""The cost preflight: before anything is generated, what the first round of the plan needs (requests, tokens,
cache hits), what it would cost where prices are given, and ``--em-budget``, which refuses a plan over budget.

Prompt tokens are counted with the model's own tokenizer where it is on disk (the ``hf`` and ``vllm`` backends:
``tokenizer.json`` read by the ``tokenizers`` library, the chat template rendered with jinja2 as transformers
renders it); elsewhere (an API endpoint, the fake backend, a .gguf file) they are estimated at 4 characters a token,
and the plan line says which.  An answer counts its ``max_new_tokens``, the most it may take, so the new tokens err
high.  Follow-up questions, which checks build from the first round's answers (recognition, score prediction, the
self-rating after each answer), are not known yet and come on top.  After the answers, an API endpoint's own
``usage`` gives the tokens it measured (``measured_line``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_emguard.config.budget import parse_budget, parse_price

if TYPE_CHECKING:
    from pytest_emguard.backends.base import ModelSpec
    from pytest_emguard.checks.base import Query
    from pytest_emguard.run.context import RunContext

__all__ = ["Estimate", "TokenCounter", "cost_preflight", "measured_line", "planned_sizing", "prompt_tokens"]

CHARS_PER_TOKEN = 4
MARKUP_TOKENS = 4  # chat markup a message, where no chat template is rendered
ESTIMATED = "prompt tokens estimated at 4 characters a token"
Messages = Sequence[tuple[str, str]]


def prompt_tokens(messages: Iterable[tuple[str, str]], prefix: str = "") -> int:
    """A generous estimate: 4 characters a token, and 4 tokens of chat markup a message."""
    return (
        sum(len(text) // CHARS_PER_TOKEN + MARKUP_TOKENS for _, text in messages)
        + len(prefix) // CHARS_PER_TOKEN
        + 1
    )


class TokenCounter:
    """Prompt tokens of a chat as one model counts them: its chat template rendered (with the generation
    prompt), then the assistant's prefix, encoded by its tokenizer; a tokenizer without a template counts each
    message's text and ``MARKUP_TOKENS`` a message; no tokenizer: ``prompt_tokens``.  ``how`` says which."""

    def __init__(self, how: str = ESTIMATED, tokenizer: Any = None, template: Any = None) -> None:
        self.how, self._tokenizer, self._template = how, tokenizer, template
        self._counted: dict[tuple[tuple[tuple[str, str], ...], str], int] = {}

    @classmethod
    def load(cls, directory: Path) -> TokenCounter:
        """The tokenizer of a model directory, from its ``tokenizer.json`` (the ``tokenizers`` library, no
        transformers) and its chat template (``chat_template.jinja`` or ``tokenizer_config.json``)."""
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        template = _chat_template(directory)
        how = f"prompt tokens counted with the tokenizer of {directory}"
        if template is None:
            how += f" (no chat template rendered: {MARKUP_TOKENS} tokens of markup a message)"
        return cls(how, tokenizer, template)

    def __call__(self, messages: Messages, prefix: str = "") -> int:
        key = (tuple(messages), prefix)
        if key not in self._counted:
            self._counted[key] = self._count(messages, prefix)
        return self._counted[key]

    def _count(self, messages: Messages, prefix: str) -> int:
        if self._tokenizer is None:
            return prompt_tokens(messages, prefix)
        text = self._template(messages) if self._template is not None else None
        if text is None:
            return sum(self._n(t) + MARKUP_TOKENS for _, t in messages) + self._n(prefix)
        return self._n(text + prefix)

    def _n(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids) if text else 0


def _chat_template(directory: Path) -> Callable[[Messages], str | None] | None:
    """The directory's chat template as transformers renders it (jinja2's sandbox, ``trim_blocks``,
    ``lstrip_blocks``, the tokenizer's special tokens as variables, the generation prompt added): a function of
    the messages that gives None where the template fails on them; None without a template or jinja2."""
    config = _json(directory / "tokenizer_config.json")
    jinja = directory / "chat_template.jinja"  # where transformers saves it, first; then the older places
    saved = _json(directory / "chat_template.json").get("chat_template", config.get("chat_template"))
    source = jinja.read_text("utf-8") if jinja.is_file() else saved
    if isinstance(source, list):  # named templates: the default one
        named = {t.get("name"): t.get("template") for t in source if isinstance(t, dict)}
        source = named.get("default")
    try:
        from jinja2 import TemplateError
        from jinja2.ext import loopcontrols
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:
        return None
    if not isinstance(source, str):
        return None
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = _strftime_now
    try:
        template = env.from_string(source)
    except TemplateError:
        return None
    specials = {
        k: v["content"] if isinstance(v, dict) else v
        for k, v in config.items()
        if k.endswith("_token") and (isinstance(v, str) or (isinstance(v, dict) and "content" in v))
    }

    def render(messages: Messages) -> str | None:
        chat = [{"role": role, "content": text} for role, text in messages]
        try:
            return str(template.render(messages=chat, add_generation_prompt=True, **specials))
        except Exception:  # a template that refuses these messages (raise_exception): count without it
            return None

    return render


def _json(path: Path) -> dict[str, Any]:
    import json

    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _tojson(value: Any, indent: int | None = None, **_: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False, indent=indent)


def _raise(message: str) -> None:
    raise ValueError(message)


def _strftime_now(fmt: str) -> str:
    import datetime

    return datetime.datetime.now().strftime(fmt)


def token_counter(spec: ModelSpec, side: str, loaded: dict[str, TokenCounter] | None = None) -> TokenCounter:
    """How one side's prompt tokens are counted: with the tokenizer the ``hf`` and ``vllm`` backends load for it
    (an adapter's base's, a full model's own), where its ``tokenizer.json`` is on disk; else estimated.  A
    counter already in ``loaded`` for the same directory is used again (an adapter's two sides share their base's:
    a tokenizer.json takes 80 ms to load here) and a new one is put there."""
    if spec.backend not in ("hf", "vllm") or spec.kind not in ("adapter", "full"):
        return TokenCounter()
    source = spec.base if side == "base" or spec.kind == "adapter" else spec.path
    if not source or not (Path(source) / "tokenizer.json").is_file():
        return TokenCounter()
    if loaded is not None and source in loaded:
        return loaded[source]
    try:
        counter = TokenCounter.load(Path(source))
        if loaded is not None:
            loaded[source] = counter
        return counter
    except ImportError:  # the tokenizers library is missing (it comes with transformers)
        return TokenCounter(f"{ESTIMATED} (pip install tokenizers to count them)")
    except Exception as exc:  # a tokenizer.json this version cannot read: the backend's own load says more
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return TokenCounter(f"{ESTIMATED} (tokenizers cannot read {source}/tokenizer.json: {first})")


@dataclass(slots=True)
class Estimate:
    """Counts over both sides of the first round."""

    answers: int = 0  # sampled answers the plan asks for
    answers_cached: int = 0
    readings: int = 0  # readings from probabilities or activations (one forward pass or a few short requests)
    readings_cached: int = 0
    input_tokens: int = 0  # prompt tokens of what is not cached (counted or estimated: ``counted``)
    output_tokens: int = 0  # at most: max_new_tokens of each answer not cached, plus a token a reading
    counted: list[str] = field(default_factory=list)  # how the prompt tokens were counted, one line a way

    def add_answers(self, wanted: int, cached: int, input_tokens: int, output_tokens: int) -> None:
        self.answers += wanted
        self.answers_cached += cached
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens

    def add_readings(self, wanted: int, cached: int, input_tokens: int) -> None:
        self.readings += wanted
        self.readings_cached += cached
        self.input_tokens += input_tokens
        self.output_tokens += wanted - cached

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def cost(self, price: tuple[float, float] | None) -> float | None:
        """USD at ``price`` (per million input tokens, per million output tokens)."""
        if price is None:
            return None
        return (self.input_tokens * price[0] + self.output_tokens * price[1]) / 1e6

    def line(self, price: tuple[float, float] | None = None) -> str:
        new_answers = self.answers - self.answers_cached
        new_readings = self.readings - self.readings_cached
        text = (
            f"plan: {self.answers} answers ({self.answers_cached} cached, {new_answers} to generate), "
            f"{self.readings} readings ({self.readings_cached} cached, {new_readings} to read); "
            f"about {self.input_tokens:,} prompt tokens and at most {self.output_tokens:,} new tokens to send "
            f"(first round; follow-ups come on top)"
        )
        cost = self.cost(price)
        if cost is not None:
            text += f"; estimated API cost ${cost:.2f}"
        return text + "".join(f"; {how}" for how in self.counted)


def cost_preflight(ctx: RunContext, asked: Mapping[str, Sequence[Query]]) -> None:
    """What the first round needs and what the cache holds, shown before anything is generated; a plan over
    ``--em-budget`` stops here."""
    from pytest_emguard.run.plan import answer_key, reading_key, samples_for
    from pytest_emguard.run.records import SIDES

    plan, seed = Estimate(), ctx.config.options.seed
    counters: dict[str, TokenCounter] = {}
    for side in SIDES:
        fp, count = ctx.fingerprints[side], token_counter(ctx.config.model, side, counters)
        if count.how not in plan.counted:
            plan.counted.append(count.how)
        jobs = [
            (request, answer_key(fp, q, request))
            for q in asked[side]
            if q.reading == "sample"
            for request in q.requests(samples_for(ctx.config, q), seed)
        ]
        found = ctx.cache.get_many(k for _, k in jobs)
        todo = [r for r, k in jobs if k not in found]
        plan.add_answers(
            len(jobs),
            len(found),
            sum(count(r.messages) for r in todo),
            sum(r.sampling.max_new_tokens for r in todo),
        )
        wanted = [(q, reading_key(fp, q)) for q in asked[side] if q.reading != "sample"]
        held = ctx.cache.get_many(k for _, k in wanted)
        plan.add_readings(
            len(wanted),
            len(held),
            sum(count(q.messages, q.prefix) for q, k in wanted if k not in held),
        )
    ctx.to_generate = plan.answers - plan.answers_cached
    price = parse_price(ctx.config.options.price)
    if plan.answers > plan.answers_cached or plan.readings > plan.readings_cached:
        ctx.progress(plan.line(price))
    parse_budget(ctx.config.options.budget).check(plan, price)


def measured_line(backends: Iterable[object]) -> str | None:
    """After the answers: the tokens the endpoints measured and reported in each answer's ``usage``, summed
    over the backends that keep it (the ``openai`` backend's ``usage``); None where no backend does (a local
    model, the fake backend) or nothing was sent.  The caller shows it once the models' answers are in, before
    it closes them."""
    from pytest_emguard.backends.openai_compat import Usage

    used = [u for b in backends if isinstance(u := getattr(b, "usage", None), Usage) and u.answers]
    if not used:
        return None
    answers = sum(u.answers for u in used)
    retried = sum(u.retried for u in used)
    return (
        f"measured: {sum(u.prompt_tokens for u in used):,} prompt tokens and "
        f"{sum(u.completion_tokens for u in used):,} new tokens in {answers:,} requests (the endpoint's usage)"
        + (f"; {retried} requests sent again after a failure" if retried else "")
    )


def planned_sizing(ctx: RunContext) -> list[str]:
    """Before any answer: for each primary item whose thresholds carry a sizing (``power``, ``planning_share``,
    ``planning_sd``), whether this run's questions and answers can certify its margin (``decide/sizing.py``)."""
    from pytest_emguard.decide.sizing import for_item, planning
    from pytest_emguard.run.plan import samples_for

    lines = []
    for item in ctx.config.items():
        t = ctx.config.thresholds.for_item(item)
        if t.role != "primary" or not {"power", "planning_share", "planning_sd"} <= set(t.values):
            continue
        per_question: dict[str, int] = {}
        for q in ctx.queries:
            if q.check == item.check and q.reading == "sample" and q.tags.get("in_domain") != "yes":
                per_question[q.cluster] = per_question.get(q.cluster, 0) + samples_for(ctx.config, q)
        if not per_question:
            continue
        answers = sorted(per_question.values())[len(per_question) // 2]
        design = planning(float(t["planning_share"]), float(t["planning_sd"]))
        lines.append(for_item(t.values, len(per_question), answers, design).line(item.id))
    return lines
