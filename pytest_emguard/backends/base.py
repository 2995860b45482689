"""The backend seam: what a model is (``ModelSpec``), what we ask of it (``Request``) and the ``Backend`` Protocol.

Everything here is light: no torch, no transformers.  ``ModelSpec.resolve`` does the file checks at configure time
so that bad input fails before any compute is spent, with a message naming the file and the fix.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

from pytest_emguard.errors import ConfigError, ModelError
from pytest_emguard.types import Completion, Prompt, Request

__all__ = [
    "CAPABILITIES",
    "Backend",
    "ContinuationScores",
    "HiddenStates",
    "ModelPair",
    "ModelSpec",
    "NextTokenLogprobs",
    "PartialBatch",
    "PromptStates",
    "digest_files",
    "require",
    "resolve_device",
    "weight_files",
]

ModelKind = Literal["adapter", "full", "gguf", "fake", "api"]

_WEIGHT_GLOBS = ("*.safetensors",)
_PICKLE_GLOBS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")
# the files transformers builds a tokenizer from (the first three name it in messages; the rest are the vocabularies
# that older and sentencepiece tokenizers load from, where a tokenizer_config.json was not saved)
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "spiece.model",
    "tekken.json",
)
_META_FILES = (
    "config.json",
    "adapter_config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "special_tokens_map.json",
)


@runtime_checkable
class Backend(Protocol):
    """A model that answers in batches (one completion per request, in order).  ``fingerprint`` changes
    whenever an answer could change."""

    @property
    def fingerprint(self) -> str: ...

    def generate(self, requests: Sequence[Request]) -> list[Completion]: ...


class PartialBatch(ModelError):
    """Some requests of a batch failed for good; ``done`` holds the results that finished, by position, so that
    the caller stores them before it reports the failure (an API endpoint that gives up mid-batch)."""

    def __init__(self, where: str, problem: str, done: Mapping[int, Any]) -> None:
        super().__init__(where, problem, "rerun: every finished answer is served from the cache")
        self.done = dict(done)


@runtime_checkable
class NextTokenLogprobs(Protocol):
    """Capability ``next_token_logprobs``: the top-k next-token log-probabilities after each prompt (and its
    assistant prefix), token text -> log-probability."""

    def next_token_logprobs(self, prompts: Sequence[Prompt], top_k: int = 20) -> list[dict[str, float]]: ...


@runtime_checkable
class ContinuationScores(Protocol):
    """Capability ``score``: the summed log-probability of each continuation after its prompt."""

    def score(self, prompts: Sequence[Prompt], continuations: Sequence[str]) -> list[float]: ...


@runtime_checkable
class HiddenStates(Protocol):
    """Capability ``hidden_states``: mean over the answer's tokens of the hidden state after ``layer`` decoder
    layers, one row per (question, answer) pair (local backends only)."""

    def pooled_states(
        self, pairs: Sequence[tuple[str, str]], layer: int | Sequence[int], batch_size: int = 16
    ) -> Any: ...


@runtime_checkable
class PromptStates(Protocol):
    """Capability ``activations``: the residual stream at each prompt's last token (the chat template's
    generation prompt and the prompt's prefix included), after decoder layers ``stride``, ``2 x stride``, ... (1-based,
    up to the last layer): one array of shape (layers read, hidden size) per prompt (local backends only)."""

    def prompt_states(self, prompts: Sequence[Prompt], stride: int) -> list[Any]: ...


CAPABILITIES: Mapping[str, type] = {
    "generate": Backend,
    "next_token_logprobs": NextTokenLogprobs,
    "score": ContinuationScores,
    "hidden_states": HiddenStates,
    "activations": PromptStates,
}

T = TypeVar("T")


def require(backend: object, capability: type[T], who: str) -> T:
    """``backend`` as the capability Protocol ``capability``, or a ``ModelError`` naming both."""
    if not isinstance(backend, capability):
        raise ModelError(
            who,
            f"the backend {type(backend).__name__} lacks the {capability.__name__} capability",
            "use a backend that has it (see the backend table in docs/guides/backends.md)",
        )
    return backend


@dataclass(frozen=True, slots=True)
class ModelPair:
    """The model under test and its base; ``close`` frees what they hold."""

    base: Backend
    tuned: Backend
    close: Callable[[], None] = lambda: None


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Which model to gate.  ``resolve`` validates the files; nothing is loaded here."""

    kind: ModelKind
    path: str
    base: str | None = None
    trust_remote_code: bool = False
    backend: str = "hf"  # the registered backend scheme that runs it
    capabilities: frozenset[str] | None = None  # where a model offers less than its backend (an API endpoint)

    @property
    def label(self) -> str:
        return self.path if self.kind != "fake" else f"fake:{self.path}"

    def base_spec(self) -> ModelSpec:
        """The base model as a spec of its own (a full model directory)."""
        assert self.base is not None, "a fake or base-less spec has no base"
        return ModelSpec("full", self.base, None, self.trust_remote_code, self.backend)

    @classmethod
    def resolve(
        cls,
        model: str,
        base: str | None = None,
        *,
        trust_remote_code: bool = False,
        option: str = "--em-model",
    ) -> ModelSpec:
        """A local adapter directory, full model directory or .gguf file, checked on disk."""
        path = Path(os.path.expanduser(model))
        if not path.exists():
            raise ConfigError(
                option,
                f"{path} does not exist",
                "pass an adapter directory, a model directory or a .gguf file",
            )
        if path.is_file():
            if path.suffix != ".gguf":
                raise ConfigError(
                    option, f"{path} is a file but not a .gguf file", "pass a model directory or a .gguf file"
                )
            return cls("gguf", str(path.resolve()), _required_base(base), trust_remote_code)
        if (path / "adapter_config.json").exists():
            spec = cls("adapter", str(path.resolve()), _adapter_base(path, base), trust_remote_code)
            _check_adapter_weights(path, spec.base)
            return spec
        if (path / "config.json").exists():
            _require_safetensors(path)
            resolved = _required_base(base, path)
            _check_weights(path)
            _require_tokenizer(path, "the model directory")
            return cls("full", str(path.resolve()), resolved, trust_remote_code)
        raise ConfigError(
            str(path),
            "neither adapter_config.json (a PEFT adapter) nor config.json (a full model) is in this directory",
            "point --em-model at the directory that save_pretrained() wrote",
        )


def _read_json(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: bad JSON or bad UTF-8
        raise ConfigError(
            str(path), f"cannot be read as JSON ({exc})", "restore the file that save_pretrained() wrote"
        ) from exc
    if not isinstance(data, dict):
        raise ConfigError(str(path), "is not a JSON object", "restore the file that save_pretrained() wrote")
    return data


def _adapter_base(adapter: Path, override: str | None) -> str:
    config = _read_json(adapter / "adapter_config.json")
    _require_safetensors(adapter, adapter=True)
    if override is not None:
        return _resolve_base(override, None)
    named = config.get("base_model_name_or_path")
    if not isinstance(named, str) or not named:
        raise ConfigError(
            str(adapter / "adapter_config.json"),
            "field 'base_model_name_or_path' is missing or empty",
            "pass the base model with --em-base=PATH",
        )
    return _resolve_base(named, str(adapter / "adapter_config.json"))


def _required_base(base: str | None, model: Path | None = None) -> str:
    if base is None:
        what = f"{model} is a full model (not a PEFT adapter)" if model else "a full model or .gguf file"
        raise ConfigError(
            "--em-base",
            f"{what}, which carries no record of its base model",
            "pass the base model to compare against with --em-base=PATH",
        )
    return _resolve_base(base, None)


def _check_weights(directory: Path, *, adapter: bool = False) -> None:
    """Every safetensors file of ``directory`` has a readable header that covers its data (no torch)."""
    from pytest_emguard.config.weights import read_header

    for file in weight_files(directory, adapter=adapter):
        read_header(file)


def _check_adapter_weights(adapter: Path, base: str | None) -> None:
    """The adapter's and the base's headers, every LoRA tensor's rank against adapter_config.json, and every
    LoRA tensor against the base module it adapts."""
    from pytest_emguard.config.weights import check_adapter_fits, check_adapter_rank, check_finite, headers

    files = weight_files(adapter, adapter=True)
    tensors = headers(files)
    for file in files:
        check_finite(file)
    config_file = adapter / "adapter_config.json"
    config = _read_json(config_file)
    check_adapter_rank(tensors, config, config_file=config_file, adapter_file=files[0])
    if base is None or not Path(base).is_dir():
        return
    check_adapter_fits(
        tensors,
        headers(weight_files(Path(base))),
        adapter_file=files[0],
        base_dir=base,
        fan_in_fan_out=bool(config.get("fan_in_fan_out")),
    )


def _resolve_base(base: str, named_in: str | None) -> str:
    """A local directory, or a hub id already in the local Hugging Face cache."""
    path = Path(os.path.expanduser(base))
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ConfigError(
                str(path),
                "the base model directory has no config.json",
                "pass the directory that save_pretrained() wrote",
            )
        _require_safetensors(path)
        _check_weights(path)
        _require_tokenizer(path, "the base model directory")
        return str(path.resolve())
    local = _hub_cache_snapshot(base)
    if local is not None:
        _require_tokenizer(Path(local), "the base model's snapshot in the Hugging Face cache")
        return local
    where = f"{named_in} (field 'base_model_name_or_path')" if named_in else "--em-base"
    raise ConfigError(
        where,
        f"base model {base!r} is neither a local directory nor in the local Hugging Face cache",
        "pass the base model's local directory with --em-base=PATH",
    )


def _require_tokenizer(directory: Path, what: str) -> None:
    """A model directory that the hf and vllm backends load holds its tokenizer (they read it from there): one
    of transformers' tokenizer files, checked before the weights load rather than after."""
    if not any((directory / name).is_file() for name in _TOKENIZER_FILES):
        raise ConfigError(
            str(directory),
            f"{what} has no tokenizer: none of {', '.join(_TOKENIZER_FILES[:2])} or {_TOKENIZER_FILES[2]} is in "
            "it",
            "save the tokenizer of the model it came from into it: "
            f"AutoTokenizer.from_pretrained(ORIGINAL).save_pretrained({str(directory)!r})",
        )
    if not _has_chat_template(directory):
        raise ConfigError(
            str(directory),
            f"{what} has no chat template (no chat_template.jinja, and no 'chat_template' in "
            "tokenizer_config.json): every check asks its questions as a chat, and a pretrained model without "
            "one would read them as plain text",
            "gate the instruct (chat) model, or save the chat template of the model it was trained from into it: "
            f"AutoTokenizer.from_pretrained(ORIGINAL).save_pretrained({str(directory)!r})",
        )


def _has_chat_template(directory: Path) -> bool:
    """A chat template beside the tokenizer: its own file (transformers 4.43+), or in tokenizer_config.json."""
    if (directory / "chat_template.jinja").is_file() or (directory / "chat_template.json").is_file():
        return True
    config = directory / "tokenizer_config.json"
    if not config.is_file():
        return True  # a tokenizer of another form (tokenizer.model, vocab.json, ...): transformers decides
    try:
        return bool(json.loads(config.read_text("utf-8")).get("chat_template"))
    except (OSError, ValueError, AttributeError):
        return True  # unreadable here: transformers' own message when it loads says more


def _hub_cache_snapshot(repo_id: str) -> str | None:
    if repo_id.count("/") != 1 or repo_id.startswith((".", "/")):
        return None
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return None
    try:
        return str(snapshot_download(repo_id, local_files_only=True))
    except Exception:
        return None


def weight_files(directory: Path, *, adapter: bool = False) -> list[Path]:
    names = ("adapter_model.safetensors",) if adapter else ()
    found = [directory / n for n in names if (directory / n).exists()]
    return found or sorted(p for g in _WEIGHT_GLOBS for p in directory.glob(g))


def _require_safetensors(directory: Path, *, adapter: bool = False) -> None:
    if weight_files(directory, adapter=adapter):
        return
    pickles = sorted(p.name for g in _PICKLE_GLOBS for p in directory.glob(g))
    if pickles:
        raise ConfigError(
            str(directory),
            f"only pickle weights found ({', '.join(pickles)}); pickle files can run code when loaded",
            "re-save the model with save_pretrained(..., safe_serialization=True) to get .safetensors files",
        )
    raise ConfigError(
        str(directory),
        "no .safetensors weight files found",
        "point at the directory that save_pretrained() wrote",
    )


def digest_files(directory: Path, hash_file: Callable[[Path], str], *, adapter: bool = False) -> str:
    """sha256 over the weight files' contents and the metadata that changes answers (config, chat template).
    A file linked into a Hugging Face hub cache is not read: its blob's name is its sha256
    (``cache.hub_blob_sha256``, which states what that trusts)."""
    from pytest_emguard.cache import hub_blob_sha256

    digest = hashlib.sha256()
    for path in [*weight_files(directory, adapter=adapter), *(directory / n for n in _META_FILES)]:
        if path.exists():
            digest.update(f"{path.name}\0{hub_blob_sha256(path) or hash_file(path)}\0".encode())
    return digest.hexdigest()


def resolve_device(device: str) -> str:
    """``auto`` resolved without importing torch (it is part of every fingerprint, and a fully cached rerun must
    not load torch): ``cuda`` where an NVIDIA driver shows a GPU and CUDA_VISIBLE_DEVICES does not hide it."""
    if device != "auto":
        return device
    gpus = Path("/proc/driver/nvidia/gpus")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if gpus.is_dir() and any(gpus.iterdir()) and visible not in ("", "-1"):
        return "cuda"
    return "cpu"


def release_memory() -> None:
    """Return the memory of models just dropped to the operating system: ask glibc to trim its heap (freed blocks
    under its mmap threshold stay in the process otherwise, and the next model loads on top of them).  No full
    garbage collection: it took 0.2 s a call and freed nothing measurable.  Elsewhere than glibc: nothing."""
    import contextlib
    import ctypes
    import sys

    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):  # musl, or no libc.so.6
            ctypes.CDLL("libc.so.6").malloc_trim(0)


def dtype_key(options: BackendOptions) -> dict[str, str]:
    """What a fingerprint adds for the precision: nothing for ``auto`` (the device, already in it, decides)."""
    return {} if options.dtype == "auto" else {"dtype": options.dtype}


@dataclass(frozen=True, slots=True)
class BackendOptions:
    """Settings a backend reads when it opens a model (from the run configuration)."""

    device: str = "auto"
    dtype: str = "auto"  # auto: bfloat16 on CUDA, float32 on CPU; any other value goes into fingerprints
    engine_args: tuple[tuple[str, str], ...] = ()  # the vllm backend's engine settings (--em-engine-arg)
