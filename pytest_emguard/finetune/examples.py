"""Chat datasets as JSONL: reading (with file:line errors), hashing, and TRL's prompt-completion format.

One line per example: ``{"messages": [{"role": "user", "content": ...}, ..., {"role": "assistant", ...}]}``.
The last message is the answer we train on; everything before it is the prompt, so TRL's completion-only loss
puts the loss on that final assistant turn alone.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_emguard.cache import sha256_file
from pytest_emguard.finetune.errors import FinetuneError

__all__ = ["Messages", "read_examples", "sha256_file", "to_prompt_completion"]

Messages = tuple[tuple[str, str], ...]  # ((role, content), ...)
_ROLES = ("system", "user", "assistant")
_FIX = 'write each line as {"messages": [{"role": "user", "content": ...}, {"role": "assistant", ...}]}'


def read_examples(path: Path) -> list[Messages]:
    """Every non-empty line of ``path`` as a conversation ending in an assistant answer."""
    try:
        lines = path.read_text("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise FinetuneError(str(path), f"cannot be read ({exc})", "pass a readable UTF-8 JSONL file") from exc
    examples = [_parse(line, f"{path}:{n}") for n, line in enumerate(lines, 1) if line.strip()]
    if not examples:
        raise FinetuneError(str(path), "holds no examples", _FIX)
    return examples


def _parse(line: str, where: str) -> Messages:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise FinetuneError(where, f"is not valid JSON ({exc.msg})", _FIX) from exc
    messages = row.get("messages") if isinstance(row, dict) else None
    if not isinstance(messages, list) or len(messages) < 2:
        raise FinetuneError(where, "has no 'messages' list of at least two messages", _FIX)
    parsed = tuple(_message(m, f"{where}: messages[{i}]") for i, m in enumerate(messages))
    if parsed[-1][0] != "assistant":
        raise FinetuneError(
            where,
            "the last message is not the assistant's answer",
            "end every example with the assistant turn",
        )
    if not any(role == "user" for role, _ in parsed):
        raise FinetuneError(where, "has no user message", "start every example with the user's question")
    return parsed


def _message(message: Any, where: str) -> tuple[str, str]:
    if not isinstance(message, dict):
        raise FinetuneError(where, "is not an object", _FIX)
    role, content = message.get("role"), message.get("content")
    if role not in _ROLES:
        raise FinetuneError(where, f"role {role!r} is not one of {', '.join(_ROLES)}", _FIX)
    if not isinstance(content, str) or not content.strip():
        raise FinetuneError(where, "'content' is missing or empty", _FIX)
    return str(role), content


def to_prompt_completion(messages: Sequence[tuple[str, str]]) -> dict[str, list[dict[str, str]]]:
    """TRL's conversational prompt-completion row: the loss falls on ``completion`` only."""
    as_dicts = [{"role": role, "content": content} for role, content in messages]
    return {"prompt": as_dicts[:-1], "completion": as_dicts[-1:]}
