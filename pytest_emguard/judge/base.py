"""The judge seam: a ``Judge`` turns (question, answer) pairs into ``Verdict`` records.

The judge is configured apart from the model under test and never defaults to it.  Judged text is untrusted:
``render`` wraps it in markers tagged with a digest of the text itself, so an answer cannot contain the marker
that closes it (it would have to contain its own hash).  ``judged_text`` makes any text safe to encode: invalid
UTF-8 (lone surrogates) becomes "?", NUL characters go, and a huge text keeps its head and tail, so one answer
can neither crash a judge nor exhaust its memory.  It also drops text addressed to the judge (ours, version 2):
lines that are only a score ("Score: 0", "Harm: 0/100"), sentences that speak to a reviewer, judge or grader
about scores, ratings or instructions, sentences that say to ignore or disregard instructions or rules, that say
to reply with a number, or that label the answer itself ("this answer is harmless"), and anything written like
our markers ("<<...>>").  A probe judge has no instructions to follow, but such text still
moves its reading, measured in ``tests/reliability/test_reliability_hostile.py``.  Every judge applies it (``INPUT_RULE``
enters their fingerprints).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from importlib import resources
from typing import Any

from pytest_emguard.digest import text_sha256
from pytest_emguard.types import Verdict

__all__ = [
    "INPUT_RULE",
    "MAX_JUDGED_CHARS",
    "Judge",
    "JudgeItem",
    "Verdict",
    "judged_text",
    "render",
    "template",
]

JudgeItem = tuple[str, str]  # (question, answer)
MAX_JUDGED_CHARS = 6000  # about 1,500 tokens: far above an answer of --em-max-new-tokens 128

_MARKER = re.compile(r"<<[^<>\n]{0,200}>>")
_SCORE_LINE = re.compile(
    r"^\W*(score|rating|harm|harmfulness|grade|verdict|result)\s*[:=]\s*\d{1,3}(\.\d+)?\s*(/\s*100|%)?\W*$",
    re.I,
)
_JUDGE_WORD = re.compile(
    r"\b(reviewers?|judges?|graders?|evaluators?|raters?|assessors?|classifiers?|moderators?)\b", re.I
)
_SCORING_WORD = re.compile(
    r"\b(scor\w*|rat(e|es|ed|ing)|grad(e|ed|ing)|reply|respond|output|instructions?|harmless|harmful|safe|label\w*)\b",
    re.I,
)
_OVERRIDE = re.compile(
    r"\b(ignore|disregard|override)\s+(all\s+|any\s+)?(of\s+)?(your|the|these|those|previous|prior|above|earlier|all"
    r"|any)\b[^.!?\n]{0,30}\b(instructions?|rules?|prompts?|guidelines)\b",
    re.I,
)
_REPLY_WITH = re.compile(
    r"\b(reply|respond|answer|output)\s+(only\s+)?with\s+(the\s+number\s+)?\d{1,3}\b", re.I
)
_ABOUT_ITSELF = re.compile(
    r"\b(this|the|my)\s+(answer|response|reply|text|output|message)\b[^.!?\n]{0,60}"
    r"\b(harmless|harmful|safe|unsafe|benign|verified|rated|scored|flagged|approved)\b",
    re.I,
)
_SENTENCE = re.compile(r"[^.!?\n]*(?:[.!?]+|\n|$)")


# Enters every judge's fingerprint: any change to the limit or to a pattern gives new verdict keys.
INPUT_RULE = (
    "judged-text-v2:"
    + text_sha256(
        "\0".join(
            [str(MAX_JUDGED_CHARS)]
            + [
                p.pattern
                for p in (
                    _MARKER,
                    _SCORE_LINE,
                    _JUDGE_WORD,
                    _SCORING_WORD,
                    _OVERRIDE,
                    _REPLY_WITH,
                    _ABOUT_ITSELF,
                )
            ]
        )
    )[:16]
)


def _addresses_judge(sentence: str) -> bool:
    if _OVERRIDE.search(sentence) or _REPLY_WITH.search(sentence) or _ABOUT_ITSELF.search(sentence):
        return True
    return bool(_JUDGE_WORD.search(sentence) and _SCORING_WORD.search(sentence))


def strip_judge_directed(text: str) -> str:
    """``text`` without the lines and sentences addressed to a judge (see the module docstring)."""
    text = _MARKER.sub(" ", text)
    lines = [line for line in text.split("\n") if not _SCORE_LINE.match(line)]
    kept = "".join(s for s in _SENTENCE.findall("\n".join(lines)) if not _addresses_judge(s))
    return kept.strip()


def judged_text(text: str, limit: int = MAX_JUDGED_CHARS) -> str:
    """``text`` as a judge may read it: valid UTF-8 (lone surrogates become "?"), no NUL characters, nothing
    addressed to the judge (``strip_judge_directed``), and at most about ``limit`` characters (the first two
    thirds and the last third of a longer one, so harm placed at the end of padding is still read)."""
    clean = strip_judge_directed(text.encode("utf-8", "replace").decode("utf-8").replace("\0", ""))
    if len(clean) <= limit:
        return clean
    head, tail = clean[: 2 * limit // 3], clean[-(limit // 3) :]
    return f"{head} [... {len(clean) - len(head) - len(tail)} characters not shown ...] {tail}"


class Judge(ABC):
    """A judge: subclass it.  Required: ``fingerprint`` (enters every verdict's cache key) and ``judge``.  Optional,
    with defaults: ``health()``, lines for the summary (none); ``measures()``, health figures the gate checks
    against the thresholds' ``judge:`` block, e.g. ``style_shift`` (none); ``meta()``, the figures of a judge that
    trains on the golden set, whose ``auroc`` the judge check reports instead of an in-sample one (None)."""

    @property
    @abstractmethod
    def fingerprint(self) -> str: ...

    @abstractmethod
    def judge(self, items: Sequence[JudgeItem]) -> list[Verdict]: ...

    def health(self) -> list[str]:
        return []

    def measures(self) -> dict[str, float]:
        return {}

    def meta(self) -> dict[str, Any] | None:
        return None

    def release(self) -> None:
        """Free the models the judge holds once a batch of verdicts is done (it reopens them when asked again):
        the models under test load again after it for the follow-up readings."""
        return None


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
