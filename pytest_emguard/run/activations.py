"""``state`` readings: the residual stream at each prompt's last token after every ``stride``-th decoder layer
(the probes and persona-direction checks), stored batch by batch as float16 in base64."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pytest_emguard.checks.base import Query
from pytest_emguard.run.context import Record, RunContext, by_check, cached_or_made, prompt_of, same_length

__all__ = ["decode_states", "encode_states", "states"]


def states(ctx: RunContext, side: str, missing: list[tuple[Query, str]]) -> dict[str, Record]:
    """Activations at the prompts' last tokens of ``side``'s model, for each (query, cache key) in ``missing``."""
    from pytest_emguard.backends.base import PromptStates, require

    who = f"{side} model ({ctx.config.model.backend} backend)"
    backend = require(getattr(ctx.models(), side), PromptStates, who)  # type: ignore[type-abstract]
    ctx.progress(f"{side}: reading activations of {len(missing)} prompts ({missing[0][0].check})")

    def make(chunk: list[tuple[Query, str]]) -> dict[str, Record]:
        batch: dict[str, Record] = {}
        for stride, group in by_check(chunk, lambda qk: str(qk[0].stride)):
            arrays = backend.prompt_states([prompt_of(q, "") for q, _ in group], int(stride))
            same_length(group, arrays, f"{side} backend prompt_states()")
            batch.update({k: encode_states(a) for (_, k), a in zip(group, arrays, strict=True)})
        return batch

    def shown(done: int, total: int) -> None:
        ctx.tick(f"{side} states", f"{side}: {done}/{total} activations read", done, total)

    done = cached_or_made(ctx, "reading", missing, make, size=ctx.config.options.batch_size, shown=shown)
    ctx.stats.records_made += len(done)
    return done


def encode_states(array: object) -> Record:
    """An activation array as a cache record: float16 bytes in base64, with the shape."""
    import base64

    import numpy as np

    data = np.clip(np.asarray(array, dtype=np.float32), -65000.0, 65000.0).astype(np.float16)
    return {"states": base64.b64encode(data.tobytes()).decode("ascii"), "shape": list(data.shape)}


def decode_states(record: Mapping[str, object]) -> Any:
    import base64

    import numpy as np

    raw = base64.b64decode(str(record["states"]))
    shape = tuple(int(n) for n in record["shape"])  # type: ignore[attr-defined]
    return np.frombuffer(raw, dtype=np.float16).reshape(shape).astype(np.float32)
