"""Judges, named by scheme in ``--em-judge``: ``probe:PATH`` (offline), ``hf:PATH`` (generative), ``fake:``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pytest_emguard.errors import ConfigError
from pytest_emguard.judge.base import Judge, JudgeItem, Verdict

__all__ = ["SCHEMES", "Judge", "JudgeItem", "JudgeSpec", "Verdict", "open_judge"]

SCHEMES = ("probe", "hf", "fake")


@dataclass(frozen=True, slots=True)
class JudgeSpec:
    scheme: str
    target: str

    @classmethod
    def parse(cls, text: str | None, model: str | None = None) -> JudgeSpec:
        """Validate ``--em-judge`` at configure time; the judge never defaults to the model under test."""
        if not text:
            raise ConfigError(
                "--em-judge",
                "no judge given (the judge is never silently the model under test)",
                "name one, e.g. --em-judge=probe:PATH_TO_A_LOCAL_MODEL (offline) or --em-judge=hf:PATH",
            )
        scheme, sep, target = text.partition(":")
        if not sep or scheme not in SCHEMES:
            raise ConfigError(
                "--em-judge",
                f"{text!r} has no known scheme",
                f"write SCHEME:TARGET with SCHEME one of {', '.join(SCHEMES)}",
            )
        if scheme == "fake":
            return cls(scheme, target)
        path = Path(target).expanduser()
        if not (path / "config.json").exists():
            raise ConfigError(
                "--em-judge",
                f"{path} is not a local model directory (no config.json)",
                "pass the directory of a local model",
            )
        if model and not model.startswith("fake:") and path.resolve() == Path(model).expanduser().resolve():
            raise ConfigError("--em-judge", "the judge is the model under test", "use a separate judge model")
        return cls(scheme, str(path.resolve()))


def open_judge(
    spec: JudgeSpec,
    *,
    hash_file: Callable[[Path], str],
    cache_dir: Path,
    device: str = "auto",
    progress: Callable[[str], None] = lambda _: None,
) -> Judge:
    """A lazy judge: its fingerprint is known at once, its model loads on the first verdict it must compute."""
    if spec.scheme == "fake":
        from pytest_emguard.judge.fake import FakeJudge

        return FakeJudge()
    from pytest_emguard.backends.base import digest_files

    path = Path(spec.target)
    digest = digest_files(path, hash_file)
    if spec.scheme == "probe":
        from pytest_emguard.judge.probe import ProbeJudge

        return ProbeJudge(path, encoder_digest=digest, cache_dir=cache_dir, device=device, progress=progress)
    from pytest_emguard.judge.generative import GenerativeJudge

    return GenerativeJudge(path, digest=digest, device=device, progress=progress)
