"""The engine: from a ``RunConfig`` to every record the checks need (``engine.evaluate``), as stages that share one
``RunContext`` (``context.py``): plan, preflight, generate, read, activations, judge, follow-ups, rounds, rating,
baseline.  Nothing under it (``config/``, ``decide/``, ``checks/``, ``backends/``, ``judge/``) imports it, except its
record types (``records.py``); ``tests/unit/test_layout.py`` keeps it so."""
