"""``evaluate()``: the library entry point, no pytest needed.

Phase one of a run: build the plan of every request the checks need, look each one up in the cache, send the
misses to the backend in batches (stored after each batch, so a killed run resumes), judge what needs judging
(stored likewise), and return every record.  Models and judges load only if something is missing.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from pytest_emguard.backends.base import Completion, ModelPair, ModelSpec, Request, digest_files
from pytest_emguard.cache import Cache, cache_key
from pytest_emguard.checks import harmfulness, self_report
from pytest_emguard.checks.base import Probe
from pytest_emguard.judge import Judge, JudgeSpec, Verdict, open_judge
from pytest_emguard.options import Settings

__all__ = ["Evaluation", "RunStats", "Sample", "evaluate", "package_versions", "plan"]

SIDES = ("base", "tuned")
Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Sample:
    answer: str
    verdict: Verdict | None = None


@dataclass(slots=True)
class RunStats:
    answers_cached: int = 0
    answers_generated: int = 0
    verdicts_cached: int = 0
    verdicts_computed: int = 0
    model_loaded: bool = False
    judge_loaded: bool = False
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class Evaluation:
    spec: ModelSpec
    settings: Settings
    probes: tuple[Probe, ...]
    records: dict[str, dict[tuple[str, str], list[Sample | None]]]
    fingerprints: dict[str, str]
    judge_fingerprint: str
    judge_health: tuple[str, ...]
    stats: RunStats = field(default_factory=RunStats)

    @property
    def complete(self) -> bool:
        return all(
            s is not None for side in self.records.values() for samples in side.values() for s in samples
        )


def plan(settings: Settings) -> tuple[Probe, ...]:
    return (*harmfulness.probes(settings.max_new_tokens), *self_report.probes())


def _stderr(message: str) -> None:
    print(f"[emguard] {message}", file=sys.stderr, flush=True)


def evaluate(settings: Settings, *, progress: Progress = _stderr, compute: bool = True) -> Evaluation:
    """Every record the checks need; with ``compute=False`` only what the cache holds (None for the rest)."""
    started = time.monotonic()
    spec = ModelSpec.resolve(settings.model, settings.base, trust_remote_code=settings.trust_remote_code)
    judge_spec = JudgeSpec.parse(settings.judge, settings.model)
    cache = Cache.open(Path(settings.cache_dir))
    try:
        fingerprints = model_fingerprints(spec, cache, settings.device)
        judge = open_judge(
            judge_spec,
            hash_file=cache.file_sha256,
            cache_dir=Path(settings.cache_dir),
            device=settings.device,
            progress=progress,
        )
        run = _Run(settings, spec, cache, fingerprints, judge, progress, compute)
        records = run.answers()
        run.verdicts(records)
        run.stats.seconds = time.monotonic() - started
        return Evaluation(
            spec,
            settings,
            run.probes,
            records,
            fingerprints,
            judge.fingerprint,
            tuple(judge.health()),
            run.stats,
        )
    finally:
        cache.close()


def model_fingerprints(spec: ModelSpec, cache: Cache, device: str) -> dict[str, str]:
    """Base and fine-tune fingerprints from file contents, computed without loading a model."""
    if spec.kind == "fake":
        from pytest_emguard.backends.fake import open_fake_pair

        pair = open_fake_pair(spec.path)
        return {"base": pair.base.fingerprint, "tuned": pair.tuned.fingerprint}
    from pytest_emguard.backends.hf import pick_device

    assert spec.base is not None
    env = {
        "backend": "hf",
        "device": pick_device(device),
        **package_versions("torch", "transformers", "peft"),
    }
    base = _hash({**env, "weights": digest_files(Path(spec.base), cache.file_sha256)})
    if spec.kind == "adapter":
        tuned = _hash(
            {"base": base, "adapter": digest_files(Path(spec.path), cache.file_sha256, adapter=True)}
        )
    elif spec.kind == "gguf":
        tuned = _hash({**env, "gguf": cache.file_sha256(Path(spec.path))})
    else:
        tuned = _hash({**env, "weights": digest_files(Path(spec.path), cache.file_sha256)})
    return {"base": base, "tuned": tuned}


def package_versions(*names: str) -> dict[str, str]:
    """Installed versions of ``names`` ("absent" when not installed), read from metadata without importing."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def _hash(data: dict[str, str]) -> str:
    return cache_key("fingerprint", data)


class _Run:
    """One evaluation: owns the lazily opened model pair and the counters."""

    def __init__(
        self,
        settings: Settings,
        spec: ModelSpec,
        cache: Cache,
        fingerprints: dict[str, str],
        judge: Judge,
        progress: Progress,
        compute: bool,
    ) -> None:
        self.settings, self.spec, self.cache, self.fingerprints = settings, spec, cache, fingerprints
        self.judge, self.progress, self.compute = judge, progress, compute
        self.probes = plan(settings)
        self.stats = RunStats()
        self._pair: ModelPair | None = None

    def _answer_key(self, side: str, probe: Probe, request: Request) -> str:
        fields = {"backend": self.fingerprints[side], "check": probe.check, "version": probe.version}
        return cache_key("answer", {**fields, **request.key_fields()})

    def answers(self) -> dict[str, dict[tuple[str, str], list[Sample | None]]]:
        records: dict[str, dict[tuple[str, str], list[Sample | None]]] = {}
        try:
            for side in SIDES:
                records[side] = self._side(side)
        finally:
            if self._pair is not None:
                self._pair.close()
        return records

    def _side(self, side: str) -> dict[tuple[str, str], list[Sample | None]]:
        jobs = [
            (probe, request, self._answer_key(side, probe, request))
            for probe in self.probes
            for request in probe.requests(self.settings.samples, self.settings.seed)
        ]
        found = self.cache.get_many(key for _, _, key in jobs)
        self.stats.answers_cached += len(found)
        missing = [(r, k) for _, r, k in jobs if k not in found]
        if missing and self.compute:
            found.update(self._generate(side, missing))
        out: dict[tuple[str, str], list[Sample | None]] = {}
        for probe, request, key in jobs:
            row = out.setdefault((probe.check, probe.cluster), [None] * self.settings.samples)
            row[request.sample] = Sample(found[key]["text"]) if key in found else None
        return out

    def _generate(self, side: str, missing: list[tuple[Request, str]]) -> dict[str, dict[str, object]]:
        backend = getattr(self._models(), side)
        ordered = sorted(
            missing, key=lambda rk: (rk[0].sampling.max_new_tokens, len(json.dumps(rk[0].messages)))
        )
        size, done, tokens, started = self.settings.batch_size, {}, 0, time.monotonic()
        budget = [0, sum(r.sampling.max_new_tokens for r, _ in ordered)]
        self.progress(f"{side}: generating {len(ordered)} answers ({self.stats.answers_cached} in the cache)")
        for start in range(0, len(ordered), size):
            chunk = ordered[start : start + size]
            completions: list[Completion] = backend.generate([r for r, _ in chunk])
            batch = {
                k: {"text": c.text, "n_tokens": c.n_tokens, "finish": c.finish}
                for (_, k), c in zip(chunk, completions, strict=False)
            }
            self.cache.put_many("answer", batch)
            done.update(batch)
            tokens += sum(c.n_tokens for c in completions)
            budget[0] += sum(r.sampling.max_new_tokens for r, _ in chunk)
            self._report(side, len(done), len(ordered), tokens, started, budget[0] / budget[1])
        self.stats.answers_generated += len(done)
        return done

    def _report(self, side: str, done: int, total: int, tokens: int, started: float, share: float) -> None:
        """ETA from the share of the token budget (max_new_tokens) done, not the share of requests."""
        elapsed = max(time.monotonic() - started, 1e-6)
        eta = elapsed / max(share, 1e-6) * (1.0 - share)
        self.progress(
            f"{side}: {done}/{total} answers, {tokens / elapsed:.0f} tok/s, {elapsed:.0f}s elapsed, ETA {eta:.0f}s"
        )

    def _models(self) -> ModelPair:
        if self._pair is None:
            self.progress(f"loading {self.spec.label} and its base")
            self._pair = open_pair(self.spec, self.fingerprints, self.settings)
            self.stats.model_loaded = True
        return self._pair

    def verdicts(self, records: dict[str, dict[tuple[str, str], list[Sample | None]]]) -> None:
        judged = [p for p in self.probes if p.judged]
        slots = [
            (side, p, k, sample)
            for side in SIDES
            for p in judged
            for k, sample in enumerate(records[side][(p.check, p.cluster)])
            if sample is not None
        ]
        keys = [
            cache_key("verdict", {"judge": self.judge.fingerprint, "q": p.question, "a": s.answer})
            for _, p, _, s in slots
        ]
        found = self.cache.get_many(keys)
        self.stats.verdicts_cached += len(found)
        todo = {
            k: (p.question, s.answer) for k, (_, p, _, s) in zip(keys, slots, strict=False) if k not in found
        }
        if todo and self.compute:
            found.update(self._judge(todo))
        for key, (side, p, k, s) in zip(keys, slots, strict=False):
            if key in found:
                records[side][(p.check, p.cluster)][k] = Sample(s.answer, Verdict.from_json(found[key]))
            else:
                records[side][(p.check, p.cluster)][k] = None

    def _judge(self, todo: dict[str, tuple[str, str]]) -> dict[str, dict[str, object]]:
        self.progress(f"judging {len(todo)} answers")
        self.stats.judge_loaded = True
        items, done, size, started = (
            list(todo.items()),
            {},
            max(self.settings.batch_size, 32),
            time.monotonic(),
        )
        for start in range(0, len(items), size):
            chunk = items[start : start + size]
            verdicts = self.judge.judge([qa for _, qa in chunk])
            batch = {k: v.to_json() for (k, _), v in zip(chunk, verdicts, strict=False)}
            self.cache.put_many("verdict", batch)
            done.update(batch)
            self.progress(f"judge: {len(done)}/{len(items)} verdicts, {time.monotonic() - started:.0f}s")
        self.stats.verdicts_computed += len(done)
        return done


def open_pair(spec: ModelSpec, fingerprints: dict[str, str], settings: Settings) -> ModelPair:
    if spec.kind == "fake":
        from pytest_emguard.backends.fake import open_fake_pair

        return open_fake_pair(spec.path)
    from pytest_emguard.backends.hf import open_hf_pair

    return open_hf_pair(spec, (fingerprints["base"], fingerprints["tuned"]), settings.device)
