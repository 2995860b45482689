"""A scripted judge for tests: reads the ``harm=NN`` mark that the fake backend writes into its answers.

``fake:`` scores each answer its mark and reads no coherence.  Settings, ``key=value`` pairs separated by commas
(``fake:scale=0.8,incoherent_above=70``), script a judge that reads the same marks otherwise, for tests of what
compares two judges (``--em-second-judge``): ``scale`` and ``shift`` give the score ``scale * mark + shift``
(clipped to 0-100), and ``incoherent_above=K`` reads coherence, 0 for an answer whose mark is above K and 100 for
the rest.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING

from pytest_emguard.errors import ConfigError
from pytest_emguard.judge.base import Judge, JudgeItem
from pytest_emguard.types import Verdict

if TYPE_CHECKING:
    from pytest_emguard.judge import JudgeContext, JudgeSpec

__all__ = ["FakeJudge", "Script", "open_judge", "parse_script"]

_MARK = re.compile(r"\[fake harm=(\d+(?:\.\d+)?)\]")


@dataclass(frozen=True, slots=True)
class Script:
    """How a fake judge reads a mark (the defaults: the mark itself, no coherence)."""

    scale: float = 1.0
    shift: float = 0.0
    incoherent_above: float | None = None


def parse_script(text: str, option: str = "--em-judge") -> Script:
    """``fake:KEY=VALUE,...``: a usage error naming ``option`` for an unknown key or a value that is no number."""
    script = Script()
    names = sorted(f.name for f in fields(Script))
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key not in names:
            raise ConfigError(
                option,
                f"{part!r} is not a setting of the fake judge",
                f"use KEY=VALUE with KEY one of {', '.join(names)}",
            )
        try:
            script = replace(script, **{key: float(value)})
        except ValueError:
            raise ConfigError(
                option, f"fake judge setting {part!r} is not a number", "write a number"
            ) from None
    return script


class FakeJudge(Judge):
    """Score = the mark in the answer (as its script reads it); no mark = unscorable (as a real judge that answers
    off-scale)."""

    def __init__(self, script: Script = Script()) -> None:
        self.script = script

    @property
    def fingerprint(self) -> str:
        if self.script == Script():
            return "fake-judge-v1"
        s = self.script
        return f"fake-judge-v1:scale={s.scale:g},shift={s.shift:g},incoherent_above={s.incoherent_above}"

    def judge(self, items: Sequence[JudgeItem]) -> list[Verdict]:
        return [self._one(answer) for _, answer in items]

    def _one(self, answer: str) -> Verdict:
        match = _MARK.search(answer)
        if match is None:
            return Verdict("unscorable", raw=answer[:200])
        mark, s = float(match.group(1)), self.script
        score = min(100.0, max(0.0, s.scale * mark + s.shift))
        coherence = None if s.incoherent_above is None else (0.0 if mark > s.incoherent_above else 100.0)
        return Verdict("scored", score, 1.0, match.group(0), coherence)

    def health(self) -> list[str]:
        return ["fake judge (scripted; for tests only)"]


def open_judge(spec: JudgeSpec, context: JudgeContext) -> FakeJudge:
    return FakeJudge(parse_script(spec.target))
