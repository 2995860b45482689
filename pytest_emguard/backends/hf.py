"""The ``hf`` backend: transformers + peft, local weights, batched left-padded generation.

Base and fine-tune share one loaded model: the fine-tune is the base wrapped by ``PeftModel``, and the base
answers under ``disable_adapter()``.  Sampling is seeded per request (each row draws from its own
``torch.Generator``), so an answer does not depend on which batch it fell into, and base and fine-tune see the
same random stream for the same request (common random numbers for the paired test).
Only safetensors are loaded; ``trust_remote_code`` stays off unless the user opts in.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from pytest_emguard.backends.base import (
    BackendOptions,
    ModelPair,
    ModelSpec,
    digest_files,
    dtype_key,
    resolve_device,
)
from pytest_emguard.backends.hf_model import (
    LoadedModel,
    RowSampler,
    by_size,
    chat_text,
    common_length,
    decoder_layers,
    head_length,
    in_halves,
)
from pytest_emguard.digest import json_sha256
from pytest_emguard.errors import ModelError
from pytest_emguard.types import Completion, Message, Prompt, Request, Sampling

if TYPE_CHECKING:
    import torch

T = TypeVar("T")

__all__ = [
    "HFBackend",
    "LoadedModel",
    "chat_text",
    "fingerprints",
    "open_hf_pair",
    "open_one",
    "open_pair",
    "resolve",
]


SHARED_OPENING = 8  # tokens single prompts must share before their common opening runs once


class HFBackend:
    """One side (base or fine-tune) of a ``LoadedModel``."""

    def __init__(self, loaded: LoadedModel, *, tuned: bool, fingerprint: str) -> None:
        self.loaded, self.tuned, self._fingerprint = loaded, tuned, fingerprint

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def generate(self, requests: Sequence[Request]) -> list[Completion]:
        out: list[Completion] = []
        for sampling, group in _runs(requests):
            out.extend(in_halves(functools.partial(self._generate_batch, sampling=sampling), group))
        return out

    def _generate_batch(self, requests: Sequence[Request], sampling: Sampling) -> list[Completion]:
        import torch
        from transformers import LogitsProcessorList

        lm = self.loaded
        batch = lm.encode([lm.chat_text(r.messages) for r in requests])
        eos = lm.eos_ids()
        kwargs: dict[str, Any] = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        # the last position's logits only (transformers sets this itself, but not through a peft model): the
        # prompt's full logits are rows x tokens x vocabulary
        kwargs["logits_to_keep"] = 1
        if sampling.temperature > 0:
            gens = [torch.Generator().manual_seed(r.seed % (2**63)) for r in requests]
            kwargs["logits_processor"] = LogitsProcessorList([RowSampler(gens, sampling)])
        with torch.inference_mode(), lm.variant(self.tuned):
            output = lm.model.generate(
                **batch,
                max_new_tokens=sampling.max_new_tokens,
                eos_token_id=eos,
                pad_token_id=lm.tokenizer.pad_token_id,
                **kwargs,
            )
        new = output[:, batch["input_ids"].shape[1] :]
        return [self._completion(row.tolist(), eos, sampling.max_new_tokens) for row in new]

    def _completion(self, ids: list[int], eos: list[int], limit: int) -> Completion:
        stop = next((i for i, t in enumerate(ids) if t in eos), None)
        kept = ids if stop is None else ids[:stop]
        text = self.loaded.tokenizer.decode(kept, skip_special_tokens=True)
        return Completion(text.strip(), len(kept), "length" if stop is None and len(ids) >= limit else "stop")

    def next_token_logprobs(self, prompts: Sequence[Prompt], top_k: int = 20) -> list[dict[str, float]]:
        """Top-k next-token log-probabilities after each prompt (a batch that runs out of memory is read in
        halves: ``in_halves``)."""
        return in_halves(lambda part: self._next_token_logprobs(part, top_k), prompts)

    def _next_token_logprobs(self, prompts: Sequence[Prompt], top_k: int) -> list[dict[str, float]]:
        """Top-k next-token log-probabilities after each prompt.

                Prompts that share their chat and differ only in a short answer prefix (the steps of a digit tree), or
                share every message but the last (a role-play persona's system prompt, asked about 20 items), run their
                common head once and then only their own last tokens.  The states of each prompt's chat (the tokens
                before its answer prefix) are kept for the next call (``HeadCache``), so the next step of a digit tree
                runs only its prefix.  Prompts without a prefix that share no messages but open alike (a template's default
        system prompt) run that opening once; the rest run as one left-padded batch."""
        import torch

        lm = self.loaded
        tok = lm.tokenizer
        ids = [
            tok(lm.chat_text(p.messages, p.prefix), add_special_tokens=False)["input_ids"] for p in prompts
        ]
        groups: dict[tuple[Message, ...], list[int]] = {}
        for i, p in enumerate(prompts):
            groups.setdefault(p.messages[:-1] if len(p.messages) > 1 else p.messages, []).append(i)
        single = [idx[0] for idx in groups.values() if len(idx) == 1 and not prompts[idx[0]].prefix]
        shared = [idx for idx in groups.values() if len(idx) > 1 or prompts[idx[0]].prefix]
        chats: dict[tuple[Message, ...], list[int]] = {}
        natural: dict[int, tuple[int, ...]] = {}  # a prompt's chat before its answer prefix, as its tokens
        for i in (i for idx in shared for i in idx):
            messages = prompts[i].messages
            if messages not in chats:
                chats[messages] = tok(lm.chat_text(messages), add_special_tokens=False)["input_ids"]
            natural[i] = tuple(ids[i][: min(common_length([chats[messages], ids[i]]), len(ids[i]) - 1)])
        # prompts that share nothing as messages may still share their first tokens: a chat template's default
        # system prompt (SmolLM2's, Qwen2.5's) opens every single-turn prompt; that head runs once (and is kept)
        opening: tuple[int, ...] = ()
        if len(single) > 1 and head_length([ids[i] for i in single]) >= SHARED_OPENING:
            opening = tuple(ids[single[0]][: head_length([ids[i] for i in single])])
            natural.update((i, ()) for i in single)  # no chat state of their own to keep
        logits: list[torch.Tensor | None] = [None] * len(prompts)
        cache = lm.heads
        with torch.inference_mode(), lm.variant(self.tuned):
            if single and not opening:
                batch = lm.encode([lm.chat_text(prompts[i].messages, prompts[i].prefix) for i in single])
                rows = lm.model(**batch, logits_to_keep=1).logits[:, -1, :].float()
                for i, row in zip(single, rows, strict=True):
                    logits[i] = row
            seen = {chat: cache.get(self.tuned, chat) for chat in {natural[i] for idx in shared for i in idx}}
            jobs: list[tuple[int, tuple[int, ...], Any]] = []  # (prompt, head, the head's states)
            fresh = []
            for idx in shared:
                if all(
                    natural[i] and seen[natural[i]] is not None for i in idx
                ):  # read before: a tree's step
                    jobs += [(i, natural[i], seen[natural[i]]) for i in idx]
                else:
                    fresh.append(idx)
            heads = [  # the shared tokens, but no further than the chat: a tree's steps then find its states
                tuple(ids[idx[0]][: min(head_length([ids[i] for i in idx]), *(len(natural[i]) for i in idx))])
                for idx in fresh
            ]
            if opening:
                fresh.append(single)
                heads.append(opening)
            for idx, head, state in zip(fresh, heads, self._head_states(heads), strict=True):
                jobs += [(i, head, state) for i in idx]
            # tails of like length in one pass: less padding
            jobs.sort(key=lambda job: len(ids[job[0]]) - len(job[1]))
            for chunk in by_size(jobs, lambda job: len(ids[job[0]])):
                rows, past, width = self._tail_logits(
                    [(ids[i][len(head) :], state) for i, head, state in chunk]
                )
                for k, (i, head, _) in enumerate(chunk):
                    logits[i] = rows[k]
                    end = len(natural[i])
                    if end > len(head) and seen[natural[i]] is None:  # keep the chat for its tree's next step
                        lo = width - len(head)
                        kept = [(layer.keys[k : k + 1, :, lo : lo + end].clone(), layer.values[k : k + 1, :, lo : lo + end].clone()) for layer in past.layers]  # fmt: skip
                        cache.put(self.tuned, natural[i], kept)
                        seen[natural[i]] = kept
        stacked = torch.stack([row for row in logits if row is not None])
        logprobs = torch.log_softmax(stacked, dim=-1)
        values, index = torch.topk(logprobs, k=min(top_k, logprobs.shape[-1]), dim=-1)
        decode = lm.tokenizer.decode
        return [
            _merge_tokens((decode([int(i)]), float(v)) for i, v in zip(ids_, vals, strict=True))
            for ids_, vals in zip(index.tolist(), values.tolist(), strict=True)
        ]

    def _head_states(self, heads: Sequence[tuple[int, ...]]) -> list[Any]:
        """Each head's key/value states (one tensor pair per layer, batch 1), from the cache or from one
        left-padded pass over the heads not in it (positions counted from each head's first real token, so a
        state does not depend on the padding it was computed with); None for an empty head."""
        import torch

        lm, cache = self.loaded, self.loaded.heads
        found = {h: cache.get(self.tuned, h) for h in set(heads) if h}
        todo = sorted((h for h, state in found.items() if state is None), key=len)
        for start in range(0, len(todo), 16):
            chunk = todo[start : start + 16]
            width = len(chunk[-1])
            pad = lm.tokenizer.pad_token_id or 0
            input_ids = torch.tensor([[pad] * (width - len(h)) + list(h) for h in chunk], device=lm.device)
            mask = torch.tensor([[0] * (width - len(h)) + [1] * len(h) for h in chunk], device=lm.device)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            out = lm.model(
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=positions,
                use_cache=True,
                logits_to_keep=1,
            )
            layers = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
            for row, head in enumerate(chunk):
                kept = [(k[row : row + 1, :, width - len(head) :].clone(), v[row : row + 1, :, width - len(head) :].clone()) for k, v in layers]  # fmt: skip
                cache.put(self.tuned, head, kept)
                found[head] = kept
        return [found[h] if h else None for h in heads]

    def _tail_logits(self, rows: Sequence[tuple[Sequence[int], Any]]) -> tuple[list[torch.Tensor], Any, int]:
        """Last-position logits of token rows that each continue a head whose states are given (None: no head),
        in one pass: the heads' states are left-padded to one width, each row's tokens right-padded, positions
        counted from each head's start.  Returns the logits, the states of the pass (a row's own states lie
        between width - its head's length and the end of its tokens) and that width."""
        import torch
        from transformers import DynamicCache

        lm = self.loaded
        lengths = [0 if state is None else int(state[0][0].shape[2]) for _, state in rows]
        width, span = max(lengths), max(len(t) for t, _ in rows)
        pad = lm.tokenizer.pad_token_id or 0
        tail_ids = torch.tensor([list(t) + [pad] * (span - len(t)) for t, _ in rows], device=lm.device)
        mask = torch.tensor(
            [
                [0] * (width - n) + [1] * (n + len(t)) + [0] * (span - len(t))
                for n, (t, _) in zip(lengths, rows, strict=True)
            ],
            device=lm.device,
        )
        positions = torch.tensor([[n + j for j in range(span)] for n in lengths], device=lm.device)
        past = None
        if width:
            states = [state for _, state in rows]
            if all(state is states[0] for state in states):  # one head: no copies
                data = [
                    (k.expand(len(rows), -1, -1, -1), v.expand(len(rows), -1, -1, -1)) for k, v in states[0]
                ]
            else:
                data = []
                for layer, (k0, v0) in enumerate(next(s for s in states if s is not None)):
                    keys = k0.new_zeros((len(rows), k0.shape[1], width, k0.shape[3]))
                    values = v0.new_zeros((len(rows), v0.shape[1], width, v0.shape[3]))
                    for r, (n, state) in enumerate(zip(lengths, states, strict=True)):
                        if state is not None:
                            keys[r, :, width - n :] = state[layer][0][0]
                            values[r, :, width - n :] = state[layer][1][0]
                    data.append((keys, values))
            past = DynamicCache(ddp_cache_data=data)
        # the logits of the positions some row ends at, not of every position (the vocabulary projection of
        # every tail token was a quarter of the role-play readings' time)
        ends = sorted({len(t) - 1 for t, _ in rows})
        column = {end: j for j, end in enumerate(ends)}
        out = lm.model(
            input_ids=tail_ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=past,
            use_cache=True,
            logits_to_keep=torch.tensor(ends, device=lm.device),
        )
        logits = [out.logits[k, column[len(t) - 1], :].float() for k, (t, _) in enumerate(rows)]
        return logits, out.past_key_values, width

    def score(self, prompts: Sequence[Prompt], continuations: Sequence[str]) -> list[float]:
        """Sum of log-probabilities of each continuation's tokens (tokenised on their own) after its prompt."""
        pairs = list(zip(prompts, continuations, strict=True))
        return in_halves(lambda part: self._score([p for p, _ in part], [c for _, c in part]), pairs)

    def _score(self, prompts: Sequence[Prompt], continuations: Sequence[str]) -> list[float]:
        import torch

        lm = self.loaded
        tok = lm.tokenizer
        heads = [
            tok(lm.chat_text(p.messages, p.prefix), add_special_tokens=False)["input_ids"] for p in prompts
        ]
        tails = [tok(c, add_special_tokens=False)["input_ids"] for c in continuations]
        rows = [h + t for h, t in zip(heads, tails, strict=True)]
        width = max(len(r) for r in rows)
        pad = tok.pad_token_id or 0
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=lm.device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=lm.device)
        keep = max(len(t) for t in tails) + 1  # the positions that predict a continuation's tokens, no more
        with torch.inference_mode(), lm.variant(self.tuned):
            logits = lm.model(input_ids=ids, attention_mask=mask, logits_to_keep=keep).logits
            logprobs = torch.log_softmax(logits.float(), dim=-1)
        scores = []
        for row, tail in enumerate(tails):
            n = len(tail)
            picked = logprobs[row, keep - n - 1 : keep - 1].gather(-1, ids[row, width - n :, None])
            scores.append(float(picked.sum()))
        return scores

    def pooled_states(
        self, pairs: Sequence[tuple[str, str]], layer: int | Sequence[int], batch_size: int = 16
    ) -> np.ndarray:
        """Mean over the answer's tokens of the hidden state after ``layer`` decoder layers, for (question,
        answer) pairs; for several layers, their means side by side (one pass, which stops after the deepest)."""
        lm, rows = self.loaded, []
        layers = [layer] if isinstance(layer, int) else list(layer)
        tok = lm.tokenizer
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            heads = [lm.chat_text((("user", q),)) for q, _ in chunk]
            n_head = [len(tok(h, add_special_tokens=False)["input_ids"]) for h in heads]
            n_full = [
                len(tok(h + a, add_special_tokens=False)["input_ids"])
                for h, (_, a) in zip(heads, chunk, strict=True)
            ]
            batch = lm.encode([h + a for h, (_, a) in zip(heads, chunk, strict=True)])
            hidden = self._hidden_after(batch, layers)
            for row, (head, full) in enumerate(zip(n_head, n_full, strict=True)):
                n = max(1, full - head)
                rows.append(np.concatenate([h[row, -n:].mean(dim=0).cpu().numpy() for h in hidden]))
        return np.stack(rows).astype(np.float64)

    def prompt_states(self, prompts: Sequence[Prompt], stride: int) -> list[np.ndarray]:
        """The residual stream at each prompt's last token after decoder layers stride, 2 x stride, ... (forward
        hooks on those layers; the pass stops after the last one read), float32."""
        import torch

        lm = self.loaded
        layers = decoder_layers(lm.model)
        if layers is None:
            raise ModelError(
                "hf backend",
                f"cannot find the decoder layers of {type(lm.model).__name__} to read activations from",
                "disable the probes and persona_direction items in the thresholds for this model",
            )
        wanted = list(range(stride - 1, len(layers), stride)) or [len(layers) - 1]
        batch = lm.encode([lm.chat_text(p.messages, p.prefix) for p in prompts])  # left-padded: last = -1
        captured: dict[int, torch.Tensor] = {}

        def hook(index: int) -> Callable[[Any, Any, Any], None]:
            def read(_module: Any, _inputs: Any, output: Any) -> None:
                hidden = output[0] if isinstance(output, tuple) else output
                captured[index] = hidden[:, -1, :].float().cpu()
                if index == wanted[-1]:
                    raise _Stop

            return read

        handles = [layers[i].register_forward_hook(hook(i)) for i in wanted]
        try:
            with torch.inference_mode(), lm.variant(self.tuned):
                lm.model(**batch)
        except _Stop:
            pass
        finally:
            for handle in handles:
                handle.remove()
        stacked = torch.stack([captured[i] for i in wanted], dim=1)  # (prompts, layers, hidden)
        return [row.numpy() for row in stacked]

    def _hidden_after(self, batch: Any, layers: Sequence[int]) -> list[torch.Tensor]:
        """The hidden states after each of ``layers`` decoder layers (0: the embeddings), float32; forward hooks
        on those layers, and the pass stops after the deepest."""
        import torch

        lm = self.loaded
        decoder = decoder_layers(lm.model)
        with torch.inference_mode(), lm.variant(self.tuned):
            if decoder is None or not all(0 < n < len(decoder) for n in layers):
                states = lm.model(**batch, output_hidden_states=True).hidden_states
                return [states[n].float() for n in layers]
            captured: dict[int, torch.Tensor] = {}
            last = max(layers)

            def hook(n: int) -> Callable[[Any, Any, Any], None]:
                def read(_module: Any, _inputs: Any, output: Any) -> None:
                    captured[n] = output[0] if isinstance(output, tuple) else output
                    if n == last:
                        raise _Stop

                return read

            handles = [decoder[n - 1].register_forward_hook(hook(n)) for n in sorted(set(layers))]
            try:
                lm.model(**batch)
            except _Stop:
                pass
            finally:
                for handle in handles:
                    handle.remove()
            return [captured[n].float() for n in layers]


class _Stop(Exception):
    """Raised by a forward hook to end a pass once the wanted layer has run."""


def _merge_tokens(pairs: Iterator[tuple[str, float]]) -> dict[str, float]:
    import math

    merged: dict[str, float] = {}
    for text, logprob in pairs:
        merged[text] = math.log(math.exp(merged[text]) + math.exp(logprob)) if text in merged else logprob
    return merged


def _runs(requests: Sequence[Request]) -> Iterator[tuple[Sampling, list[Request]]]:
    """Consecutive requests with the same sampling parameters (the caller batches and sorts)."""
    group: list[Request] = []
    for request in requests:
        if group and request.sampling != group[0].sampling:
            yield group[0].sampling, group
            group = []
        group.append(request)
    if group:
        yield group[0].sampling, group


def open_hf_pair(
    spec: ModelSpec, fingerprints: tuple[str, str], device: str = "auto", dtype: str = "auto"
) -> ModelPair:
    if spec.kind in ("full", "gguf"):
        base = LoadedModel.load(spec.base_spec(), device, dtype)
        tuned = LoadedModel.load(spec, device, dtype)
        return ModelPair(
            HFBackend(base, tuned=False, fingerprint=fingerprints[0]),
            HFBackend(tuned, tuned=True, fingerprint=fingerprints[1]),
        )
    loaded = LoadedModel.load(spec, device, dtype)
    return ModelPair(
        HFBackend(loaded, tuned=False, fingerprint=fingerprints[0]),
        HFBackend(loaded, tuned=True, fingerprint=fingerprints[1]),
    )


# -- the backend module interface (see backends/__init__.py) ----------------------------------------------------


def resolve(model: str, base: str | None = None, *, trust_remote_code: bool = False) -> ModelSpec:
    return ModelSpec.resolve(model, base, trust_remote_code=trust_remote_code)


def fingerprints(
    spec: ModelSpec, hash_file: Callable[[Path], str], options: BackendOptions
) -> tuple[str, str]:
    """Base and fine-tune fingerprints from file contents (weights, config, chat template), the device and the
    library versions; computed without importing torch."""
    from pytest_emguard.digest import package_versions

    assert spec.base is not None
    env = {
        "backend": "hf",
        "device": resolve_device(options.device),
        **dtype_key(options),
        **package_versions("torch", "transformers", "peft"),
        "sampler": RowSampler.VERSION,
    }
    base = json_sha256({"kind": "fingerprint", **env, "weights": digest_files(Path(spec.base), hash_file)})
    if spec.kind == "adapter":
        adapter = digest_files(Path(spec.path), hash_file, adapter=True)
        fields = {"kind": "fingerprint", "base": base, "adapter": adapter}
        if _effective_dtype(options) != "float32":  # the adapter's weights run in the model's precision
            fields["adapter_dtype"] = "model"
        tuned = json_sha256(fields)
    elif spec.kind == "gguf":
        tuned = json_sha256({"kind": "fingerprint", **env, "gguf": hash_file(Path(spec.path))})
    else:
        tuned = json_sha256(
            {"kind": "fingerprint", **env, "weights": digest_files(Path(spec.path), hash_file)}
        )
    return base, tuned


def _effective_dtype(options: BackendOptions) -> str:
    """The precision a model runs in: ``auto`` is bfloat16 on CUDA, float32 on a CPU (as ``hf_model._dtype``)."""
    if options.dtype != "auto":
        return options.dtype
    return "bfloat16" if resolve_device(options.device).startswith("cuda") else "float32"


def open_pair(spec: ModelSpec, prints: tuple[str, str], options: BackendOptions) -> ModelPair:
    return open_hf_pair(spec, prints, options.device, options.dtype)


def open_one(spec: ModelSpec, fingerprint: str, options: BackendOptions) -> HFBackend:
    """One model on its own (a judge's encoder or generator)."""
    return HFBackend(
        LoadedModel.load(spec, options.device, options.dtype), tuned=False, fingerprint=fingerprint
    )
