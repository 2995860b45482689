"""``--em-rater``: the models that predict the judge's harm scores of the gated answers (cross-model rating,
``run/rating.py``), validated before anything loads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pytest_emguard.errors import ConfigError

__all__ = ["Rater", "parse_rater"]


@dataclass(frozen=True, slots=True)
class Rater:
    """A model that rates other models' answers: ``fake:SCENARIO`` or an ``hf`` model directory."""

    given: str
    scheme: str  # "fake" | "hf"
    target: str

    @property
    def label(self) -> str:
        return self.given if self.scheme == "fake" else Path(self.target).name


def parse_rater(text: str) -> Rater:
    """Validate ``--em-rater`` before anything loads."""
    import os

    where = f"--em-rater {text}"
    if text.startswith("fake:"):
        from pytest_emguard.backends.fake import parse_scenario

        parse_scenario(text.partition(":")[2])
        return Rater(text, "fake", text.partition(":")[2])
    path = Path(os.path.expanduser(text.removeprefix("hf:")))
    if not path.is_dir():
        raise ConfigError(where, f"{path} is not a directory", "give a model directory, or fake:SCENARIO")
    if not (path / "config.json").exists() or not any(path.glob("*.safetensors")):
        raise ConfigError(
            where,
            f"{path} holds no full model (config.json and *.safetensors)",
            "give a full model directory",
        )
    return Rater(text, "hf", str(path))
