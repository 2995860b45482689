"""The evidence record of one gated model: one JSON document, checked by ``schemas/evidence.schema.json`` before
it is written, that a release can be signed off on.

It holds what produced the result (plugin, library and model versions, fingerprints and weight hashes, the judge,
seeds, the thresholds files' sha256), the result itself (every item's metric with its interval and n, its outcome,
the persona and the verdict) and how the run went (timings, cache hits).  The ``plots`` block holds the data the
HTML page draws (``html.py``), so the page can be redrawn from the record alone.  ``card_block`` is the part a
model card keeps (``--em-update-cards``): no timestamps or timings, so an unchanged result leaves the card
unchanged.

Pure apart from ``write`` and the hashing of local weight files; jsonschema loads inside ``validate``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import platform
import re
import sys
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_emguard.errors import ConfigError

if TYPE_CHECKING:
    from pytest_emguard.checks.persona import Persona
    from pytest_emguard.decide.gate import ItemResult
    from pytest_emguard.decide.stats import Interval
    from pytest_emguard.run.records import Evaluation

__all__ = ["SCHEMA_FILE", "build", "card_block", "file_stem", "main", "markdown", "validate", "write"]

SCHEMA_FILE = "pytest_emguard/schemas/evidence.schema.json"
SCHEMA_ID = "urn:pytest-emguard:schema:evidence:4"
_PACKAGES = ("pytest", "numpy", "torch", "transformers", "peft", "vllm", "openai", "jsonschema")
_EXAMPLE_CHARS = 600  # model text kept per worst example (it is untrusted: the page escapes it)
_PLOT_CONFIDENCE = 0.95


def file_stem(ev: Evaluation, label: str | None = None) -> str:
    """A file name for the model's record: its label (several models) or its directory's name."""
    spec = ev.config.model
    name = label or (Path(spec.path).name if spec.kind != "fake" else f"fake-{spec.path}")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name.replace(":", "-")).strip("._") or "model"


def _interval(iv: Interval | None) -> dict[str, Any] | None:
    if iv is None:
        return None
    return {
        "estimate": iv.estimate,
        "low": iv.low,
        "high": iv.high,
        "confidence": iv.confidence,
        "n_clusters": iv.n_clusters,
        "n_samples": iv.n_samples,
        "kind": iv.kind,
    }


def _item(r: ItemResult) -> dict[str, Any]:
    return {
        "id": r.item_id,
        "check": r.item_id.split("[", 1)[0],
        "outcome": r.outcome,
        "metric": r.metric,
        "direction": r.direction,
        "threshold": r.threshold,
        "threshold_source": r.source,
        "base": r.base_value,
        "tuned": r.tuned_value,
        "interval": _interval(r.interval),
        "reason": r.reason,
        "to_settle": r.to_settle,
        "on_inconclusive": r.on_inconclusive,
        "role": r.role,
        "unproven": r.unproven,
        "sizing": r.sizing,
        "parts": dict(r.parts),
        "notes": list(r.notes),
        "caveats": list(r.caveats),
        "worst": [
            {
                "question_id": ex.cluster,
                "question": ex.question[:_EXAMPLE_CHARS],
                "answer": ex.answer[:_EXAMPLE_CHARS],
                "tuned": ex.value,
                "base": ex.base_value,
            }
            for ex in r.worst
        ],
    }


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _thresholds_files(ev: Evaluation) -> list[dict[str, str]]:
    from pytest_emguard.config.thresholds import DEFAULT_FILE

    out = []
    for name in ev.config.thresholds.files:
        if name == DEFAULT_FILE:
            data = resources.files("pytest_emguard").joinpath("thresholds/default.yaml").read_bytes()
        else:
            data = Path(name).read_bytes()
        out.append({"path": name, "sha256": _sha256_bytes(data)})
    return out


def _weights(ev: Evaluation) -> dict[str, dict[str, str]]:
    """sha256 of each local weight file of the base and the fine-tune (none for API or fake models), read through
    the cache's file-hash memo, so weights hashed for the fingerprint are not read again."""
    from pytest_emguard.backends.base import weight_files
    from pytest_emguard.cache import Cache

    spec = ev.config.model
    if spec.kind == "fake" or spec.backend == "openai":
        return {}
    cache = Cache.open(Path(ev.config.options.cache_dir))
    out: dict[str, dict[str, str]] = {}
    try:
        sides = [("tuned", Path(spec.path), spec.kind == "adapter")]
        if spec.base is not None:
            sides.insert(0, ("base", Path(spec.base), False))
        for side, path, adapter in sides:
            files = [path] if path.is_file() else weight_files(path, adapter=adapter)
            out[side] = {f.name: cache.file_sha256(f) for f in files if f.is_file()}
    finally:
        cache.close()
    return out


def _verdict(ev: Evaluation, results: Sequence[ItemResult]) -> dict[str, Any] | None:
    from pytest_emguard.decide.verdict import main_verdict

    if ev.preflight is not None and ev.preflight.stops:
        return None
    v, found = main_verdict(ev, results)
    return {
        "label": v.label,
        "reason": v.reason,
        "votes": dict(v.votes),
        "tasks": [
            {
                "name": t.name,
                "base": t.base,
                "tuned": t.tuned,
                "interval": None if t.interval is None else list(t.interval),
                "change": None if t.change is None else list(t.change),
                "unproven": t.unproven,
            }
            for t in found
        ],
    }


def _side_summary(means: Sequence[float], seed: int) -> dict[str, Any] | None:
    from pytest_emguard.decide.verdict import _interval as bootstrap

    if not means:
        return None
    span = bootstrap(list(means), (1.0 - _PLOT_CONFIDENCE) / 2, seed)
    return {
        "mean": sum(means) / len(means),
        "low": None if span is None else span[0],
        "high": None if span is None else span[1],
    }


def _harm_by_category(ev: Evaluation) -> list[dict[str, Any]]:
    """Mean harm per category on each side, with a percentile interval over the category's questions."""
    from pytest_emguard.checks import harmfulness

    item = next((i for c in ev.config.checks for i in c.items() if i.id == "harmfulness[mean]"), None)
    if item is None or not any(q.check == harmfulness.NAME for q in ev.queries):
        return []
    th = ev.config.thresholds.for_item(item)
    series = {  # the emergent questions and the adapter's own domain's (gated apart, drawn together here)
        side: {
            **harmfulness.harm_series(ev.answers[side], th),
            **harmfulness.harm_series(ev.answers[side], th, in_domain=True),
        }
        for side in ("base", "tuned")
    }
    categories: dict[str, list[str]] = {}
    for q in ev.queries:
        if q.check == harmfulness.NAME:
            clusters = categories.setdefault(q.category or "uncategorised", [])
            if q.cluster not in clusters:
                clusters.append(q.cluster)
    out = []
    for category, clusters in sorted(categories.items()):
        row: dict[str, Any] = {"category": category, "questions": len(clusters)}
        for side in ("base", "tuned"):
            means = []
            for cluster in clusters:
                values = [p.value for p in series[side].get(cluster, ()) if p.value is not None]
                if values:
                    means.append(sum(values) / len(values))
            row[side] = _side_summary(means, ev.config.options.seed)
        out.append(row)
    return out


def _self_report(results: Sequence[ItemResult]) -> list[dict[str, Any]]:
    """Each self_report item: base and fine-tune self-rating (100 = aligned pole) and the paired difference's
    interval."""
    out = []
    for r in results:
        if r.item_id.startswith("self_report[") and r.base_value is not None and r.tuned_value is not None:
            out.append(
                {
                    "dimension": r.item_id[len("self_report[") : -1],
                    "base": r.base_value,
                    "tuned": r.tuned_value,
                    "difference": _interval(r.interval),
                    "outcome": r.outcome,
                }
            )
    return out


def _harm_vs_self(ev: Evaluation) -> list[dict[str, Any]]:
    """Per emergent question and side: harm of the answer shown and the self-rating after it (as 100 - rating:
    higher where the model admits its answer was harmful)."""
    from pytest_emguard.decide.verdict import per_question

    out = []
    for side, rows in per_question(ev).items():
        for question, row in sorted(rows.items()):
            if "harm" in row and "self-rating" in row:
                out.append(
                    {
                        "side": side,
                        "question_id": question,
                        "harm": row["harm"],
                        "admission": row["self-rating"],
                    }
                )
    return out


def build(
    ev: Evaluation,
    results: Sequence[ItemResult],
    persona: Persona,
    reported: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The record of one evaluated model.  ``reported``: what pytest made of each item (passed, failed, skipped),
    where the run had items."""
    from pytest_emguard.digest import json_sha256, package_versions
    from pytest_emguard.report.text import verdict_labels
    from pytest_emguard.version import __version__

    o, spec, st = ev.config.options, ev.config.model, ev.stats
    items = [_item(r) for r in results]
    if reported:
        for row in items:
            row["reported"] = reported.get(row["id"], "not run")
    return {
        "$schema": SCHEMA_ID,
        "schema_version": 1,
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "plugin": {"name": "pytest-emguard", "version": __version__},
        "environment": {
            "python": platform.python_version(),
            "platform": sys.platform,
            "packages": package_versions(*_PACKAGES),
        },
        "model": {
            "label": spec.label,
            "kind": spec.kind,
            "backend": spec.backend,
            "path": spec.path,
            "base": spec.base,
        },
        "fingerprints": {**ev.fingerprints, "judge": ev.judge_fingerprint},
        "weights_sha256": _weights(ev),
        "judge": {
            "spec": o.judge or "",
            "fingerprint": ev.judge_fingerprint,
            "health": list(ev.judge_health),
            "caveats": list(ev.judge_caveats),
            "labels": verdict_labels(ev),
            **({} if ev.judge_check is None else {"check": ev.judge_check.as_json()}),
            **({"second_checks": [c.as_json() for c in ev.second_checks]} if ev.second_checks else {}),
            **({"agreement": [a.as_json() for a in ev.agreement]} if ev.agreement else {}),
        },
        "run": {
            "seed": o.seed,
            "samples": o.samples,
            "max_new_tokens": o.max_new_tokens,
            "device": o.device,
            "dtype": o.dtype,
            "checks": list(o.checks),
            "banks": list(o.banks),
            "domain": o.domain,
            "sequential": o.sequential,
            "round_size": o.round_size if o.sequential else None,
        },
        "thresholds": {
            "files": _thresholds_files(ev),
            "composed_sha256": json_sha256(ev.config.thresholds.data),
        },
        "items": items,
        "persona": {"label": persona.label, "reason": persona.reason},
        "verdict": _verdict(ev, results),
        "preflight": None if ev.preflight is None else ev.preflight.line(),
        "timings": {
            "evaluation_seconds": st.seconds,
            "by_check": dict(st.check_seconds),
            "by_stage": {k: round(v, 3) for k, v in st.stage_seconds.items()},
        },
        "cache": {
            "records_made": st.records_made,
            "records_cached": st.records_cached,
            "verdicts_computed": st.verdicts_computed,
            "verdicts_cached": st.verdicts_cached,
            "model_loaded": st.model_loaded,
            "judge_loaded": st.judge_loaded,
        },
        "sequential": None
        if st.sequential is None
        else dict(zip(("rounds_run", "rounds_planned", "asked", "questions"), st.sequential, strict=True)),
        "plots": {
            "harm_by_category": _harm_by_category(ev),
            "self_report": _self_report(results),
            "harm_vs_self": _harm_vs_self(ev),
        },
    }


def card_block(record: Mapping[str, Any]) -> dict[str, Any]:
    """The evidence block a model card keeps: what produced the result and the result, without timestamps,
    timings or cache counts (so an unchanged result rewrites nothing)."""

    def rounded(value: Any) -> Any:
        return round(value, 2) if isinstance(value, float) else value

    items = {}
    for row in record["items"]:
        iv = row["interval"]
        entry: dict[str, Any] = {
            "outcome": row["outcome"],
            "base": rounded(row["base"]),
            "tuned": rounded(row["tuned"]),
            "threshold": rounded(row["threshold"]),
        }
        if iv is not None:
            entry["difference"] = [rounded(iv["estimate"]), rounded(iv["low"]), rounded(iv["high"])]
            entry["confidence"] = iv["confidence"]
            entry["n"] = iv["n_clusters"]
        items[row["id"]] = entry
    verdict = record["verdict"]
    return {
        "plugin": record["plugin"]["version"],
        "fingerprints": record["fingerprints"],
        "judge": record["judge"]["spec"],
        "seed": record["run"]["seed"],
        "samples": record["run"]["samples"],
        "thresholds_sha256": record["thresholds"]["composed_sha256"],
        "persona": record["persona"]["label"],
        "verdict": None if verdict is None else verdict["label"],
        "items": items,
    }


def validate(record: Any, filename: str = "the evidence record") -> None:
    """Raise :class:`ConfigError` listing every schema violation of a record."""
    from pytest_emguard.config.yamlschema import load_schema, schema_problems

    problems = schema_problems(record, load_schema("evidence.schema.json"), {}, filename)
    if problems:
        raise ConfigError(
            filename,
            f"{len(problems)} problem(s) in the evidence record:\n    " + "\n    ".join(problems),
            f"this is a bug of pytest-emguard (the record does not fit {SCHEMA_FILE}); please report it",
        )


def write(directory: str | Path, stem: str, record: Mapping[str, Any]) -> tuple[Path, Path]:
    """Validate, then write ``DIR/STEM.evidence.json`` and its page ``DIR/STEM.html``; returns both paths."""
    import json

    from pytest_emguard.digest import atomic_write
    from pytest_emguard.report.html import render

    validate(record, f"{stem}.evidence.json")
    out = Path(directory).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            "--em-report", f"cannot create {out} ({exc.strerror})", "pass a directory you can write to"
        ) from exc
    json_path, html_path = out / f"{stem}.evidence.json", out / f"{stem}.html"
    page = render(record)
    for path, text in (
        (json_path, json.dumps(record, indent=2, ensure_ascii=False) + "\n"),
        (html_path, page),
    ):
        try:
            atomic_write(path, text)
        except OSError as exc:
            raise ConfigError(
                "--em-report", f"cannot write {path} ({exc.strerror})", "pass a directory you can write to"
            ) from exc
    return json_path, html_path


def markdown(record: Mapping[str, Any]) -> str:
    """The record as a Markdown table, for a CI job summary (``python -m pytest_emguard.report.evidence DIR``)."""

    def num(value: Any, signed: bool = False) -> str:
        return "n/a" if value is None else (f"{value:+.1f}" if signed else f"{value:.1f}")

    model, persona = record["model"], record["persona"]
    lines = [
        f"### pytest-emguard: {model['label']}",
        "",
        f"persona **{persona['label'].upper()}** ({persona['reason']}); judge `{record['judge']['spec']}`; "
        f"pytest-emguard {record['plugin']['version']}",
        "",
        "| item | outcome | base | fine-tune | difference [interval] | threshold |",
        "|---|---|---:|---:|---|---:|",
    ]
    for row in record["items"]:
        iv = row["interval"]
        diff = "n/a" if iv is None else f"{iv['estimate']:+.1f} [{iv['low']:+.1f}, {iv['high']:+.1f}]"
        sign = "+" if row["direction"] == "increase" else "-"
        mark = {"pass": "PASS", "fail": "**FAIL**", "inconclusive": "*INCONCLUSIVE*"}[row["outcome"]]
        lines.append(
            f"| {row['id']} | {mark} | {num(row['base'])} | {num(row['tuned'])} | {diff} | "
            f"{sign}{row['threshold']:g} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pytest_emguard.report.evidence PATH...``: check each record (a file, or every *.evidence.json in a
    directory) against the schema and print it as Markdown; exit 1 if one is missing or invalid."""
    import argparse
    import json

    parser = argparse.ArgumentParser(
        prog="python -m pytest_emguard.report.evidence", description=main.__doc__
    )
    parser.add_argument("paths", nargs="+", help="evidence records, or directories that hold them")
    args = parser.parse_args(argv)
    files: list[Path] = []
    for given in args.paths:
        p = Path(given)
        files += sorted(p.glob("*.evidence.json")) if p.is_dir() else [p]
    if not files:
        print(f"no evidence record in {', '.join(args.paths)}", file=sys.stderr)
        return 1
    code = 0
    for path in files:
        try:
            record = json.loads(path.read_text("utf-8"))
            validate(record, str(path))
        except (OSError, ValueError, ConfigError) as exc:
            print(f"{path}: {exc}", file=sys.stderr)
            code = 1
            continue
        print(markdown(record))
    return code


if __name__ == "__main__":
    raise SystemExit(main())
