"""The ``openai`` backend's pure parts: endpoint syntax and settings, retry decisions, and what a model without
activations or log-probabilities plans (no request is made)."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_emguard.backends.openai_compat import Endpoint, retry_delay
from pytest_emguard.config.run import Options, RunConfig
from pytest_emguard.errors import ConfigError


def test_endpoint_syntax_and_settings() -> None:
    ep = Endpoint.parse(
        "lora@http://127.0.0.1:8000/v1/?concurrency=3&timeout=2.5&retries=0&top_logprobs=50", "x"
    )
    assert (ep.model, ep.url, ep.concurrency, ep.timeout, ep.retries, ep.top_logprobs) == (
        "lora", "http://127.0.0.1:8000/v1", 3, 2.5, 0, 50,
    )  # fmt: skip
    assert Endpoint.parse("gpt-4o", "x", default_url="https://example.org/v1").url == "https://example.org/v1"
    for bad, says in (
        ("@http://h/v1", "names no model"),
        ("m@ftp://h", r"is not an http\(s\) URL"),
        ("m@http://h?concurrency=0", "'concurrency=0' is not a setting"),
        ("m@http://h?color=red", "'color=red' is not a setting"),
    ):
        with pytest.raises(ConfigError, match=says):
            Endpoint.parse(bad, "--em-model")


def _http() -> Any:
    """The HTTP library the installed openai SDK builds its errors on (httpx, or httpx2 from openai 3)."""
    import openai._exceptions as errors

    return vars(errors).get("httpx2") or vars(errors)["httpx"]


def _status(code: int, headers: dict[str, str] | None = None) -> Exception:
    import openai

    httpx = _http()
    request = httpx.Request("POST", "http://h/v1/chat/completions")
    response = httpx.Response(code, headers=headers or {}, request=request)
    return openai.APIStatusError("injected", response=response, body=None)


def test_retry_decisions_honour_retry_after() -> None:
    import openai

    assert retry_delay(_status(429, {"Retry-After": "3"}), 0) == 3.0
    assert retry_delay(_status(429, {"retry-after-ms": "250"}), 0) == 0.25
    assert retry_delay(_status(503, {"Retry-After": "600"}), 0) == 60.0  # capped
    assert 0.25 <= (retry_delay(_status(500), 0) or 0) <= 0.5  # backoff, with jitter
    assert 4.0 <= (retry_delay(_status(500), 5) or 0) <= 8.0
    assert retry_delay(_status(400), 0) is None and retry_delay(_status(401), 0) is None
    timeout = openai.APITimeoutError(request=_http().Request("POST", "http://h"))
    assert retry_delay(timeout, 0) is not None
    assert retry_delay(KeyError("x"), 0) is None


def test_an_endpoint_offers_no_activations_so_the_internals_items_are_skipped() -> None:
    config = RunConfig.resolve(Options(model="openai:lora@http://127.0.0.1:9/v1", base="base", judge="fake:"))
    assert config.capabilities == {"generate", "next_token_logprobs"}
    assert set(config.unsupported()) == {"probes", "persona_direction"}
    assert {i.check for i, _ in config.skipped_items()} == {"probes", "persona_direction"}
    assert not {i.check for i in config.items()} & {"probes", "persona_direction"}
    assert config.model.base == "base@http://127.0.0.1:9/v1"


def test_logprobs_no_plans_sampled_readings() -> None:
    config = RunConfig.resolve(
        Options(model="openai:lora@http://127.0.0.1:9/v1?logprobs=no", base="base", judge="fake:")
    )
    assert config.capabilities == {"generate"}
    readings = {q.reading for q in config.check("self_report").queries(config.plan_context)}
    assert readings == {"sample"}


def test_an_api_model_needs_its_base_named() -> None:
    with pytest.raises(ConfigError, match="--em-base=NAME"):
        RunConfig.resolve(Options(model="openai:lora@http://127.0.0.1:9/v1", judge="fake:"))


def test_the_judge_is_never_the_model_under_test() -> None:
    with pytest.raises(ConfigError, match="the judge is the model under test"):
        RunConfig.resolve(
            Options(
                model="openai:lora@http://127.0.0.1:9/v1",
                base="base",
                judge="openai:lora@http://127.0.0.1:9/v1",
            )
        )
