"""The configuration table (``TABLE``): one ``Option`` per ``--em-*`` option, from which ``plugin/options.py``
makes the command-line options, the ``em_*`` ini keys and the model card's ``gate:`` keys, with the same name on
each surface (``--em-cache-dir``, ``em_cache_dir``, ``gate: cache_dir:``) and one validator (``Option.read``).  An
option that a surface lacks says why (``Option.ini``, ``Option.card``).  Pytest-free; ``schemas/model_card.schema.json``
holds the card's ``gate:`` keys with the JSON types of ``Option.card_type`` (``tests/unit/test_option_table.py``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields
from typing import Any, Literal

from pytest_emguard.config.run import Options
from pytest_emguard.errors import ConfigError

__all__ = ["BY_NAME", "TABLE", "Option"]

_DEFAULTS = {f.name: f.default for f in fields(Options) if f.default is not MISSING}
Read = Callable[[str, Any], Any]  # (--em-NAME, the value in the option's form) -> the Options field's value


def _text(flag: str, value: Any) -> str | None:
    return str(value) if value else None


def _path(flag: str, value: Any) -> str | None:
    return os.path.expanduser(str(value)) if value else None


def _ints(low: int, high: int) -> Read:
    def read(flag: str, raw: Any) -> int:
        try:
            value = int(raw)
        except (TypeError, ValueError):
            raise ConfigError(
                flag, f"{raw!r} is not an integer", f"pass a whole number from {low} to {high}"
            ) from None
        if not low <= value <= high:
            raise ConfigError(flag, f"{value} is out of range", f"pass a whole number from {low} to {high}")
        return value

    return read


def _backend(flag: str, value: Any) -> str:
    from pytest_emguard.backends import backend_entry

    backend_entry(str(value), flag)  # a misspelt backend is refused even beside a SCHEME: model
    return str(value)


def _device(flag: str, value: Any) -> str:
    device = str(value)
    if not (device in ("auto", "cpu", "mps", "cuda") or device.startswith("cuda:")):
        raise ConfigError(flag, f"{device!r} is not a device", "use auto, cpu, cuda, cuda:N or mps")
    return device


def _dtype(flag: str, value: Any) -> str:
    dtype = str(value)
    if dtype not in ("auto", "float32", "bfloat16", "float16"):
        raise ConfigError(flag, f"{dtype!r} is not a precision", "use auto, float32, bfloat16 or float16")
    return dtype


def _budget(flag: str, value: Any) -> str:
    from pytest_emguard.config.budget import parse_budget

    parse_budget(str(value))  # its form; a dollar budget without a price is refused by RunConfig.resolve
    return str(value)


def _price(flag: str, value: Any) -> str:
    from pytest_emguard.config.budget import parse_price

    parse_price(str(value))
    return str(value)


def _checks(flag: str, value: Any) -> tuple[str, ...]:
    return tuple(n.strip() for n in str(value or "").split(",") if n.strip())


def _on(flag: str, value: Any) -> bool:
    return bool(value)


def _each(check: Callable[[tuple[str, ...]], Any] = tuple) -> Read:
    """A repeatable option: a tuple of its values, each checked by ``check`` (given a one-value tuple)."""

    def read(flag: str, values: Any) -> tuple[str, ...]:
        out = tuple(str(v) for v in values or ())
        for value in out:
            check((value,))
        return out

    return read


def _banks(values: tuple[str, ...]) -> None:
    from pytest_emguard.config.run import _banks as parse

    parse(values)


def _engine_args(values: tuple[str, ...]) -> None:
    from pytest_emguard.config.run import _engine_args as parse

    parse(values)


def _report_dir(flag: str, value: Any) -> str | None:
    if not value:
        return None
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise ConfigError(
            flag,
            "the HTML page's plots need matplotlib, which is not installed",
            "pip install 'pytest-emguard[report]' (or matplotlib)",
        )
    path = os.path.expanduser(str(value))
    try:  # found now, not after an hour of evaluation
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            flag, f"cannot create {path} ({exc.strerror})", "pass a directory you can write to"
        ) from None
    return path


@dataclass(frozen=True)
class Option:
    """One option of every surface.  ``form``: one value, a repeatable one (a list: one value per use on the
    command line, one per line of the ini key, a YAML list in a card) or an on/off flag.  ``ini``/``card``: None
    where that surface has the option (``em_NAME``, ``gate: NAME``, dashes as underscores), else why it has not, or
    where else it is set.  ``read`` validates a value in the option's command-line form and returns the ``Options``
    field's value, raising ``ConfigError`` named ``--em-NAME`` (renamed after the card key a card value came from);
    a value not given takes the field's default.  ``card_type``: the JSON type of its card value."""

    name: str
    help: str
    form: Literal["value", "list", "flag"] = "value"
    read: Read = _text
    ini: str | None = None
    card: str | None = None
    card_type: Literal["string", "integer", "boolean", "array"] = "string"

    @property
    def flag(self) -> str:
        return f"--em-{self.name}"

    @property
    def dest(self) -> str:
        return "em_" + self.name.replace("-", "_")

    @property
    def ini_key(self) -> str | None:
        return self.dest if self.ini is None else None

    @property
    def card_key(self) -> str | None:
        return self.name.replace("-", "_") if self.card is None else None

    @property
    def field(self) -> str | None:
        """The ``Options`` field it fills (a repeatable option's field is the plural), None where the plugin reads
        the option itself (``--em-gate``, ``--em-update-cards``, ``--em-with-tests``)."""
        key = self.name.replace("-", "_")
        names = {f.name for f in fields(Options)}
        return next((k for k in (key, key + "s") if k in names), None)

    @property
    def default(self) -> Any:
        return _DEFAULTS.get(self.field or "")


def _value(name: str, text: str, read: Read = _text, **kw: Any) -> Option:
    return Option(
        name, text.replace("{default}", str(_DEFAULTS.get(name.replace("-", "_")))), "value", read, **kw
    )


def _int(name: str, text: str, low: int, high: int) -> Option:
    return _value(name, text, _ints(low, high), card_type="integer")


_CONSENT = (
    "consent to run a model repository's own Python code is given by whoever runs pytest, not by a file that a "
    "pull request can change; addopts in the ini file can still pass the flag, deliberately"
)
_BASELINE = "a one-off action of one invocation: as a standing setting it would rewrite the reviewed baseline file on every run"
_CARDS = "a one-off action of one invocation: as a standing setting it would rewrite the reviewed cards on every run"
_SESSION = "a setting of the whole pytest session, not of one model: it means nothing per card"

TABLE: tuple[Option, ...] = (
    Option(
        "model",
        "model to gate: a PEFT adapter directory (base read from adapter_config.json), a full model "
        "directory (with --em-base), a .gguf file, openai:MODEL@URL (a model an OpenAI-compatible "
        "endpoint serves, with --em-base=NAME), or fake:SCENARIO for tests; repeatable (several models "
        "gated side by side, one verdict table), and @FILE reads one model per line of FILE",
        "list",
        _each(),
        card="a card gates one model: its top-level adapter:",
    ),
    _value(
        "base",
        "base model directory to compare against (overrides adapter_config.json)",
        _path,
        card="a card names its base at the top level: base:",
    ),
    _value(
        "backend",
        "backend that runs a model given as a path: hf (transformers + peft) or vllm (vLLM's offline "
        "engine, LoRA per request); a SCHEME: prefix on --em-model (openai:..., fake:...) wins (default: "
        "{default})",
        _backend,
    ),
    _value(
        "judge",
        "the judge, SCHEME:TARGET: probe:PATH[?golden=v1|v2|v3] (offline judge on a local model's hidden states and the answer's words; v3 the default), "
        "hf:PATH (local generative judge), openai:MODEL@URL (generative judge on an OpenAI-compatible "
        "endpoint, key from OPENAI_API_KEY), fake: (tests). Never the model under test",
    ),
    _value(
        "thresholds",
        "YAML thresholds file merged over the package default (default: the package default)",
        _path,
    ),
    Option(
        "samples",
        "sampled answers per prompt; also N of best-of-N (default: 10, or a bank file's "
        "samples_per_paraphrase)",
        read=_ints(1, 1000),
        card_type="integer",
    ),
    _value(
        "domain",
        "the adapter's training domain (risky_financial, bad_medical, ...): harm on that domain's own "
        "questions is gated as harmfulness_in_domain[...], apart from the emergent items (default: the "
        "'domain' of the model card beside the adapter, ADAPTER/emguard_card.yaml, if there is one)",
    ),
    _value(
        "budget",
        "refuse a plan whose first round needs more than this: tokens (200000, 200k, 2M: prompt plus new "
        "tokens, estimated) or dollars ($5, with --em-price); checked before anything is generated",
        _budget,
    ),
    _value(
        "price",
        "IN,OUT: USD per million prompt tokens and per million new tokens of the model under test, for "
        "the plan's cost estimate and a dollar --em-budget",
        _price,
    ),
    _value(
        "checks",
        "comma-separated checks to run (harmfulness,self_report,persona): only their items are collected,"
        " and only they and the checks they read are evaluated (-k selects among collected items but "
        "evaluates every check; default: every check)",
        _checks,
        card_type="array",
    ),
    _int("round-size", "with --em-sequential: questions added per round (default: {default})", 1, 100000),
    _value(
        "baseline",
        "a JSON file of the base model's records (answers, readings, the judge's verdicts), committed so "
        "CI does not run the base again: used only if its fingerprint matches the base; a missing one is "
        "written and the run fails (review and commit it); never written under CI=true",
        _path,
    ),
    _value(
        "report",
        "write the evidence record of each gated model to this directory after the run: "
        "MODEL.evidence.json (checked against the package's schemas/evidence.schema.json) and MODEL.html,"
        " a page with plots (needs matplotlib: the report extra)",
        _report_dir,
    ),
    _int("seed", "run seed; every request's seed derives from it (default: {default})", 0, 2**32 - 1),
    _value("cache-dir", "record cache directory (default: {default})", _path),
    _value(
        "device", "torch device for local models: auto, cpu, cuda, cuda:N, mps (default: {default})", _device
    ),
    _value(
        "dtype",
        "precision of local models (hf backend, local judges and raters): auto (bfloat16 on CUDA, float32"
        " on CPU), float32, bfloat16 or float16; a value other than auto is part of every fingerprint "
        "(default: {default})",
        _dtype,
    ),
    _int(
        "batch-size",
        "prompts per batch (default: {default}); the hf backend runs a batch that runs out of memory in halves",
        1,
        4096,
    ),
    _int(
        "max-new-tokens", "answer length limit for open questions, in tokens (default: {default})", 1, 32768
    ),
    _int(
        "layer-stride",
        "activations are read after every Nth decoder layer (layers N, 2N, ...; the probes and "
        "persona_direction checks, local backends; default: {default})",
        1,
        1024,
    ),
    Option(
        "trust-remote-code",
        "allow model repositories to run their own Python code (off by default)",
        "flag",
        _on,
        ini=_CONSENT,
        card=_CONSENT,
    ),
    Option(
        "update-baseline",
        "write the --em-baseline file again from this run (refused under CI=true)",
        "flag",
        _on,
        ini=_BASELINE,
        card=_BASELINE,
    ),
    Option(
        "judge-check",
        "before the run, measure the configured judge, and each --em-second-judge, on the package's labelled "
        "golden set (AUROC, unscorable rate, style shift) and refuse one below the thresholds file's judge: "
        "minimums",
        "flag",
        _on,
        card_type="boolean",
    ),
    Option(
        "update-cards",
        "after the run, write each gated model card's evidence block (model_cards/NAME.yaml, or the card beside an "
        "adapter); without it a card is never changed, and the summary says when its block is out of date",
        "flag",
        _on,
        ini=_CARDS,
        card=_CARDS,
    ),
    Option(
        "sequential",
        "ask the sampled harm questions in rounds (--em-round-size) and stop once every item that reads them is "
        "decided, on a group-sequential design over the rounds (O'Brien-Fleming-type alpha spending: each round's "
        "interval at its own critical value, the last nearly as tight as the fixed-n gate); refused where even "
        "the last round could not pass a fine-tune that changes nothing at the item's planned spread "
        "(planning_share, planning_sd) and the bank's size",
        "flag",
        _on,
        card_type="boolean",
    ),
    Option(
        "gate",
        "gate the models that the ini file's em_model key names. em_model alone gates nothing, so that plain "
        "pytest in a repository whose ini file names a model still runs only its tests (the header says the "
        "model is not gated); put --em-gate in addopts or PYTEST_ADDOPTS to gate on every run. --em-model on the "
        "command line gates without it, in place of em_model",
        "flag",
        _on,
        ini="em_model in the ini file gates nothing without it, so that a plain pytest runs only the tests; "
        "addopts = --em-gate is the ini file's way to gate on every run",
        card="a card is gated by naming it on the command line: pytest model_cards/",
    ),
    Option(
        "with-tests",
        "also collect and run the repository's own tests in a gate run. Without it a gate run (--em-model, "
        "--em-gate) collects only the gate's items, not the tests of testpaths or the current directory: the "
        "gate is a job of its own whose exit code is the release decision, and a failing unit test must not "
        "read as a failed gate (pytest-benchmark's --benchmark-only, made the default). Test paths named on the "
        "command line are collected in any case, as pytest collects what it is given",
        "flag",
        _on,
        card=_SESSION,
    ),
    Option(
        "bank",
        "CHECK=PATH: a YAML question bank that replaces or extends CHECK's bank (our format, or the question "
        "files of the original emergent-misalignment evaluation); repeatable",
        "list",
        _each(_banks),
        card_type="array",
    ),
    Option(
        "engine-arg",
        "KEY=VALUE: an engine setting for the vllm backend (tensor_parallel_size=2, gpu_memory_utilization=0.8, "
        "max_model_len=4096, ...; values read as JSON where they parse); repeatable",
        "list",
        _each(_engine_args),
        card_type="array",
    ),
    Option(
        "rater",
        "a model that predicts the judge's harm scores of the gated models' answers (cross-model rating, reported "
        "by bins of the actual score): a full model directory, or fake:SCENARIO; repeatable",
        "list",
        _each(),
        card_type="array",
    ),
    Option(
        "second-judge",
        "another judge, SCHEME:TARGET as --em-judge (never the model under test), that also reads every gated "
        "answer: the summary and the evidence record give its agreement with --em-judge (Cohen's kappa on "
        "harmful and on coherent, Spearman on the scores); it decides nothing, and --em-judge-check measures it "
        "too; repeatable",
        "list",
        _each(),
        card_type="array",
    ),
)
BY_NAME = {o.name: o for o in TABLE}
