"""Operating characteristics of the release decision, through the real gate code; prints a table (seeded).

    python bench/decisions.py [--sims 100] [--questions 64] [--samples 10] [--seed 0] [--jobs 2]

A gate is judged by how often it passes what is fine and fails what is not, at the budget a user runs.  This
script draws judged answers for a base and a fine-tune, builds the ``Evaluation`` the engine would return (the
harmfulness check's own queries, ``Sample``s with ``Verdict``s), and decides it with the gate's own ``run_gate``
(each item, its role, Holm's step-down across the secondary items) under each thresholds profile (the package
default, and ``thresholds/release.yaml``).  The gate passes when no item blocks the release (``report.text.blocks``,
the plugin's own rule).  Each regime runs at the default budget (``--samples``) and at the budget the primary
endpoint's sizing recommends for the regime (``decide/sizing.py`` on a pilot draw of the base's answers).  Under
each block an "interval width" line checks the sizing's one measured constant, ``WIDTH``: how far the primary's
upper bound lies above its estimate, in units of the normal interval's z_{1-alpha} x se, for a benign fine-tune.

Covered: the harm items (the primary ``misaligned`` share; the secondary ``mean``, ``rate``, ``best_of_n``,
``invalid``).  The other checks' items are secondary too, so they can fail a fine-tune only on evidence of a
change beyond their thresholds that survives Holm; their draws are not simulated here.  Version 2 of this bench.

The draws (ours; each question has its own propensity, shared by the two sides):

- per question, logit P(harmful answer) = logit(base share) + 1.0 x u_q, u_q ~ N(0, 1);
- a harmful answer scores U(55, 100), a harmless one U(0, 45); an answer is coherent with the regime's
  probability (coherence U(55, 100), else U(0, 45)); a few answers are unscorable;
- a *benign* fine-tune draws its own answers from the same process with each question's logit moved by
  0.35 x v_q, v_q ~ N(0, 1) (it answers differently, no more harmfully on average);
- a fine-tune with a *rise of X points* is the benign one with each answer replaced, with probability
  X / (100 - s) (s: the base's misaligned share, from the pilot draw), by a misaligned one (harm U(70, 100),
  coherent): the misaligned share rises by X points on average (the "real rise" column: the mean estimate).

Regimes: ``noisy-small`` (a noisy small model like the demo's SmolLM2: 40% harmful-looking answers at base,
65% coherent, 3% unscorable); ``low-harm-7B`` (a 7B-like instruct model: 1% harmful at base, 97% coherent, 1%
unscorable).  Each cell's share has a Monte-Carlo standard error of at most 50 / sqrt(sims) points.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pytest_emguard.checks.base import Answers, Query
from pytest_emguard.decide.sizing import WIDTH
from pytest_emguard.types import Sample, Verdict

ROOT = Path(__file__).resolve().parent.parent
PROFILES = {"default": None, "release": str(ROOT / "thresholds" / "release.yaml")}
RISES = (0.0, 2.0, 5.0, 10.0, 20.0)


@dataclass(frozen=True)
class Regime:
    harmful: float  # share of harmful-looking answers at base
    coherent: float  # share of coherent answers
    unscorable: float  # share of answers the judge cannot score


REGIMES = {
    "noisy-small": Regime(harmful=0.40, coherent=0.65, unscorable=0.03),
    "low-harm-7B": Regime(harmful=0.01, coherent=0.97, unscorable=0.01),
}


def _answers(
    rng: np.random.Generator, logits: np.ndarray, samples: int, regime: Regime, rise: float
) -> list[list[tuple[str, float | None, float | None]]]:
    """Per question, ``samples`` answers as (label, harm, coherence)."""
    out = []
    for logit in logits:
        p = 1.0 / (1.0 + math.exp(-logit))
        row: list[tuple[str, float | None, float | None]] = []
        for _ in range(samples):
            if rng.random() < rise / 100.0:
                row.append(("scored", rng.uniform(70.0, 100.0), rng.uniform(55.0, 100.0)))
                continue
            if rng.random() < regime.unscorable:
                row.append(("unscorable", None, None))
                continue
            harm = rng.uniform(55.0, 100.0) if rng.random() < p else rng.uniform(0.0, 45.0)
            coherence = rng.uniform(55.0, 100.0) if rng.random() < regime.coherent else rng.uniform(0.0, 45.0)
            row.append(("scored", harm, coherence))
        out.append(row)
    return out


def _side(queries: tuple[Query, ...], draws: list[list[tuple[str, float | None, float | None]]]) -> Answers:
    rows = {
        q.key: [
            Sample(f"answer {k}", Verdict(label, harm, None, "", coh))
            for k, (label, harm, coh) in enumerate(row)
        ]
        for q, row in zip(queries, draws, strict=True)
    }
    return Answers(queries, rows)


def _evaluation(
    config: object,
    queries: tuple[Query, ...],
    rng: np.random.Generator,
    regime: Regime,
    samples: int,
    rise: float,
) -> object:
    from pytest_emguard.run.records import Evaluation, RunStats

    u = rng.normal(0.0, 1.0, len(queries))
    base_logit = math.log(regime.harmful / (1 - regime.harmful)) + u
    tuned_logit = base_logit + 0.35 * rng.normal(0.0, 1.0, len(queries))
    base = _side(queries, _answers(rng, base_logit, samples, regime, 0.0))
    tuned = _side(queries, _answers(rng, tuned_logit, samples, regime, rise))
    return Evaluation(config, queries, {"base": base, "tuned": tuned}, {}, "judge", (), RunStats())  # type: ignore[arg-type]


def recommended(
    config: object, queries: tuple[Query, ...], regime: Regime, samples: int, seed: int
) -> tuple[int, float]:
    """The answers per question the primary endpoint's sizing asks for, on a pilot draw of the base (at least
    ``samples``, at most 200), and the base's misaligned share in that draw (%)."""
    from pytest_emguard.checks.harmfulness import misaligned_series
    from pytest_emguard.decide.sizing import for_item, observed

    item = next(i for i in config.items() if i.name == "misaligned")  # type: ignore[attr-defined]
    t = config.thresholds.for_item(item)  # type: ignore[attr-defined]
    ev = _evaluation(config, queries, np.random.default_rng([seed, 999]), regime, 50, 0.0)
    base = misaligned_series(ev.answers["base"], t)  # type: ignore[attr-defined]
    design = observed(
        {c: [p.value for p in pts if p.value is not None] for c, pts in base.items()}, float(t["planning_sd"])
    )
    assert design is not None
    need = for_item(t.values, len(queries), samples, design).answers_needed()
    values = [p.value for pts in base.values() for p in pts if p.value is not None]
    return min(200, max(samples, need if need is not None else 200)), float(np.mean(values))


_CONFIGS: dict[str, object] = {}


def _config(profile: str) -> object:
    """The run configuration of a thresholds profile (built once per process)."""
    from pytest_emguard.config.run import Options, RunConfig

    if profile not in _CONFIGS:
        options = Options(
            model="fake:identical",
            judge="fake:",
            thresholds=PROFILES[profile],
            cache_dir=tempfile.mkdtemp(prefix="emguard-bench-"),
            checks=("harmfulness",),
        )
        _CONFIGS[profile] = RunConfig.resolve(options)
    return _CONFIGS[profile]


def _queries(config: object, questions: int) -> tuple[Query, ...]:
    asked = config.check("harmfulness").queries(config.plan_context)  # type: ignore[attr-defined]
    return tuple(q for q in asked if q.tags.get("in_domain") != "yes")[:questions]  # at most the bank


def cell(
    spec: tuple[str, str, int, float, float, int, int, int],
) -> tuple[dict[str, int], int, float, float, float]:
    """One cell of the table: ``sims`` seeded runs of the gate; the pass counts of each harm item and of the
    gate, the mean estimated rise, the seconds it took, and the primary's interval width against the sizing's:
    the mean distance from the estimate to the upper bound over the mean z_{1-alpha} x se of the sizing on each
    run's base answers (what ``decide.sizing.WIDTH`` stands for)."""
    from statistics import NormalDist

    from pytest_emguard.checks.harmfulness import misaligned_series
    from pytest_emguard.decide.gate import run_gate
    from pytest_emguard.decide.sizing import for_item, observed

    regime_name, profile, answers, share, rise, sims, questions, seed = spec
    config = _config(profile)
    queries = _queries(config, questions)
    number = list(REGIMES).index(regime_name)
    rng = np.random.default_rng([seed, int(rise * 10), number, answers])
    passed: dict[str, int] = {}
    gate = 0
    real: list[float] = []
    upper: list[float] = []
    normal: list[float] = []
    item = next(i for i in config.items() if i.name == "misaligned")  # type: ignore[attr-defined]
    t = config.thresholds.for_item(item)  # type: ignore[attr-defined]
    z_alpha = NormalDist().inv_cdf(1.0 - float(t["alpha"]))
    started = time.monotonic()
    for _ in range(sims):
        ev = _evaluation(config, queries, rng, REGIMES[regime_name], answers, rise / (1.0 - share / 100.0))
        results = run_gate(ev)  # type: ignore[arg-type]
        for r in results:
            name = r.item_id.split("[")[1][:-1]
            passed[name] = passed.get(name, 0) + (r.outcome == "pass")
        gate += not any(r.blocks for r in results)
        head = next(r for r in results if r.role == "primary")
        real.append(0.0 if head.interval is None else head.interval.estimate)
        base = misaligned_series(ev.answers["base"], t)  # type: ignore[attr-defined]
        design = observed(
            {c: [p.value for p in pts if p.value is not None] for c, pts in base.items()},
            float(t["planning_sd"]),
        )
        if head.interval is not None and design is not None:
            upper.append(head.interval.high - head.interval.estimate)
            normal.append(z_alpha * for_item(t.values, len(queries), answers, design).se)
    width = float(np.mean(upper) / np.mean(normal)) if upper else float("nan")
    return passed, gate, float(np.mean(real)), time.monotonic() - started, width


def run(sims: int, questions: int, samples: int, seed: int, jobs: int = 1) -> None:
    print(
        f"release decision operating characteristics: {questions} questions, {sims} simulations a cell (Monte-Carlo "
        f"s.e. <= {50 / math.sqrt(sims):.1f} points); pass% of each harm item and of the gate (no item blocks: the "
        "primary fails or is inconclusive, or a secondary failure survives Holm: ItemResult.blocks)\n"
    )
    blocks_: list[tuple[str, list[tuple[str, str, int, float, float, int, int, int]]]] = []
    for regime_name, regime in REGIMES.items():
        for profile in PROFILES:
            config = _config(profile)
            queries = _queries(config, questions)
            names = [i.name for i in config.items() if i.check == "harmfulness"]  # type: ignore[attr-defined]
            sized, share = recommended(config, queries, regime, samples, seed)
            for budget, answers in {"default": samples, "sized": sized}.items():
                if budget == "sized" and sized == samples:
                    blocks_.append(
                        (
                            f"{regime_name:<12} {profile:<8} sized: the default budget is the recommended one",
                            [],
                        )
                    )
                    continue
                header = f"{regime_name:<12} {profile:<8} {budget:<7} {'rise':>5}  " + "  ".join(
                    f"{n:>10}" for n in names
                )
                header += f"  {'gate':>5}  {'real rise':>9}  ({answers} answers a question)"
                specs = [
                    (regime_name, profile, answers, share, rise, sims, questions, seed) for rise in RISES
                ]
                blocks_.append((header, specs))
    every = [spec for _, specs in blocks_ for spec in specs]
    if jobs > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(jobs) as pool:
            done = dict(zip(every, pool.map(cell, every), strict=True))
    else:
        done = {spec: cell(spec) for spec in every}
    for header, specs in blocks_:
        print(header)
        for spec in specs:
            regime_name, profile, answers, _, rise, *_ = spec
            passed, gate, real, seconds, _ = done[spec]
            names = list(passed)
            budget = "default" if answers == samples else "sized"
            cells = "  ".join(f"{100 * passed[n] / sims:>9.0f}%" for n in names)
            print(
                f"{regime_name:<12} {profile:<8} {budget:<7} {rise:>+5.0f}  {cells}  {100 * gate / sims:>4.0f}%  "
                f"{real:>+9.1f}  ({seconds:.0f}s)"
            )
        if specs:
            regime_name, profile, answers, *_ = specs[0]
            print(
                f"{regime_name:<12} {profile:<8} interval width at +0, {answers} answers: the primary's upper bound "
                f"lies {done[specs[0]][4]:.3f} x z_(1-alpha) x se above its estimate (the sizing assumes "
                f"WIDTH = {WIDTH})"
            )
        print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sims", type=int, default=100)
    parser.add_argument("--questions", type=int, default=64)
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--jobs", type=int, default=2, help="worker processes (cells run in parallel; default 2)"
    )
    args = parser.parse_args(argv)
    run(args.sims, args.questions, args.samples, args.seed, args.jobs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
