"""The library entry point, no pytest needed: build a ``RunConfig``, ``evaluate`` it (every record the checks
need), ``run_gate`` (an outcome per item) and ``classify`` (the persona label).

    from pytest_emguard.api import Options, RunConfig, classify, evaluate, run_gate

    results = run_gate(evaluate(RunConfig.resolve(Options(model="./adapter", judge="probe:./encoder"))))
    print(classify(results))

This module only gathers the public names; each lives with its stage (``config/``, ``run/``, ``decide/``).
"""

from __future__ import annotations

from pytest_emguard.checks.persona import classify
from pytest_emguard.config.run import Options, RunConfig
from pytest_emguard.decide.gate import ItemResult, run_gate
from pytest_emguard.run.engine import evaluate
from pytest_emguard.run.records import Evaluation, RunStats

__all__ = ["Evaluation", "ItemResult", "Options", "RunConfig", "RunStats", "classify", "evaluate", "run_gate"]
