"""The ``openai`` backend's pure parts: endpoint syntax and settings, the SDK client they make, and what a model
without activations or log-probabilities plans (no request is made; tests/slow/test_api_backends.py sends them
to a real vLLM server, through a proxy that injects faults)."""

from __future__ import annotations

import pytest

from pytest_emguard.backends.openai_compat import Endpoint, OpenAIBackend
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


def test_the_sdk_retries_and_times_out_as_the_endpoint_says_with_one_client_a_backend(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``?retries=N`` and ``?timeout=S`` are the SDK client's ``max_retries`` and ``timeout``; the backend
    keeps one client (and its event loop) for every batch until it is closed."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    backend = OpenAIBackend(Endpoint.parse("lora@http://127.0.0.1:9/v1?timeout=2.5&retries=3", "x"), "fp")
    loop, client = backend._session()
    assert (client.max_retries, client.timeout, str(client.base_url)) == (3, 2.5, "http://127.0.0.1:9/v1/")
    assert client.api_key == "EMPTY"  # a local server needs no key; the SDK needs a string
    assert backend._session() == (loop, client)
    backend.close()
    assert loop.is_closed() and client.is_closed() and backend.retried == 0
    assert backend._session()[1] is not client  # a later batch opens a new one
    backend.close()


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
