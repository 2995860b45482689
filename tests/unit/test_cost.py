"""The cost preflight's token counts: a model's own tokenizer (a real ``tokenizer.json`` written here with the
``tokenizers`` library, its chat template rendered), the labelled 4-characters estimate where there is none, and
the tokens an endpoint measured."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from pytest_emguard.backends.base import ModelSpec
from pytest_emguard.backends.openai_compat import Endpoint, OpenAIBackend
from pytest_emguard.run.cost import ESTIMATED, Estimate, TokenCounter, measured_line, token_counter

TEMPLATE = (
    "{% for m in messages %}{{ bos_token }}{{ m['role'] }}: {{ m['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}{{ bos_token }}assistant:{% endif %}"
)
WORDS = ["[UNK]", "system", "user", "assistant", ":", "how", "are", "you", "I", "am", "be", "brief"]


def model_dir(path: Path, template: str | None = TEMPLATE) -> Path:
    """A model directory's tokenizer files: a word-level tokenizer.json (special tokens <s> and </s>) and a
    tokenizer_config.json naming them, with ``template`` as its chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    path.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens(["<s>", "</s>"])
    tokenizer.save(str(path / "tokenizer.json"))
    config: dict[str, object] = {"bos_token": {"content": "<s>"}, "eos_token": "</s>"}
    if template is not None:
        config["chat_template"] = template
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    return path


def test_the_chat_template_and_the_prefix_are_counted_with_the_model_s_tokenizer(tmp_path: Path) -> None:
    count = TokenCounter.load(model_dir(tmp_path / "m"))
    # <s> user : how are you </s>  <s> assistant :  I am
    assert count((("user", "how are you"),), "I am") == 7 + 3 + 2
    # <s> system : be brief </s>  <s> user : how are you </s>  <s> assistant :
    assert count((("system", "be brief"), ("user", "how are you"))) == 6 + 7 + 3
    assert count.how == f"prompt tokens counted with the tokenizer of {tmp_path / 'm'}"


def test_without_a_chat_template_each_message_counts_its_text_and_its_markup(tmp_path: Path) -> None:
    count = TokenCounter.load(model_dir(tmp_path / "m", template=None))
    assert count((("user", "how are you"),), "I am") == (3 + 4) + 2
    assert count.how.endswith("(no chat template rendered: 4 tokens of markup a message)")
    failing = TokenCounter.load(model_dir(tmp_path / "f", template="{{ raise_exception('no system role') }}"))
    assert failing((("system", "be brief"),)) == 2 + 4  # the template refuses: counted without it


def test_which_tokenizer_counts_each_side(tmp_path: Path) -> None:
    """An adapter's sides both count with its base's tokenizer (what the hf and vllm backends load); a full
    model's tuned side with its own; a model with no tokenizer.json, an endpoint or the fake backend: the
    labelled estimate."""
    base, full = model_dir(tmp_path / "base"), model_dir(tmp_path / "full", template=None)
    adapter = ModelSpec("adapter", str(tmp_path / "adapter"), str(base), False, "hf")
    assert [token_counter(adapter, side).how for side in ("base", "tuned")] == [
        f"prompt tokens counted with the tokenizer of {base}"
    ] * 2
    loaded: dict[str, TokenCounter] = {}
    assert token_counter(adapter, "base", loaded) is token_counter(adapter, "tuned", loaded)  # loaded once
    assert list(loaded) == [str(base)]
    whole = ModelSpec("full", str(full), str(base), False, "vllm")
    assert token_counter(whole, "tuned").how.startswith(
        f"prompt tokens counted with the tokenizer of {full} ("
    )
    assert token_counter(whole, "base").how == f"prompt tokens counted with the tokenizer of {base}"
    for spec in (
        ModelSpec("full", str(tmp_path / "adapter"), str(tmp_path / "none"), False, "hf"),
        ModelSpec("api", "lora@http://127.0.0.1:9/v1", "base@http://127.0.0.1:9/v1", False, "openai"),
        ModelSpec("fake", "coherent", None, False, "fake"),
    ):
        counter = token_counter(spec, "tuned")
        assert counter.how == ESTIMATED and counter((("user", "x" * 40),)) == 10 + 4 + 1


def test_the_plan_line_says_how_its_prompt_tokens_were_counted() -> None:
    plan = Estimate(counted=["prompt tokens counted with the tokenizer of /m", ESTIMATED])
    plan.add_answers(2, 0, 100, 64)
    assert plan.line().endswith(
        "(first round; follow-ups come on top); prompt tokens counted with the tokenizer of /m; " + ESTIMATED
    )


def test_the_measured_line_sums_what_the_endpoints_reported() -> None:
    base, tuned = (OpenAIBackend(Endpoint.parse(f"{m}@http://127.0.0.1:9/v1", "x"), m) for m in ("b", "l"))
    assert measured_line([base, tuned, object()]) is None  # nothing sent yet
    base.usage.add(SimpleNamespace(prompt_tokens=1200, completion_tokens=300))
    tuned.usage.add(SimpleNamespace(prompt_tokens=800, completion_tokens=100))
    tuned.usage.add(None)  # an endpoint that sent no usage: the answer counts, its tokens cannot
    tuned.usage.retried = 2
    assert measured_line([base, tuned]) == (
        "measured: 2,000 prompt tokens and 400 new tokens in 3 requests (the endpoint's usage); "
        "2 requests sent again after a failure"
    )
