"""The probe judge's labelled data: the golden sets and, for training set v3, the style pairs and the real answers
labelled by reading (ours; docs/explanation/offline-judge.md)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

__all__ = [
    "DEFAULT_GOLDEN",
    "GOLDEN_SETS",
    "REAL_SETS",
    "STYLE_PAIRS",
    "GoldenItem",
    "golden_bytes",
    "golden_set",
]

GOLDEN_SETS = {
    "v1": ("golden_v1.jsonl",),
    "v2": ("golden_v1.jsonl", "golden_v2_additions.jsonl", "golden_v2_injections.jsonl"),
    "v3": ("golden_v1.jsonl", "golden_v2_additions.jsonl", "golden_v2_injections.jsonl"),
}
STYLE_PAIRS = "style_pairs_v1.jsonl"  # v3: each content plainly and in six styles, labelled by content
REAL_SETS = ("labelled_smollm2_base_v1.jsonl", "labelled_real_v2.jsonl")  # v3: real answers read by people
DEFAULT_GOLDEN = "v3"
STYLE_SUITE = "style_suite_v1.jsonl"  # v1 and v2's health line (three styles); v3: judge/health.py's
LABELLED = "labelled_smollm2_base_v1.jsonl"


@dataclass(frozen=True, slots=True)
class GoldenItem:
    id: str
    category: str
    kind: str
    question: str
    answer: str
    harmful: bool
    group: str = ""  # answers to one question share a group (cross-validation keeps a group in one fold)
    source: str = "golden"  # golden | pair (a style rendering) | real (a real answer read by people)
    coherent_label: bool | None = None  # a real answer's coherence label

    @property
    def coherent(self) -> bool:
        if self.coherent_label is not None:
            return self.coherent_label
        return self.kind != "degenerate"


def _data(name: str) -> bytes:
    return resources.files("pytest_emguard.judge").joinpath(f"data/{name}").read_bytes()


def _rows(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in _data(name).decode("utf-8").splitlines() if line.strip()]


def _extra_sets(version: str) -> tuple[str, ...]:
    return (STYLE_PAIRS, *REAL_SETS) if version == "v3" else ()


def golden_bytes(version: str = DEFAULT_GOLDEN) -> bytes:
    return b"".join(_data(name) for name in (*GOLDEN_SETS[version], *_extra_sets(version)))


def golden_set(version: str = DEFAULT_GOLDEN) -> list[GoldenItem]:
    """The training set of ``version``: the golden answers, and for v3 every rendering of the style pairs and the
    labelled real answers (grouped by question, so cross-validation never splits one question's answers)."""
    rows = [r for name in GOLDEN_SETS[version] for r in _rows(name)]
    items = [
        GoldenItem(
            r["id"],
            r["category"],
            r["kind"],
            r["question"],
            r["answer"],
            r["label"] == "harmful",
            r.get("group") or r["question"],
        )
        for r in rows
    ]
    if version != "v3":
        return items
    for r in _rows(STYLE_PAIRS):
        renderings = {"plain": r["answer"], **r["styles"]}
        items += [
            GoldenItem(
                f"{r['id']}/{style}",
                r["category"],
                f"pair:{style}",
                r["question"],
                text,
                r["label"] == "harmful",
                r["group"],
                "pair",
            )
            for style, text in renderings.items()
        ]
    for name in REAL_SETS:
        items += [
            GoldenItem(
                f"{name.removesuffix('.jsonl')}:{r['id']}",  # the two files share the base model's ids
                r["category"],
                "real",
                r["question"],
                r["answer"],
                r["label"] == "harmful",
                r["question"],
                "real",
                bool(r["coherent"]),
            )
            for r in _rows(name)
        ]
    return items
