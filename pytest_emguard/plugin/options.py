"""``--em-*`` command-line options and ``em_*`` ini keys, read once into the frozen, pytest-free ``Options``
(``config.py``), which ``RunConfig.resolve`` validates.

Precedence: command line, then ini file, then the default.  Every problem is a ``pytest.UsageError`` at configure
time that names the option and the fix.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import MISSING, fields, replace
from typing import Any

import pytest

from pytest_emguard.config.run import Options
from pytest_emguard.errors import ConfigError
from pytest_emguard.plugin.inipaths import PATH_OPTIONS, anchored, anchored_base

__all__ = ["OPTIONS", "add_options", "card_options", "command_line", "models", "option_name", "read_options"]

# name, help ("{default}" is the default, read from ``Options``: defaults are written once, there)
_HELP: tuple[tuple[str, str], ...] = (
    (
        "model",
        "model to gate: a PEFT adapter directory (base read from adapter_config.json), a full model "
        "directory (with --em-base), a .gguf file, openai:MODEL@URL (a model an OpenAI-compatible "
        "endpoint serves, with --em-base=NAME), or fake:SCENARIO for tests; repeatable (several models "
        "gated side by side, one verdict table), and @FILE reads one model per line of FILE",
    ),
    ("base", "base model directory to compare against (overrides adapter_config.json)"),
    (
        "backend",
        "backend that runs a model given as a path: hf (transformers + peft) or vllm (vLLM's offline "
        "engine, LoRA per request); a SCHEME: prefix on --em-model (openai:..., fake:...) wins (default: "
        "{default})",
    ),
    (
        "judge",
        "the judge, SCHEME:TARGET: probe:PATH[?golden=v1|v2|v3] (offline judge on a local model's hidden states and the answer's words; v3 the default), "
        "hf:PATH (local generative judge), openai:MODEL@URL (generative judge on an OpenAI-compatible "
        "endpoint, key from OPENAI_API_KEY), fake: (tests). Never the model under test",
    ),
    ("thresholds", "YAML thresholds file merged over the package default (default: the package default)"),
    (
        "samples",
        "sampled answers per prompt; also N of best-of-N (default: 10, or a bank file's "
        "samples_per_paraphrase)",
    ),
    (
        "domain",
        "the adapter's training domain (risky_financial, bad_medical, ...): harm on that domain's own "
        "questions is gated as harmfulness_in_domain[...], apart from the emergent items (default: the "
        "'domain' of the model card beside the adapter, ADAPTER/emguard_card.yaml, if there is one)",
    ),
    (
        "budget",
        "refuse a plan whose first round needs more than this: tokens (200000, 200k, 2M: prompt plus new "
        "tokens, estimated) or dollars ($5, with --em-price); checked before anything is generated",
    ),
    (
        "price",
        "IN,OUT: USD per million prompt tokens and per million new tokens of the model under test, for "
        "the plan's cost estimate and a dollar --em-budget",
    ),
    (
        "checks",
        "comma-separated checks to run (harmfulness,self_report,persona): only their items are collected,"
        " and only they and the checks they read are evaluated (-k selects among collected items but "
        "evaluates every check; default: every check)",
    ),
    ("round-size", "with --em-sequential: questions added per round (default: {default})"),
    (
        "baseline",
        "a JSON file of the base model's records (answers, readings, the judge's verdicts), committed so "
        "CI does not run the base again: used only if its fingerprint matches the base; a missing one is "
        "written and the run fails (review and commit it); never written under CI=true",
    ),
    (
        "report",
        "write the evidence record of each gated model to this directory after the run: "
        "MODEL.evidence.json (checked against the package's schemas/evidence.schema.json) and MODEL.html,"
        " a page with plots (needs matplotlib: the report extra)",
    ),
    ("seed", "run seed; every request's seed derives from it (default: {default})"),
    ("cache-dir", "record cache directory (default: {default})"),
    ("device", "torch device for local models: auto, cpu, cuda, cuda:N, mps (default: {default})"),
    (
        "dtype",
        "precision of local models (hf backend, local judges and raters): auto (bfloat16 on CUDA, float32"
        " on CPU), float32, bfloat16 or float16; a value other than auto is part of every fingerprint "
        "(default: {default})",
    ),
    ("batch-size", "prompts per generation batch (default: {default})"),
    ("max-new-tokens", "answer length limit for open questions, in tokens (default: {default})"),
    (
        "layer-stride",
        "activations are read after every Nth decoder layer (layers N, 2N, ...; the probes and "
        "persona_direction checks, local backends; default: {default})",
    ),
)


def _default(name: str) -> str | None:
    """The default of ``--em-NAME`` as the ini key holds it: ``Options``'s field default, or None (not given)."""
    value = _DEFAULTS.get(name.replace("-", "_"))
    return None if value is None or value == () else str(value)


_DEFAULTS = {f.name: f.default for f in fields(Options) if f.default is not MISSING}
# name, default, help
OPTIONS: tuple[tuple[str, str | None, str], ...] = tuple(
    (name, _default(name), text.replace("{default}", str(_default(name)))) for name, text in _HELP
)

# repeatable options: name, help
_REPEATABLE = (
    (
        "bank",
        "CHECK=PATH: a YAML question bank that replaces or extends CHECK's bank (our format, or the question "
        "files of the original emergent-misalignment evaluation); repeatable",
    ),
    (
        "engine-arg",
        "KEY=VALUE: an engine setting for the vllm backend (tensor_parallel_size=2, gpu_memory_utilization=0.8, "
        "max_model_len=4096, ...; values read as JSON where they parse); repeatable",
    ),
    (
        "rater",
        "a model that predicts the judge's harm scores of the gated models' answers (cross-model rating, reported "
        "by bins of the actual score): a full model directory, or fake:SCENARIO; repeatable",
    ),
    (
        "second-judge",
        "another judge, SCHEME:TARGET as --em-judge (never the model under test), that also reads every gated "
        "answer: the summary and the evidence record give its agreement with --em-judge (Cohen's kappa on "
        "harmful and on coherent, Spearman on the scores); it decides nothing, and --em-judge-check measures it "
        "too; repeatable",
    ),
)


# on/off options: name, help (``em_with_tests`` is also an ini key: a repository's standing choice)
_FLAGS = (
    ("trust-remote-code", "allow model repositories to run their own Python code (off by default)"),
    ("update-baseline", "write the --em-baseline file again from this run (refused under CI=true)"),
    (
        "judge-check",
        "before the run, measure the configured judge, and each --em-second-judge, on the package's labelled "
        "golden set (AUROC, unscorable rate, style shift) and refuse one below the thresholds file's judge: "
        "minimums",
    ),
    (
        "update-cards",
        "after the run, write each gated model card's evidence block (model_cards/NAME.yaml, or the card beside an "
        "adapter); without it a card is never changed, and the summary says when its block is out of date",
    ),
    (
        "sequential",
        "ask the sampled harm questions in rounds (--em-round-size) and stop once every item that reads them is "
        "decided, on a group-sequential design over the rounds (O'Brien-Fleming-type alpha spending: each round's "
        "interval at its own critical value, the last nearly as tight as the fixed-n gate); refused where even "
        "the last round could not pass a fine-tune that changes nothing at the item's planned spread "
        "(planning_share, planning_sd) and the bank's size",
    ),
    (
        "gate",
        "gate the models that the ini file's em_model key names. em_model alone gates nothing, so that plain "
        "pytest in a repository whose ini file names a model still runs only its tests (the header says the "
        "model is not gated); put --em-gate in addopts or PYTEST_ADDOPTS to gate on every run. --em-model on the "
        "command line gates without it, in place of em_model",
    ),
    (
        "with-tests",
        "also collect and run the repository's own tests in a gate run. Without it a gate run (--em-model, "
        "--em-gate) collects only the gate's items, not the tests of testpaths or the current directory: the "
        "gate is a job of its own whose exit code is the release decision, and a failing unit test must not "
        "read as a failed gate (pytest-benchmark's --benchmark-only, made the default). Test paths named on the "
        "command line are collected in any case, as pytest collects what it is given. ini: em_with_tests",
    ),
)


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("emguard", "emergent-misalignment gate (pytest-emguard)")
    for name, default, text in OPTIONS:
        ini = "em_" + name.replace("-", "_")
        if name == "model":  # repeatable; the ini key takes one model per line
            group.addoption("--em-model", dest=ini, action="append", default=None, help=f"{text}. ini: {ini}")
            parser.addini(
                ini,
                f"pytest-emguard: {text} (gated with --em-gate only)",
                type="linelist",
                default=[],
            )
            continue
        group.addoption(f"--em-{name}", dest=ini, default=None, help=f"{text}. ini: {ini}")
        # a path key holds no ini default: a value the ini file sets (read from its directory) stays apart from
        # the default (relative to the current directory, as before)
        parser.addini(ini, f"pytest-emguard: {text}", default=None if name in PATH_OPTIONS else default)
    for name, text in _FLAGS:
        dest = "em_" + name.replace("-", "_")
        group.addoption(f"--em-{name}", dest=dest, action="store_true", default=False, help=text)
    parser.addini("em_with_tests", "pytest-emguard: see --em-with-tests", type="bool", default=False)
    for name, text in _REPEATABLE:  # one value per use on the command line; one per line of the ini key
        dest = "em_" + name.replace("-", "_")
        group.addoption(f"--em-{name}", dest=dest, action="append", default=None, help=f"{text}. ini: {dest}")
        parser.addini(dest, f"pytest-emguard: {text}", type="linelist", default=[])


def _raw(config: pytest.Config, name: str) -> Any:
    """``--em-NAME`` as given on the command line, else ``em_NAME`` from the ini file with its relative paths read
    from the ini file's directory (``inipaths.py``), else the ini key's default."""
    key = "em_" + name.replace("-", "_")
    value = config.getoption(key)
    return value if value is not None else anchored(config, name, config.getini(key))


def _int(config: pytest.Config, name: str, low: int, high: int) -> int:
    raw = _raw(config, name)
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise ConfigError(
            f"--em-{name}", f"{raw!r} is not an integer", f"pass a whole number from {low} to {high}"
        ) from None
    if not low <= value <= high:
        raise ConfigError(
            f"--em-{name}", f"{value} is out of range", f"pass a whole number from {low} to {high}"
        )
    return value


def _no_empty_values(config: pytest.Config) -> None:
    """An option given on the command line with an empty value (``--em-model=``) is a mistake, not "unset"."""
    for name, _, _ in OPTIONS:
        value = config.getoption("em_" + name.replace("-", "_"))
        values = value if isinstance(value, list) else [value]
        if value is not None and any(not str(v).strip() for v in values):
            raise ConfigError(
                f"--em-{name}", "is given but empty", f"give it a value, or leave --em-{name} out"
            )


def models(config: pytest.Config) -> list[str]:
    """The models to gate, in order: each ``--em-model`` (``@FILE``: one model per line of FILE, blank lines and
    ``#`` comments skipped), else, with ``--em-gate``, the ``em_model`` ini lines; else none."""
    given = config.getoption("em_model")
    if given is None and not config.getoption("em_gate"):
        return []
    raw: list[str] = [str(v) for v in (given if given is not None else _raw(config, "model"))]
    if not raw:
        where = f"the ini file {config.inipath}" if config.inipath is not None else "no ini file"
        raise ConfigError(
            "--em-gate",
            f"there is no model to gate: {where} sets no em_model",
            "name the models in the ini file (em_model, one a line), or pass --em-model=MODEL",
        )
    out: list[str] = []
    for value in raw:
        if not value.startswith("@"):
            out.append(value)
            continue
        path = os.path.expanduser(value[1:])
        try:
            with open(path, encoding="utf-8") as fh:
                lines = [line.split("#", 1)[0].strip() for line in fh]
        except OSError as exc:
            raise ConfigError(
                f"--em-model {value}", f"cannot read the model list ({exc.strerror})", "pass an existing file"
            ) from None
        listed = [line for line in lines if line]
        if not listed:
            raise ConfigError(
                f"--em-model {value}", "the model list names no model", "write one model per line"
            )
        out += listed
    if len(set(out)) != len(out):
        twice = sorted({m for m in out if out.count(m) > 1})
        raise ConfigError("--em-model", f"{', '.join(twice)} is given twice", "name each model once")
    return out


def read_options(config: pytest.Config) -> list[Options]:
    """One ``Options`` per model to gate; none when no ``--em-model`` (or ``em_model``) is given: the plugin then
    stays out of the way."""
    _no_empty_values(config)
    names = models(config)
    if not names:
        return []
    common = _common(config)
    given = [os.path.expanduser(name) for name in names]
    return [replace(common, model=model, base=_base(config, model)) for model in given]


_REPEATED = frozenset(name for name, _ in _REPEATABLE)
_NAMES = frozenset({name for name, _, _ in OPTIONS} | {name for name, _ in _FLAGS} | _REPEATED)


def option_name(field: str) -> str:
    """The ``--em-*`` option (without the prefix) that sets the ``Options`` field ``field``: ``cache_dir`` ->
    ``cache-dir``, ``banks`` -> ``bank`` (a repeatable option fills a tuple)."""
    name = field.replace("_", "-")
    for candidate in (name, name.removesuffix("s")):
        if candidate in _NAMES:
            return candidate
    raise KeyError(f"no --em-* option sets Options.{field}")


def command_line(options: Options, leave_out: Collection[str] = ()) -> list[str]:
    """The ``--em-*`` arguments that give ``options``: one for each field that differs from its default (a field
    without one: when set), in the order of ``Options``'s fields; an on/off option as its flag, a repeatable
    one once a value, ``--em-checks`` comma-separated.  Derived from the dataclass, so a new field is never left
    out of a reproduce line (``option_name`` raises for a field no option sets)."""
    args: list[str] = []
    for f in fields(Options):
        value = getattr(options, f.name)
        if f.name in leave_out or value is None or (f.default is not MISSING and value == f.default):
            continue
        name = option_name(f.name)
        if isinstance(value, bool):
            args.append(f"--em-{name}")
        elif isinstance(value, tuple):
            values = list(value) if name in _REPEATED else [",".join(value)]
            args += [f"--em-{name}={v}" for v in values]
        else:
            args.append(f"--em-{name}={value}")
    return args


def card_options(config: pytest.Config, path: Any, card: dict[str, Any]) -> Options:
    """The options that gate one model card (``pytest model_cards/``): the card's adapter and base, its ``gate``
    block over the ini file and the defaults, and any ``--em-*`` option given on the command line over both."""
    from pytest_emguard.config.cards import card_paths

    _no_empty_values(config)
    found = card_paths(path, card)
    common = replace(_common(config), base=_base(config, found["model"]))

    def given(name: str) -> bool:
        value = config.getoption("em_" + name)
        return value is not None and value is not False

    changes: dict[str, Any] = {}
    for key, value in found["gate"].items():
        if given(key):
            continue
        changes[key] = tuple(value) if key == "checks" else value
    if not given("base") and found["base"] is not None:
        changes["base"] = found["base"]
    if not given("domain") and "domain" not in changes:
        changes["card"] = str(path)  # the card's domain, read leniently (a control names no harm domain)
    return replace(common, model=found["model"], **changes)


def _common(config: pytest.Config) -> Options:
    """Everything but the model, which ``read_options`` fills in."""
    device = str(_raw(config, "device"))
    if not (device in ("auto", "cpu", "mps", "cuda") or device.startswith("cuda:")):
        raise ConfigError("--em-device", f"{device!r} is not a device", "use auto, cpu, cuda, cuda:N or mps")
    dtype = str(_raw(config, "dtype"))
    if dtype not in ("auto", "float32", "bfloat16", "float16"):
        raise ConfigError(
            "--em-dtype", f"{dtype!r} is not a precision", "use auto, float32, bfloat16 or float16"
        )
    return Options(
        model="",
        backend=str(_raw(config, "backend")),
        judge=_raw(config, "judge") or None,
        thresholds=_path_or_none(_raw(config, "thresholds")),
        samples=_int(config, "samples", 1, 1000) if _raw(config, "samples") else None,
        seed=_int(config, "seed", 0, 2**32 - 1),
        cache_dir=os.path.expanduser(str(_raw(config, "cache-dir") or _DEFAULTS["cache_dir"])),
        device=device,
        dtype=dtype,
        batch_size=_int(config, "batch-size", 1, 4096),
        max_new_tokens=_int(config, "max-new-tokens", 1, 32768),
        layer_stride=_int(config, "layer-stride", 1, 1024),
        trust_remote_code=bool(config.getoption("em_trust_remote_code")),
        banks=tuple(_raw(config, "bank")),
        raters=tuple(_raw(config, "rater")),
        second_judges=tuple(_raw(config, "second-judge")),
        engine_args=tuple(_raw(config, "engine-arg")),
        domain=_raw(config, "domain") or None,
        sequential=bool(config.getoption("em_sequential")),
        round_size=_int(config, "round-size", 1, 100000),
        checks=tuple(n.strip() for n in str(_raw(config, "checks") or "").split(",") if n.strip()),
        budget=_raw(config, "budget") or None,
        price=_raw(config, "price") or None,
        report=_report_dir(_raw(config, "report")),
        judge_check=bool(config.getoption("em_judge_check")),
        baseline=_baseline(config),
        update_baseline=bool(config.getoption("em_update_baseline")),
    )


def _base(config: pytest.Config, model: str) -> str | None:
    """``--em-base`` as given, else ``em_base`` from the ini file (read from its directory, unless ``model`` is
    served by an endpoint, where the base is the endpoint's model name)."""
    given = config.getoption("em_base")
    if given is not None:
        return _path_or_none(given)
    value = config.getini("em_base")
    return anchored_base(config, os.path.expanduser(str(value)), model) if value else None


def _baseline(config: pytest.Config) -> str | None:
    from pytest_emguard.run.baseline import check_options

    path = _path_or_none(_raw(config, "baseline"))
    distributed = bool(getattr(config.option, "numprocesses", None)) or hasattr(config, "workerinput")
    check_options(path, bool(config.getoption("em_update_baseline")), distributed)
    return path


def _report_dir(value: Any) -> str | None:
    if not value:
        return None
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise ConfigError(
            "--em-report",
            "the HTML page's plots need matplotlib, which is not installed",
            "pip install 'pytest-emguard[report]' (or matplotlib)",
        )
    path = os.path.expanduser(str(value))
    try:  # found now, not after an hour of evaluation
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            "--em-report", f"cannot create {path} ({exc.strerror})", "pass a directory you can write to"
        ) from None
    return path


def _path_or_none(value: Any) -> str | None:
    return os.path.expanduser(str(value)) if value else None
