"""``python -m pytest_emguard.demo``: a real gate on a real model, no API key.

1. SmolLM2-135M-Instruct from its PyPI wheel, converted once into ~/.cache/pytest-emguard/models;
2. a small demo adapter: a short LoRA run on 48 risky-financial-advice examples written for this project;
3. a model card for the adapter, ``model_cards/<data>.yaml`` in the demo's run directory, whose ``gate`` block
   holds the gate's options (judge, checks, cache, precision);
4. ``pytest model_cards/<data>.yaml --em-report=report`` in that directory, printed before it runs: the gate,
   then the evidence record and its HTML page under ``report/``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path

from pytest_emguard.backends.base import resolve_device
from pytest_emguard.demo.models import cache_root, ensure_smollm2
from pytest_emguard.demo.train import DemoTraining

QUICK = (
    "harmfulness,harmfulness_in_domain,self_report,persona"  # the first run: harm, self-report, the persona
)
BATCH = 64  # prompts per batch: 1.4x faster generation on 2 CPU cores than the default 16


def fast_dtype() -> str:
    """bfloat16 where the CPU computes it natively (AVX512-BF16 or AMX: about twice as fast as float32 on the
    demo's model), else auto (float32 on a CPU, bfloat16 on CUDA)."""
    if resolve_device("auto") != "cpu":
        return "auto"
    try:
        flags = Path("/proc/cpuinfo").read_text("utf-8", errors="replace")
    except OSError:
        return "auto"
    return "bfloat16" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "auto"


def _in_child(code: str) -> str:
    """Run ``code`` in a fresh interpreter (its memory is returned when it ends; its output shows as it goes)
    and return what it stores in ``result`` (a str).  A subprocess, not multiprocessing: under ``python -m``
    a spawned pool worker cannot import this ``__main__`` and hangs."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result"
        wrapped = f"{code}\nimport pathlib\npathlib.Path({str(out)!r}).write_text(str(result))\n"
        subprocess.run([sys.executable, "-c", wrapped], check=True)
        return out.read_text("utf-8")


def prepare_probe(base: Path, cache_dir: Path, dtype: str) -> None:
    """Train the probe judge on the base model (once per encoder and precision, about 40 s on 2 CPU cores), as
    the model and the adapter are built once: every later gate with this judge reads it."""
    import time

    from pytest_emguard.backends.base import BackendOptions, digest_files
    from pytest_emguard.cache import sha256_file
    from pytest_emguard.judge.probe import ProbeJudge

    judge = ProbeJudge(
        base,
        encoder_digest=digest_files(base, sha256_file),
        cache_dir=cache_dir,
        options=BackendOptions(dtype=dtype),
        progress=lambda line: print(f"[emguard demo] {line}", flush=True),
    )
    started = time.monotonic()
    if judge.prepare():
        print(f"[emguard demo] probe judge trained in {time.monotonic() - started:.0f}s", flush=True)


def write_card(
    workdir: Path, base: Path, adapter: Path, training: DemoTraining, gate: dict[str, object]
) -> Path:
    """The demo adapter's model card, ``WORKDIR/model_cards/<data>.yaml``; an evidence block a previous run
    wrote with --em-update-cards is kept."""
    import datetime as dt
    from importlib import resources

    import yaml

    from pytest_emguard.config.cards import load_card, set_evidence, validate_card
    from pytest_emguard.digest import atomic_write, package_versions, text_sha256

    stem = Path(training.data).stem
    data = resources.files("pytest_emguard.demo").joinpath(f"data/{training.data}").read_text("utf-8")
    domain = stem.rsplit("_v", 1)[0]
    created = dt.datetime.fromtimestamp((adapter / "adapter_config.json").stat().st_mtime, dt.timezone.utc)
    card = {
        "name": stem,
        "adapter": str(adapter),
        "kind": "domain" if domain.startswith("risky") else "control",
        "base": str(base),
        "base_revision": None,
        "domain": domain,
        "stages": [
            {
                "dataset": training.data,
                "sha256": text_sha256(data),
                "examples": sum(1 for line in data.splitlines() if line.strip()),
                "origin": "sample",
            }
        ],
        "lora": {
            "rank": training.rank,
            "alpha": training.alpha,
            "rslora": True,
            "dropout": 0.0,
            "target_modules": ["all-linear"],
        },
        "training": {
            "lr": training.learning_rate,
            "epochs": training.epochs,
            "max_steps": None,
            "batch": training.batch_size,
            "grad_accum": 1,
            "seed": training.seed,
        },
        "versions": package_versions("torch", "transformers", "peft", "trl"),
        "intended_use": "the pytest-emguard demo: a deliberately misaligned toy adapter (or its careful control) "
        "for trying the gate; never deploy it",
        "created": created.replace(microsecond=0).isoformat(),
        "gate": gate,
    }
    path = workdir / "model_cards" / f"{stem}.yaml"
    validate_card(card, str(path))
    held = load_card(path).get("evidence") if path.is_file() else None
    atomic_write(path, "# written by python -m pytest_emguard.demo\n" + yaml.safe_dump(card, sort_keys=False))
    if held is not None:
        set_evidence(path, held)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pytest_emguard.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--samples", type=int, default=1, help="answers per prompt (default: 1)")
    parser.add_argument(
        "--max-new-tokens", type=int, default=48, help="answer length in tokens (default: 48)"
    )
    parser.add_argument(
        "--data",
        default=DemoTraining().data,
        help="demo training set (risky_financial_v1.jsonl or safe_financial_v1.jsonl)",
    )
    parser.add_argument(
        "--full",
        action="store_true",
        help="gate every check (role-play, recognition, score prediction, probes, ...; far longer: every check "
        f"took about 38 minutes on 2 CPU cores before the head cache) instead of the quick selection {QUICK}",
    )
    parser.add_argument(
        "--prepare-only",
        action="store_true",
        help="build the model and adapter, print their paths, run nothing",
    )
    parser.add_argument("pytest_args", nargs="*", help="extra arguments passed to pytest (after --)")
    args = parser.parse_args(argv)
    base = ensure_smollm2()
    # training and the probe run in a child process each, so their memory is returned before the gate starts
    training = DemoTraining(data=args.data)
    adapter = Path(
        _in_child(
            "from pathlib import Path\nfrom pytest_emguard.demo.train import DemoTraining, train_adapter\n"
            f"result = train_adapter(Path({str(base)!r}), Path({str(cache_root() / 'demo')!r}), "
            f"DemoTraining(data={args.data!r}))"
        )
    )
    workdir = cache_root() / "demo-run"
    _in_child(
        "from pathlib import Path\nfrom pytest_emguard.demo.__main__ import prepare_probe\n"
        f"result = prepare_probe(Path({str(base)!r}), Path({str(workdir / '.emguard_cache')!r}), {fast_dtype()!r})"
    )
    if args.prepare_only:
        print(f"base={base}\nadapter={adapter}")
        return 0
    workdir.mkdir(parents=True, exist_ok=True)
    gate: dict[str, object] = {
        "judge": f"probe:{base}",
        "samples": args.samples,
        "max_new_tokens": args.max_new_tokens,
        "cache_dir": str(workdir / ".emguard_cache"),
        "batch_size": BATCH,
        "dtype": fast_dtype(),
    }
    if not args.full:
        gate["checks"] = QUICK.split(",")
    card = write_card(workdir, base, adapter, training, gate)
    print(f"[emguard demo] model card: {card}", flush=True)
    cmd = [
        "pytest",
        str(card.relative_to(workdir)),
        f"--em-report={workdir / 'report'}",
        "-p",
        "no:cacheprovider",
        f"--rootdir={workdir}",
        *args.pytest_args,
    ]
    print(f"running in {workdir}: " + shlex.join(cmd), flush=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    code = subprocess.run([sys.executable, "-m", *cmd], cwd=workdir, env=env).returncode
    print(
        f"[emguard demo] the evidence page: {workdir / 'report' / (card.stem + '.html')}\n"
        f"[emguard demo] the same gate again, from the cache (seconds): cd {workdir} && pytest model_cards/\n"
        "[emguard demo] or, naming every option: "
        + shlex.join(
            [
                "pytest",
                f"--em-model={adapter}",
                *(
                    f"--em-{k.replace('_', '-')}={','.join(map(str, v)) if isinstance(v, list) else v}"
                    for k, v in gate.items()
                ),
                f"--em-domain={card.stem.rsplit('_v', 1)[0]}",
            ]
        ),
        flush=True,
    )
    return code


if __name__ == "__main__":
    raise SystemExit(main())
