"""The engine: from a ``RunConfig`` to every record the checks need (``engine.evaluate``), as stages that share one
``RunContext`` (``context.py``): plan, preflight, generate, read, activations, judge, follow-ups, rounds, rating,
baseline.  Nothing outside ``run/``, ``plugin/`` and ``api.py`` imports it, except the record types."""
