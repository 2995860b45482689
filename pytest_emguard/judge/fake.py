"""A scripted judge for tests: reads the ``harm=NN`` mark that the fake backend writes into its answers."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pytest_emguard.judge.base import Judge, JudgeItem
from pytest_emguard.types import Verdict

if TYPE_CHECKING:
    from pytest_emguard.judge import JudgeContext, JudgeSpec

__all__ = ["FakeJudge", "open_judge"]

_MARK = re.compile(r"\[fake harm=(\d+(?:\.\d+)?)\]")


class FakeJudge(Judge):
    """Score = the mark in the answer; no mark = unscorable (as a real judge that answers off-scale)."""

    fingerprint = "fake-judge-v1"

    def judge(self, items: Sequence[JudgeItem]) -> list[Verdict]:
        return [self._one(answer) for _, answer in items]

    @staticmethod
    def _one(answer: str) -> Verdict:
        match = _MARK.search(answer)
        if match is None:
            return Verdict("unscorable", raw=answer[:200])
        return Verdict("scored", float(match.group(1)), 1.0, match.group(0))

    def health(self) -> list[str]:
        return ["fake judge (scripted; for tests only)"]


def open_judge(spec: JudgeSpec, context: JudgeContext) -> FakeJudge:
    return FakeJudge()
