"""The ``openai`` backend: any OpenAI-compatible endpoint (vLLM's server, OpenAI, a proxy) through the ``openai`` SDK.

``--em-model=openai:MODEL@URL`` gates the model the endpoint serves as ``MODEL`` (a vLLM server names each LoRA
adapter it serves); ``--em-base=NAME`` (same endpoint) or ``NAME@URL`` is the base it is compared with.  Without
``@URL`` the endpoint is ``OPENAI_BASE_URL`` or OpenAI's.  Settings after ``?``: ``logprobs=no`` (the endpoint
returns no log-probabilities: every reading falls back to parsing sampled text), ``concurrency=N`` (requests in
flight, default 8), ``timeout=S`` (seconds a request may take, default 120), ``retries=N`` (default 6),
``top_logprobs=N`` (default 20, OpenAI's limit; a vLLM server allows up to its ``--max-logprobs``).

Requests run concurrently (asyncio, bounded) through one SDK client per backend, kept with its connections for
the backend's life.  Retries are the SDK's (``max_retries=retries``, ``timeout``): a 408, 409, 429 or 5xx answer,
a timeout, a dropped connection or a body cut short is sent again after an exponential backoff (0.5 s doubling to
8 s, less up to a quarter of jitter), or after the ``Retry-After`` / ``retry-after-ms`` the server asked for (up
to the SDK's limit: 120 s in openai 3, where a longer one ends the retries), and ``x-should-retry`` is obeyed.  A
complete body that is not JSON is not retried (a broken server, not a passing fault).  The retries are counted
from the retry number the SDK puts on each request (``x-stainless-retry-count``, read by an httpx event hook), and
each answer's ``usage`` is summed (``OpenAIBackend.usage``).  The key is read from ``OPENAI_API_KEY`` only: it is
never part of a fingerprint, a cache record, a message or a log line.  The cache cannot see an API model's
weights: its fingerprint is the endpoint and the model name, so serve changed weights under a new name.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_emguard.backends.base import BackendOptions, ModelPair, ModelSpec, PartialBatch
from pytest_emguard.digest import json_sha256
from pytest_emguard.errors import ConfigError, ModelError
from pytest_emguard.types import Completion, Prompt, Request

__all__ = [
    "CAPABILITIES",
    "Endpoint",
    "OpenAIBackend",
    "PrefixUnsupported",
    "Usage",
    "fingerprints",
    "open_one",
    "open_pair",
    "resolve",
]

CAPABILITIES = frozenset({"generate", "next_token_logprobs"})
KEY_ENV = "OPENAI_API_KEY"
URL_ENV = "OPENAI_BASE_URL"
DEFAULT_URL = "https://api.openai.com/v1"
MAX_TOP_LOGPROBS = 20  # the OpenAI API's limit
RETRY_HEADER = "x-stainless-retry-count"  # the SDK's number of the attempt: 0, then 1, 2, ... for its retries
_SETTINGS: Mapping[str, Callable[[str], object]] = {
    "logprobs": lambda v: {"yes": True, "no": False}[v],
    "concurrency": lambda v: _bounded(int(v), 1, 256),
    "timeout": lambda v: _bounded(float(v), 0.1, 3600.0),
    "retries": lambda v: _bounded(int(v), 0, 20),
    "top_logprobs": lambda v: _bounded(int(v), 1, 1000),
}


def _bounded(value: float, low: float, high: float) -> Any:
    if not low <= value <= high:
        raise ValueError(f"not between {low:g} and {high:g}")
    return value


class PrefixUnsupported(ModelError):
    """The endpoint cannot continue an assistant message (vLLM's ``continue_final_message``)."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """``MODEL@URL?settings``, parsed and checked (no request is made)."""

    model: str
    url: str
    logprobs: bool = True
    concurrency: int = 8
    timeout: float = 120.0
    retries: int = 6
    top_logprobs: int = MAX_TOP_LOGPROBS  # a vLLM server allows more (its --max-logprobs)

    @property
    def label(self) -> str:
        return f"openai:{self.model}@{self.url}"

    @classmethod
    def parse(cls, text: str, option: str, default_url: str | None = None) -> Endpoint:
        target, _, query = text.partition("?")
        model, at, url = target.partition("@")
        url = url if at else (default_url or os.environ.get(URL_ENV) or DEFAULT_URL)
        if not model.strip():
            raise ConfigError(option, f"{text!r} names no model", "write openai:MODEL or openai:MODEL@URL")
        if not url.startswith(("http://", "https://")):
            raise ConfigError(
                option, f"{url!r} is not an http(s) URL", "write openai:MODEL@http://HOST:PORT/v1"
            )
        settings: dict[str, Any] = {}
        for part in filter(None, query.split("&")):
            key, _, value = part.partition("=")
            try:
                settings[key] = _SETTINGS[key](value)
            except (KeyError, ValueError) as exc:
                known = "logprobs=yes|no, concurrency=N, timeout=SECONDS, retries=N, top_logprobs=N"
                raise ConfigError(
                    option, f"{part!r} is not a setting of the openai backend ({exc})", known
                ) from None
        return cls(model.strip(), url.rstrip("/"), **settings)

    def spec_text(self) -> str:
        return f"{self.model}@{self.url}"


@dataclass(slots=True)
class Usage:
    """What one backend's endpoint did, over the backend's life: requests the SDK sent again (``retried``), and
    the answers received with the tokens their ``usage`` reported."""

    retried: int = 0
    answers: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, usage: Any) -> None:
        self.answers += 1
        if usage is not None:
            self.prompt_tokens += int(getattr(usage, "prompt_tokens", 0) or 0)
            self.completion_tokens += int(getattr(usage, "completion_tokens", 0) or 0)


class OpenAIBackend:
    """One served model.  ``generate`` and ``next_token_logprobs`` send their requests concurrently, through one
    ``AsyncOpenAI`` client on one event loop, both opened on first use and kept (httpx's pooled connections
    belong to the loop that opened them) until ``close()`` or until the backend is collected."""

    def __init__(self, endpoint: Endpoint, fingerprint: str) -> None:
        self.endpoint, self._fingerprint = endpoint, fingerprint
        self.usage = Usage()
        self._open: tuple[asyncio.AbstractEventLoop, Any] | None = None
        self._closer: weakref.finalize | None = None  # type: ignore[type-arg]

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def retried(self) -> int:
        """Requests the SDK sent again after a failure (for tests and the measured-cost line)."""
        return self.usage.retried

    def close(self) -> None:
        """Close the client's connections and the event loop (a later call opens new ones)."""
        if self._closer is not None:
            self._closer()
        self._open = self._closer = None

    def _session(self) -> tuple[asyncio.AbstractEventLoop, Any]:
        if self._open is None:
            loop = asyncio.new_event_loop()
            client = _client(self.endpoint, self.usage)
            self._open = (loop, client)
            self._closer = weakref.finalize(self, _shut, loop, client)
        return self._open

    def generate(self, requests: Sequence[Request]) -> list[Completion]:
        async def one(client: Any, r: Request) -> Completion:
            response = await client.chat.completions.create(
                model=self.endpoint.model,
                messages=_messages(r.messages),
                max_tokens=r.sampling.max_new_tokens,
                temperature=r.sampling.temperature,
                top_p=r.sampling.top_p,
                seed=r.seed % 2**31,
            )
            choice = response.choices[0]
            text = (choice.message.content or "").strip()
            usage = getattr(response, "usage", None)
            self.usage.add(usage)
            n_tokens = usage.completion_tokens if usage is not None else len(text.split())
            return Completion(text, int(n_tokens), "length" if choice.finish_reason == "length" else "stop")

        return self._run([functools.partial(one, r=r) for r in requests])

    def next_token_logprobs(self, prompts: Sequence[Prompt], top_k: int = 20) -> list[dict[str, float]]:
        """The first answer token's top log-probabilities; a prompt's prefix is continued as the start of the
        assistant's message (vLLM's ``continue_final_message``)."""
        import math

        async def one(client: Any, p: Prompt) -> dict[str, float]:
            messages = _messages(p.messages)
            extra = None
            if p.prefix:
                messages.append({"role": "assistant", "content": p.prefix})
                extra = {"continue_final_message": True, "add_generation_prompt": False}
            import openai

            try:
                response = await client.chat.completions.create(
                    model=self.endpoint.model,
                    messages=messages,
                    max_tokens=1,
                    temperature=0.0,
                    logprobs=True,
                    top_logprobs=min(top_k, self.endpoint.top_logprobs),
                    extra_body=extra,
                )
            except openai.BadRequestError:
                if not p.prefix:
                    raise
                raise PrefixUnsupported(
                    self.endpoint.label,
                    "the endpoint cannot continue an assistant prefix (vLLM's continue_final_message)",
                    "serve the model with vLLM, or add ?logprobs=no to the model",
                ) from None
            self.usage.add(getattr(response, "usage", None))
            content = response.choices[0].logprobs.content if response.choices[0].logprobs else None
            if not content:
                raise ModelError(
                    self.endpoint.label,
                    "the endpoint returned no log-probabilities",
                    "serve a model that returns logprobs, or add ?logprobs=no to the model so that every reading "
                    "falls back to parsing sampled text",
                )
            merged: dict[str, float] = {}
            for top in content[0].top_logprobs:
                old = merged.get(top.token)
                merged[top.token] = (
                    top.logprob if old is None else math.log(math.exp(old) + math.exp(top.logprob))
                )
            return merged

        return self._run([functools.partial(one, p=p) for p in prompts])

    def _run(self, calls: Sequence[Callable[[Any], Awaitable[Any]]]) -> list[Any]:
        """Every call, ``concurrency`` at a time, each retried by the SDK; a call that still fails raises
        ``PartialBatch`` carrying the calls that finished, so that the caller stores them."""
        loop, client = self._session()
        task = loop.create_task(self._gather(client, calls))
        try:
            return loop.run_until_complete(task)
        finally:
            if not task.done():  # interrupted (Ctrl-C): its requests end with it, not in a later batch
                task.cancel()
                with contextlib.suppress(BaseException):
                    loop.run_until_complete(task)

    async def _gather(self, client: Any, calls: Sequence[Callable[[Any], Awaitable[Any]]]) -> list[Any]:
        limit = asyncio.Semaphore(self.endpoint.concurrency)

        async def guarded(call: Callable[[Any], Awaitable[Any]]) -> Any:
            async with limit:
                return await call(client)

        results = await asyncio.gather(*(guarded(c) for c in calls), return_exceptions=True)
        failed = [(i, r) for i, r in enumerate(results) if isinstance(r, BaseException)]
        if not failed:
            return list(results)
        done = {i: r for i, r in enumerate(results) if not isinstance(r, BaseException)}
        cause = failed[0][1]
        if isinstance(cause, PrefixUnsupported):  # not a failure of the endpoint: the caller reads otherwise
            raise cause
        raise PartialBatch(self.endpoint.label, self._describe(cause, len(failed), len(calls)), done) from (
            cause if isinstance(cause, Exception) else None
        )

    def _describe(self, cause: BaseException, failed: int, total: int) -> str:
        text = " ".join(str(cause).split())[:300]
        key = os.environ.get(KEY_ENV)
        if key:
            text = text.replace(key, "***")
        return (
            f"{failed} of {total} requests failed after {self.endpoint.retries} retries "
            f"({type(cause).__name__}: {text}); the batch's {total - failed} finished answers are kept in the "
            "cache, with every earlier batch's"
        )


def _messages(messages: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"role": role, "content": content} for role, content in messages]


def _client(endpoint: Endpoint, usage: Usage) -> Any:
    """The SDK's async client for ``endpoint``: its retries and timeout from the endpoint's settings, and an
    httpx event hook that counts each request the SDK sends again into ``usage.retried``."""
    import openai

    async def count_retry(request: Any) -> None:
        if request.headers.get(RETRY_HEADER, "0") != "0":
            usage.retried += 1

    return openai.AsyncOpenAI(
        base_url=endpoint.url,
        api_key=os.environ.get(KEY_ENV) or "EMPTY",  # a local server needs none; the SDK needs a string
        max_retries=endpoint.retries,
        timeout=endpoint.timeout,
        http_client=openai.DefaultAsyncHttpxClient(event_hooks={"request": [count_retry]}),
    )


def _shut(loop: asyncio.AbstractEventLoop, client: Any) -> None:
    """Close a backend's client on its loop, then the loop (from ``close()``, collection or exit)."""
    if loop.is_closed():
        return
    try:
        loop.run_until_complete(client.close())
    finally:
        loop.close()


# -- the backend module interface (see backends/__init__.py) ----------------------------------------------------


def resolve(model: str, base: str | None = None, *, trust_remote_code: bool = False) -> ModelSpec:
    """``MODEL@URL?settings`` and ``--em-base`` (``NAME`` on the same endpoint, or ``NAME@URL``), checked."""
    tuned = Endpoint.parse(model, "--em-model")
    if not base:
        raise ConfigError(
            "--em-base",
            f"{tuned.label} is an API model, which carries no record of its base model",
            "pass the base model's name on the endpoint with --em-base=NAME (or NAME@URL)",
        )
    if "?" in base:
        raise ConfigError("--em-base", f"{base!r} carries settings", "put ?settings on --em-model only")
    query = model.partition("?")[2]
    base_ep = Endpoint.parse(f"{base}?{query}" if query else base, "--em-base", default_url=tuned.url)
    caps = CAPABILITIES if tuned.logprobs else frozenset({"generate"})
    return ModelSpec(
        "api",
        model,
        f"{base_ep.spec_text()}?{query}" if query else base_ep.spec_text(),
        False,
        "openai",
        caps,
    )


def _fingerprint(endpoint: Endpoint) -> str:
    return json_sha256(
        {"kind": "fingerprint", "backend": "openai", "url": endpoint.url, "model": endpoint.model}
    )


def fingerprints(
    spec: ModelSpec, hash_file: Callable[[Path], str], options: BackendOptions
) -> tuple[str, str]:
    assert spec.base is not None
    return _fingerprint(Endpoint.parse(spec.base, "--em-base")), _fingerprint(
        Endpoint.parse(spec.path, "--em-model")
    )


def open_pair(spec: ModelSpec, prints: tuple[str, str], options: BackendOptions) -> ModelPair:
    assert spec.base is not None
    base = OpenAIBackend(Endpoint.parse(spec.base, "--em-base"), prints[0])
    tuned = OpenAIBackend(Endpoint.parse(spec.path, "--em-model"), prints[1])

    def close() -> None:
        base.close()
        tuned.close()

    return ModelPair(base, tuned, close)


def open_one(spec: ModelSpec, fingerprint: str, options: BackendOptions) -> OpenAIBackend:
    return OpenAIBackend(Endpoint.parse(spec.path, "--em-judge"), fingerprint)
