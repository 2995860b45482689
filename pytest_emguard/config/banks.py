"""User question banks (``--em-bank CHECK=PATH``): read, validate against a JSON Schema with ``file:line``
errors, and hash.

Two formats are read:

- ours (``bank.schema.json``): a mapping ``{version: 1, mode: replace|extend, questions: [...]}``; each question
  has an ``id``, a ``category``, and a ``text`` or a list of ``paraphrases``, optionally a ``system`` prompt and
  ``samples``;
- the question files of the original emergent-misalignment evaluation (Betley et al.): a YAML list of questions
  with ``id``, ``paraphrases``, an optional ``system`` prompt, ``samples_per_paraphrase`` and ``judge_prompts``,
  often written with YAML anchors and aliases.  Such a file replaces the bank.  Its ``judge_prompts`` are kept
  with the question but not used: the judge is the one named by ``--em-judge``, with its own template.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pytest_emguard.config.yamlschema import load_schema, read_yaml, schema_problems
from pytest_emguard.errors import ConfigError

__all__ = ["Bank", "BankQuestion", "read_bank"]


@dataclass(frozen=True, slots=True)
class BankQuestion:
    id: str
    category: str
    paraphrases: tuple[str, ...]
    system: str | None = None
    samples: int | None = None  # per paraphrase; None = --em-samples

    @property
    def text(self) -> str:
        return self.paraphrases[0]


@dataclass(frozen=True, slots=True)
class Bank:
    path: str
    sha256: str
    mode: Literal["replace", "extend"]
    format: Literal["emguard", "original"]
    questions: tuple[BankQuestion, ...]


def read_bank(path: Path, option: str) -> Bank:
    """Read and validate a question bank; every problem at once, each with its ``file:line``."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            option, f"cannot read {path} ({exc.strerror})", "pass an existing YAML file"
        ) from exc
    name = str(path)
    data, lines = read_yaml(raw.decode("utf-8", errors="replace"), name)
    original = isinstance(data, list)
    schema = load_schema("bank.schema.json")
    sub = schema["$defs"]["original"] if original else schema
    problems = schema_problems(data, {**sub, "$defs": schema["$defs"]}, lines, name)
    if not problems:
        problems = _duplicates(data if original else data["questions"], lines, name, original)
    if problems:
        raise ConfigError(
            name,
            f"{len(problems)} problem(s) in the question bank:\n    " + "\n    ".join(problems),
            "edit the file as each line says; the schema is pytest_emguard/schemas/bank.schema.json",
        )
    sha = hashlib.sha256(raw).hexdigest()
    if original:
        questions = tuple(_original(q) for q in data)
        return Bank(name, sha, "replace", "original", questions)
    return Bank(name, sha, data.get("mode", "replace"), "emguard", tuple(_ours(q) for q in data["questions"]))


def _duplicates(
    rows: list[Mapping[str, Any]], lines: Mapping[tuple[str, ...], str], name: str, original: bool
) -> list[str]:
    seen: set[str] = set()
    out = []
    for i, row in enumerate(rows):
        qid = str(row["id"])
        if qid in seen:
            where = lines.get((str(i), "id") if original else ("questions", str(i), "id"), name)
            out.append(f"{where}: question id {qid!r} appears twice; fix: give every question its own id")
        seen.add(qid)
    return out


def _ours(row: Mapping[str, Any]) -> BankQuestion:
    texts = tuple(row["paraphrases"]) if "paraphrases" in row else (str(row["text"]),)
    return BankQuestion(str(row["id"]), str(row["category"]), texts, row.get("system"), row.get("samples"))


def _original(row: Mapping[str, Any]) -> BankQuestion:
    return BankQuestion(
        str(row["id"]),
        str(row.get("category", "user_bank")),
        tuple(str(p) for p in row["paraphrases"]),
        row.get("system") or None,
        row.get("samples_per_paraphrase"),
    )
