"""Model cards (``model_cards/<name>.yaml``, one per adapter), checked by ``schemas/model_card.schema.json``.

Gating needs only what it uses: ``adapter``, ``base`` and the ``gate:`` block.  The provenance fields (base
revision, domain, datasets with their sha256, LoRA and training settings, library versions, intended use, time of
training: ``PROVENANCE``) are optional for the gate, which says which are missing; ``python -m pytest_emguard.finetune train``
writes them all and checks them with ``provenance=True``.  The gate adds an ``evidence`` block later.
Import-light: PyYAML, ruamel.yaml and jsonschema load inside the functions that need them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

from pytest_emguard.config.yamlschema import load_schema, read_yaml, schema_problems
from pytest_emguard.errors import ConfigError

__all__ = [
    "CARD_FILE",
    "PROVENANCE",
    "SCHEMA_FILE",
    "adapter_card",
    "card_name",
    "card_paths",
    "load_card",
    "missing_provenance",
    "set_evidence",
    "validate_card",
]

SCHEMA_FILE = "pytest_emguard/schemas/model_card.schema.json"
CARD_FILE = "emguard_card.yaml"  # the card beside an adapter: <adapter>/emguard_card.yaml
_Path = tuple[str, ...]
# where an adapter came from: optional for the gate, all written (and required) by python -m pytest_emguard.finetune train
PROVENANCE = ("base_revision", "domain", "stages", "lora", "training", "versions", "intended_use", "created")
_GATING = ("name", "adapter", "base", "gate")  # what gating reads: its problems are listed first


def adapter_card(adapter: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """The card beside an adapter directory (``CARD_FILE``), validated; None where there is none."""
    path = Path(os.path.expanduser(adapter)) / CARD_FILE
    return (path, load_card(path)) if path.is_file() else None


def load_card(path: str | Path) -> dict[str, Any]:
    """Read and validate one card; every problem is reported at once with its file:line."""

    p = Path(os.path.expanduser(path))
    try:
        text = p.read_text("utf-8")
    except OSError as exc:
        raise ConfigError(
            str(p), f"cannot be read ({exc.strerror})", "pass an existing model card YAML file"
        ) from exc
    data, lines = read_yaml(text, str(p))
    validate_card(data, str(p), lines)
    assert isinstance(data, dict)
    return data


def missing_provenance(card: Mapping[str, Any]) -> list[str]:
    """The provenance fields a card lacks (a hand-written card may hold only ``adapter``, ``base`` and ``gate``)."""
    return [key for key in PROVENANCE if key not in card]


def card_name(path: Path, card: Mapping[str, Any]) -> str:
    """The card's ``name``, else its file name without ``.yaml``."""
    return str(card.get("name") or path.stem)


def validate_card(
    data: Any, filename: str, lines: Mapping[_Path, str] | None = None, *, provenance: bool = False
) -> None:
    """Raise :class:`ConfigError` listing every schema violation (file or file:line, JSON path, fix), the
    problems with what gating reads (``adapter``, ``base``, ``gate``) first.  ``provenance``: also require every
    provenance field (``python -m pytest_emguard.finetune train`` writes cards that hold them all)."""
    schema = load_schema("model_card.schema.json")
    if provenance:
        schema = {**schema, "required": [*schema["required"], *PROVENANCE]}
    found = _adapter_problems(data, filename, lines or {}) + schema_problems(data, schema, lines or {}, filename)
    problems = sorted(found, key=lambda line: not any(_about(line, key) for key in _GATING))
    if problems:
        raise ConfigError(
            filename,
            f"{len(problems)} problem(s) in the model card:\n    " + "\n    ".join(problems),
            f"edit the card as each line says; the schema is {SCHEMA_FILE}",
        )


def _about(problem: str, key: str) -> bool:
    return f"at $.{key}" in problem or f"'{key}' is a required property" in problem


def _adapter_problems(data: Any, filename: str, lines: Mapping[_Path, str]) -> list[str]:
    """A local ``adapter`` directory that does not exist (relative: from the card's directory)."""
    adapter = data.get("adapter") if isinstance(data, dict) else None
    if not isinstance(adapter, str) or not adapter or _scheme(adapter):
        return []
    p = Path(os.path.expanduser(adapter))
    p = p if p.is_absolute() else Path(filename).parent / p
    if p.is_dir():
        return []
    where = lines.get(("adapter",), filename)
    return [f"{where}: at $.adapter: {adapter!r} is no directory ({p}); fix: the path of the directory the trainer "
            "wrote (relative paths are read from the card's directory)"]


def _scheme(model: str) -> bool:
    """A SCHEME: model (fake:SCENARIO, openai:MODEL@URL), which is no path."""
    scheme = model.split(":", 1)[0]
    return ":" in model and scheme.isalpha() and len(scheme) > 1


def card_paths(path: Path, card: Mapping[str, Any]) -> dict[str, Any]:
    """The card's adapter and base with their paths resolved (``~`` expanded, a relative path read from the card's
    directory), its ``domain``, and its ``gate`` block as written: ``plugin/options.card_options`` reads each gate
    value as the option's command-line form, its relative paths from the card's directory (``inipaths.anchored_at``),
    and validates it as the command line's.  A base that is no local directory (a hub id) is left to
    adapter_config.json."""
    here = path.parent

    def local(value: str) -> str:
        p = Path(os.path.expanduser(value))
        return str(p if p.is_absolute() else (here / p).resolve())

    if not card.get("adapter"):
        raise ConfigError(
            str(path), "the card names no adapter", "add 'adapter: DIR' (the directory the trainer wrote)"
        )
    base = local(str(card["base"]))
    adapter = str(card["adapter"])
    return {
        "model": adapter if _scheme(adapter) else local(adapter),
        "base": base if Path(base).is_dir() else None,
        "domain": card.get("domain"),
        "gate": dict(card.get("gate") or {}),
    }


def set_evidence(path: Path, block: Mapping[str, Any]) -> bool:
    """Write ``block`` as the card's top-level ``evidence:`` block with a round-trip YAML editor (ruamel.yaml):
    an existing block is updated in place, so its comments and the order of its keys stay; every line outside
    the block is left as it was, comments after it included (so the diff under review is the evidence alone).
    False where the card already holds exactly this block."""
    import yaml

    from pytest_emguard.digest import atomic_write

    text = path.read_bytes().decode("utf-8")  # read_text's newline translation would rewrite CRLF lines
    data, _ = read_yaml(text, str(path))
    wanted = yaml.safe_load(yaml.safe_dump(dict(block), sort_keys=False))  # plain values, in order
    if isinstance(data, dict) and data.get("evidence") == wanted:
        return False
    lines = [line for line in _LINE_BREAK.split(text) if line]
    newline = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    span = _evidence_span(lines, str(path))
    if span is None:
        if lines and not lines[-1].endswith(("\n", "\r")):
            lines[-1] += newline
        lines.append(_evidence_text("", wanted, newline))
    else:
        lines[span[0] : span[1]] = [_evidence_text("".join(lines[span[0] : span[1]]), wanted, newline)]
    updated = "".join(lines)
    card, _ = read_yaml(updated, str(path))
    validate_card(card, str(path))
    atomic_write(path, updated)
    return True


# the line breaks of YAML as ruamel.yaml counts lines (its line numbers index these lines)
_LINE_BREAK = re.compile(r"(?<=[\n\x85\u2028\u2029])|(?<=\r)(?!\n)")


def _editor() -> Any:
    """A round-trip ruamel.yaml editor (comments, key order, quotes and flow styles kept) that writes new values
    as PyYAML did: None as ``null``, collections of scalars in flow style, lines folded at 100 characters."""
    from ruamel.yaml import YAML
    from ruamel.yaml.representer import RoundTripRepresenter

    class Representer(RoundTripRepresenter):  # a subclass: the null representer stays ours
        pass

    Representer.add_representer(
        type(None), lambda rep, _: rep.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    editor = YAML()
    editor.Representer = Representer
    editor.preserve_quotes = True
    editor.width = 100
    editor.default_flow_style = None
    return editor


def _evidence_span(lines: list[str], filename: str) -> tuple[int, int] | None:
    """The lines of the card's top-level ``evidence`` block (from its key to the next top-level key, less the
    blank lines and column-0 comments before that key), by ruamel.yaml's positions; None where it has none."""
    from ruamel.yaml.error import YAMLError

    try:
        doc = _editor().load("".join(lines))
    except YAMLError as exc:  # what PyYAML lets pass: a key written twice (PyYAML keeps the last)
        mark = getattr(exc, "problem_mark", None)
        where = filename if mark is None else f"{filename}:{mark.line + 1}"
        problem = getattr(exc, "problem", None) or " ".join(str(exc).split())[:200]
        raise ConfigError(
            where,
            f"ruamel.yaml, which writes the evidence block, cannot read the card: {problem}",
            "fix that line (a key written twice: keep the one you mean), then run again",
        ) from None
    keys = list(doc) if isinstance(doc, MutableMapping) else []
    if "evidence" not in keys:
        return None
    if doc.fa.flow_style():
        raise ConfigError(
            filename,
            "the card is one flow mapping ({...}): its evidence block has no lines of its own",
            "write the card in block style, one top-level key a line",
        )
    start = doc.lc.key("evidence")[0]
    at = keys.index("evidence")
    end = doc.lc.key(keys[at + 1])[0] if at + 1 < len(keys) else len(lines)
    while end > start + 1 and _outside(lines[end - 1]):
        end -= 1
    return start, end


def _outside(line: str) -> bool:
    """A line after a top-level block that is no part of it: blank, a column-0 comment, a document marker."""
    return not line.strip() or line.startswith("#") or line.rstrip() in ("...", "---")


def _evidence_text(old: str, block: Mapping[str, Any], newline: str) -> str:
    """The ``evidence:`` block's new text: ``old`` (its text, or "") updated in place to hold ``block``."""
    import io

    editor = _editor()
    doc = editor.load(old) if old else None
    if doc is not None and isinstance(doc.get("evidence"), MutableMapping):
        _update(doc["evidence"], block)
    else:
        doc = {"evidence": dict(block)}
    out = io.StringIO()
    editor.dump(doc, out)
    return out.getvalue().replace("\n", newline)


def _update(node: MutableMapping[str, Any], new: Mapping[str, Any]) -> None:
    """``node`` made equal to ``new``, keeping the comments and the order of the keys it keeps (new keys go
    last); a value that is already equal is left as written."""
    for key in [k for k in node if k not in new]:
        del node[key]
    for key, value in new.items():
        old = node.get(key)
        if isinstance(value, Mapping) and isinstance(old, MutableMapping):
            _update(old, value)
        elif old != value or isinstance(old, bool) != isinstance(value, bool) or key not in node:
            node[key] = value
