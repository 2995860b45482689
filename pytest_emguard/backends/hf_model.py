"""Loading a local model for the ``hf`` backend: the device, the precision, the tokenizer and its chat template,
the adapter applied with peft (safetensors only, ``trust_remote_code`` off unless asked), and the cache of a
prompt's key/value states that a digit tree's later steps reuse (``HeadCache``)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pytest_emguard.backends.base import ModelSpec, resolve_device
from pytest_emguard.errors import ConfigError, ModelError, first_line
from pytest_emguard.types import Message, Sampling

if TYPE_CHECKING:
    import torch

__all__ = [
    "HeadCache",
    "LoadedModel",
    "RowSampler",
    "by_size",
    "chat_text",
    "common_length",
    "decoder_layers",
    "head_length",
    "in_halves",
    "out_of_memory",
    "pick_device",
]

T = TypeVar("T")
R = TypeVar("R")


def pick_device(device: str) -> str:
    """The torch device for ``device`` (``auto`` resolved as in the fingerprint), checked against torch."""
    import torch

    chosen = resolve_device(device)
    if chosen.startswith("cuda") and not torch.cuda.is_available():
        if device == "auto":
            return "cpu"
        raise ConfigError(
            "--em-device", f"{device} was asked for but torch sees no CUDA device", "use --em-device=cpu"
        )
    return chosen


class LoadedModel:
    """A tokenizer and a causal LM (optionally wrapped by peft), loaded once."""

    def __init__(self, model: Any, tokenizer: Any, device: str, has_adapter: bool) -> None:
        self.model, self.tokenizer, self.device, self.has_adapter = model, tokenizer, device, has_adapter
        self.heads = HeadCache()

    @classmethod
    def load(cls, spec: ModelSpec, device: str = "auto", dtype: str = "auto") -> LoadedModel:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = pick_device(device)
        torch_dtype = _dtype(dtype, device)
        source = Path(spec.base if spec.kind == "adapter" and spec.base else spec.path)
        kwargs: dict[str, Any] = {"dtype": torch_dtype, "trust_remote_code": spec.trust_remote_code}
        if spec.kind == "gguf":
            kwargs["gguf_file"] = source.name
            source = source.parent
        else:
            kwargs["use_safetensors"] = True
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            tokenizer = AutoTokenizer.from_pretrained(source, **_tok_kwargs(kwargs))
            model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
        except (OSError, ValueError) as exc:
            raise ModelError(
                str(source),
                f"transformers could not load the model ({first_line(exc)})",
                "check the model files (config.json, weights, tokenizer) and that the installed transformers "
                "version supports this model",
            ) from exc
        _contiguous_head_input(model)
        if spec.kind == "adapter":
            model = _apply_adapter(model, spec.path)
        model.to(device).eval()
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return cls(model, tokenizer, device, spec.kind == "adapter")

    @contextlib.contextmanager
    def variant(self, tuned: bool) -> Iterator[None]:
        if tuned or not self.has_adapter:
            yield
            return
        with self.model.disable_adapter():
            yield

    def chat_text(self, messages: Sequence[Message], prefix: str = "") -> str:
        return chat_text(self.tokenizer, messages, prefix)

    def encode(self, texts: Sequence[str]) -> Any:
        return self.tokenizer(list(texts), return_tensors="pt", padding=True, add_special_tokens=False).to(
            self.device
        )

    def eos_ids(self) -> list[int]:
        ids = self.model.generation_config.eos_token_id
        found = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
        if self.tokenizer.eos_token_id is not None:
            found.add(self.tokenizer.eos_token_id)
        return sorted(found)


class HeadCache:
    """Key/value states of recently read prompt heads, per side (base or fine-tune), least recently used dropped
    first once they hold more than ``limit_bytes``: the steps of a digit tree come in separate calls and
    share their head (the chat up to the answer's prefix)."""

    def __init__(self, limit_bytes: int = 256 * 2**20) -> None:
        from collections import OrderedDict

        self.limit, self.size = limit_bytes, 0
        self._states: OrderedDict[tuple[bool, tuple[int, ...]], list[tuple[Any, Any]]] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, tuned: bool, head: tuple[int, ...]) -> list[tuple[Any, Any]] | None:
        state = self._states.get((tuned, head))
        if state is None:
            self.misses += 1
            return None
        self.hits += 1
        self._states.move_to_end((tuned, head))
        return state

    def put(self, tuned: bool, head: tuple[int, ...], state: list[tuple[Any, Any]]) -> None:
        if (tuned, head) in self._states or self.limit <= 0:  # a limit of 0 keeps nothing
            return
        self._states[(tuned, head)] = state
        self.size += _nbytes(state)
        while self.size > self.limit and len(self._states) > 1:
            _, dropped = self._states.popitem(last=False)
            self.size -= _nbytes(dropped)


def _nbytes(state: list[tuple[Any, Any]]) -> int:
    return sum(k.element_size() * k.nelement() + v.element_size() * v.nelement() for k, v in state)


def chat_text(tokenizer: Any, messages: Sequence[Message], prefix: str = "") -> str:
    """The prompt as the model sees it: its chat template with the generation prompt, then the assistant's
    prefix (a plain "role: text" transcript for a tokenizer without a template).  The vllm backend uses it too,
    so both backends send a model the same text."""
    if getattr(tokenizer, "chat_template", None) is None:
        return "\n".join(f"{role}: {content}" for role, content in messages) + "\nassistant: " + prefix
    chat = [{"role": role, "content": content} for role, content in messages]
    text: str = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    return text + prefix


def _tok_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if k in ("gguf_file", "trust_remote_code")}


def _dtype(dtype: str, device: str) -> torch.dtype:
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def _contiguous_head_input(model: Any) -> None:
    """Hand the output projection a contiguous input.  Its input is a strided view of the last hidden states
    (the positions whose logits are kept), and torch 2.13's bfloat16 ``linear`` on a CPU answers a
    non-contiguous 3-D input by copying the weight once per row: 3.4 GB for 64 rows of SmolLM2's 49,152 x 576
    projection, where the contiguous input needs 13 MB (the bfloat16 demo peaked at 5.2 GB)."""
    head = model.get_output_embeddings()
    if head is None:
        return

    def contiguous(_module: Any, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        if args and hasattr(args[0], "is_contiguous") and not args[0].is_contiguous():
            return (args[0].contiguous(), *args[1:])
        return None

    head.register_forward_pre_hook(contiguous)


def _apply_adapter(model: Any, adapter_dir: str) -> Any:
    from peft import PeftModel

    try:
        # the adapter's weights in the model's precision (as vLLM runs them), not upcast to float32: on a CPU a
        # bfloat16 model with float32 LoRA weights converts every layer's activations back and forth, and read
        # the role-play prompts 13x slower than with bfloat16 LoRA weights (its fingerprint says so: hf.py)
        return PeftModel.from_pretrained(model, adapter_dir, is_trainable=False, autocast_adapter_dtype=False)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelError(
            adapter_dir,
            f"peft could not apply the adapter to its base ({first_line(exc)})",
            "check that --em-base is the model the adapter was trained on",
        ) from exc


def decoder_layers(model: Any) -> Any:
    """The decoder layer list of a Llama/Qwen/Mistral-style causal LM (peft-wrapped or not), or None."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    layers = getattr(getattr(inner, "model", None), "layers", None)
    return layers if layers is not None and hasattr(layers, "__len__") else None


class RowSampler:
    """A logits processor that samples each row with its own generator and forces that token (greedy picks it).

    Inverse-CDF sampling (ours): one uniform draw a row from that row's generator, then one batched cumulative
    sum and search on the logits' device, so a token depends only on its row's seed and distribution (not on the
    batch it runs in).  One ``torch.multinomial`` a row on the CPU, as before, copied every row's distribution
    to the host and took 0.75 ms a row a step on a 49k vocabulary (10% of SmolLM2's generation time on 2 cores;
    on a GPU, a device-to-host copy of the batch's logits at every step)."""

    VERSION = 2  # part of the hf fingerprint: the same seed samples another token under another method

    def __init__(self, generators: list[torch.Generator], sampling: Sampling) -> None:
        self.generators, self.sampling = generators, sampling

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        import torch

        probs = torch.softmax(scores.float() / self.sampling.temperature, dim=-1)
        if self.sampling.top_p < 1.0:
            probs = _top_p(probs, self.sampling.top_p)
        draws = torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in self.generators])
        cdf = probs.double().cumsum(-1)
        targets = (draws.to(cdf.device) * cdf[:, -1]).unsqueeze(-1)
        # the first token whose cumulative mass exceeds the draw: a token of zero probability is never chosen
        chosen = torch.searchsorted(cdf, targets, right=True).clamp_(max=scores.shape[-1] - 1)
        return torch.full_like(scores, float("-inf")).scatter_(-1, chosen, 0.0)


def _top_p(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    import torch

    ordered, index = torch.sort(probs, descending=True, dim=-1)
    drop = ordered.cumsum(-1) - ordered > top_p
    ordered = ordered.masked_fill(drop, 0.0)
    return torch.zeros_like(probs).scatter(-1, index, ordered)


def in_halves(run: Callable[[Sequence[T]], list[R]], items: Sequence[T]) -> list[R]:
    """``run(items)``; where the batch runs out of memory (CUDA's OutOfMemoryError, or the CPU allocator's
    failure), the same items in two halves, each halved again as needed, down to one item: the batch size adapts
    to the memory there is, and the results do not change (each row is seeded and read on its own)."""
    try:
        return run(items)
    except RuntimeError as exc:
        if len(items) < 2 or not out_of_memory(exc):
            raise
    import sys

    half = len(items) // 2
    _free_cached_memory()
    print(
        f"[emguard] out of memory with a batch of {len(items)}: running it in halves of {half} and "
        f"{len(items) - half} (--em-batch-size sets the first try)",
        file=sys.stderr,
        flush=True,
    )
    return in_halves(run, items[:half]) + in_halves(run, items[half:])


def out_of_memory(exc: BaseException) -> bool:
    import torch

    text = str(exc)
    return (
        isinstance(exc, torch.OutOfMemoryError) or "can't allocate memory" in text or "out of memory" in text
    )


def _free_cached_memory() -> None:
    import torch

    from pytest_emguard.backends.base import release_memory

    release_memory()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def by_size(jobs: Sequence[T], tokens: Callable[[T], int], budget: int = 8192) -> Iterator[list[T]]:
    """Consecutive runs of ``jobs`` whose padded size (rows x the longest row's tokens) stays within
    ``budget`` tokens: the key/value states of one pass stay bounded (a few hundred MB on a 135M model in
    float32)."""
    chunk: list[T] = []
    longest = 0
    for job in jobs:
        n = tokens(job)
        if chunk and (len(chunk) + 1) * max(longest, n) > budget:
            yield chunk
            chunk, longest = [], 0
        chunk.append(job)
        longest = max(longest, n)
    if chunk:
        yield chunk


def head_length(rows: Sequence[Sequence[int]]) -> int:
    """The tokens rows share, leaving each at least one of its own."""
    return min(common_length(rows), *(len(r) - 1 for r in rows))


def common_length(rows: Sequence[Sequence[int]]) -> int:
    """The length of the longest prefix every row starts with."""
    length = min(len(r) for r in rows)
    for i in range(length):
        if len({r[i] for r in rows}) > 1:
            return i
    return length
