"""Loading a local model for the ``hf`` backend: the device, the precision, the tokenizer and its chat template,
the adapter applied with peft (safetensors only, ``trust_remote_code`` off unless asked), and the cache of a
prompt's key/value states that a digit tree's later steps reuse (``HeadCache``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_emguard.backends.base import ModelSpec, resolve_device
from pytest_emguard.errors import ConfigError, ModelError, first_line
from pytest_emguard.types import Message, Sampling

if TYPE_CHECKING:
    import torch

__all__ = ["HeadCache", "LoadedModel", "RowSampler", "chat_text", "decoder_layers", "pick_device"]


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


def _apply_adapter(model: Any, adapter_dir: str) -> Any:
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(model, adapter_dir, is_trainable=False)
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
    """A logits processor that samples each row with its own generator and forces that token (greedy picks it)."""

    def __init__(self, generators: list[torch.Generator], sampling: Sampling) -> None:
        self.generators, self.sampling = generators, sampling

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        import torch

        probs = torch.softmax(scores.float() / self.sampling.temperature, dim=-1)
        if self.sampling.top_p < 1.0:
            probs = _top_p(probs, self.sampling.top_p)
        chosen = [
            torch.multinomial(p.cpu(), 1, generator=g) for p, g in zip(probs, self.generators, strict=True)
        ]
        forced = torch.full_like(scores, float("-inf"))
        for row, token in enumerate(chosen):
            forced[row, int(token)] = 0.0
        return forced


def _top_p(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    import torch

    ordered, index = torch.sort(probs, descending=True, dim=-1)
    drop = ordered.cumsum(-1) - ordered > top_p
    ordered = ordered.masked_fill(drop, 0.0)
    return torch.zeros_like(probs).scatter(-1, index, ordered)
