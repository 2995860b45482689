"""The judge seam: a ``Judge`` turns (question, answer) pairs into ``Verdict`` records.

The judge is configured apart from the model under test and never defaults to it.  Judged text is untrusted:
``render`` wraps it in markers tagged with a digest of the text itself, so an answer cannot contain the marker
that closes it (it would have to contain its own hash).
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from typing import Protocol, runtime_checkable

from pytest_emguard.digest import text_sha256
from pytest_emguard.types import Verdict

__all__ = ["Judge", "JudgeItem", "Verdict", "render", "template"]

JudgeItem = tuple[str, str]  # (question, answer)


@runtime_checkable
class Judge(Protocol):
    @property
    def fingerprint(self) -> str: ...

    def judge(self, items: Sequence[JudgeItem]) -> list[Verdict]: ...

    def health(self) -> list[str]: ...


def template(name: str) -> str:
    return resources.files("pytest_emguard.judge").joinpath(f"templates/{name}.txt").read_text("utf-8")


def render(text: str, question: str, answer: str) -> str:
    """Fill a judge template; the markers' tag is a digest of the judged text, so it cannot be closed early."""
    tag = text_sha256(f"{question}\0{answer}")[:16]
    return text.format(
        tag=tag,
        open_q=f"<<question {tag}>>",
        close_q=f"<<end of question {tag}>>",
        open_a=f"<<answer {tag}>>",
        close_a=f"<<end of answer {tag}>>",
        question=question,
        answer=answer,
    )
