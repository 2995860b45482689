"""The judge registry: ``--em-judge=SCHEME:TARGET``, schemes imported lazily.

- ``probe:PATH``: offline linear probe on a local model's hidden states (needs the ``hidden_states`` capability
  of the ``hf`` backend);
- ``hf:PATH``: a local generative judge read from its next-token probabilities (``next_token_logprobs``);
- ``openai:MODEL@URL``: the same on an OpenAI-compatible endpoint (``top_logprobs``; key from ``OPENAI_API_KEY``);
- ``fake:``: scripted, for tests.

Each judge module provides ``open_judge(spec, context) -> Judge``: lazy, its fingerprint known at once, its model
loaded on the first verdict it must compute.  A scheme whose extra is not installed stops with the ``pip
install`` line.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pytest_emguard.backends.base import BackendOptions
from pytest_emguard.errors import ConfigError
from pytest_emguard.judge.base import Judge, JudgeItem
from pytest_emguard.types import Verdict

__all__ = ["JUDGES", "Judge", "JudgeContext", "JudgeEntry", "JudgeItem", "JudgeSpec", "Verdict", "open_judge"]


@dataclass(frozen=True, slots=True)
class JudgeEntry:
    scheme: str
    module: str
    extra: str | None
    imports: tuple[str, ...]
    local_model: bool  # the target is a local model directory


JUDGES: dict[str, JudgeEntry] = {
    "probe": JudgeEntry(
        "probe",
        "pytest_emguard.judge.probe",
        "hf",
        ("torch", "transformers", "sklearn"),
        True,  # offline linear probe on hidden states
    ),
    "hf": JudgeEntry(
        "hf",
        "pytest_emguard.judge.generative",
        "hf",
        ("torch", "transformers"),
        True,  # local generative judge
    ),
    "openai": JudgeEntry(
        "openai",
        "pytest_emguard.judge.generative",
        "openai",
        ("openai",),
        False,  # MODEL@URL: a generative judge on an OpenAI-compatible endpoint
    ),
    "fake": JudgeEntry("fake", "pytest_emguard.judge.fake", None, (), False),  # scripted, for tests
}


@dataclass(frozen=True, slots=True)
class JudgeContext:
    """What a judge may use when it opens: file hashing (cached), a directory for its own artefacts, the options of
    the backend that runs its model, and a progress callback."""

    hash_file: Callable[[Path], str]
    cache_dir: Path
    options: BackendOptions = field(default_factory=BackendOptions)
    progress: Callable[[str], None] = lambda _: None


PARAMS = {"probe": {"golden": ("v1", "v2", "v3")}}  # SCHEME:TARGET?key=value settings a judge accepts


@dataclass(frozen=True, slots=True)
class JudgeSpec:
    scheme: str
    target: str
    params: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @classmethod
    def parse(cls, text: str | None, model: str | None = None, option: str = "--em-judge") -> JudgeSpec:
        """Validate ``--em-judge`` (or ``option``: ``--em-second-judge``) at configure time; the judge never
        defaults to the model under test."""
        if not text:
            raise ConfigError(
                option,
                "no judge given (the judge is never silently the model under test)",
                f"name one, e.g. {option}=probe:PATH_TO_A_LOCAL_MODEL (offline) or {option}=hf:PATH",
            )
        scheme, sep, target = text.partition(":")
        if not sep or scheme not in JUDGES:
            close = difflib.get_close_matches(scheme, list(JUDGES), n=1)
            hint = f"did you mean {close[0]}:? " if close and sep else ""
            raise ConfigError(
                option,
                f"{text!r} has no known scheme",
                f"{hint}write SCHEME:TARGET with SCHEME one of {', '.join(JUDGES)}",
            )
        if scheme == "openai":  # the endpoint's syntax and settings, checked without a request
            from pytest_emguard.backends.openai_compat import Endpoint

            endpoint = Endpoint.parse(target, option)
            if model and model.startswith("openai:") and Endpoint.parse(model[7:], "--em-model") == endpoint:
                raise ConfigError(option, "the judge is the model under test", "use a separate judge model")
            return cls(scheme, target)
        if scheme == "fake":  # its script (fake:scale=0.8,...), checked here
            from pytest_emguard.judge.fake import parse_script

            parse_script(target, option)
            return cls(scheme, target)
        target, _, query = target.partition("?")
        params = _params(scheme, query, option)
        if not JUDGES[scheme].local_model:
            return cls(scheme, target, params)
        path = Path(target).expanduser()
        if not (path / "config.json").exists():
            raise ConfigError(
                option,
                f"{path} is not a local model directory (no config.json)",
                "pass the directory of a local model",
            )
        if model and not model.startswith("fake:") and path.resolve() == Path(model).expanduser().resolve():
            raise ConfigError(option, "the judge is the model under test", "use a separate judge model")
        return cls(scheme, str(path.resolve()), params)

    def entry(self) -> JudgeEntry:
        return JUDGES[self.scheme]


def _params(scheme: str, query: str, option: str = "--em-judge") -> dict[str, str]:
    allowed = PARAMS.get(scheme, {})
    params: dict[str, str] = {}
    for part in filter(None, query.split("&")):
        key, _, value = part.partition("=")
        if key not in allowed or value not in allowed[key]:
            known = "; ".join(f"{k}={'|'.join(v)}" for k, v in allowed.items()) or "none"
            raise ConfigError(option, f"{part!r} is not a setting of the {scheme} judge", f"use: {known}")
        params[key] = value
    return params


def open_judge(spec: JudgeSpec, context: JudgeContext, option: str = "--em-judge") -> Judge:
    from pytest_emguard.backends import import_extra

    entry = spec.entry()
    module = import_extra(entry.module, entry.imports, entry.extra, f"the {spec.scheme} judge ({option})")
    judge: Judge = module.open_judge(spec, context)
    return judge
