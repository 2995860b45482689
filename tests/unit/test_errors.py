"""Library errors met during a run, translated into one short message (``errors.library_error``)."""

from __future__ import annotations

import pytest


def test_a_library_error_becomes_one_short_message_with_its_first_line() -> None:
    import sqlite3

    from pytest_emguard.errors import LibraryError, library_error

    conn = sqlite3.connect(":memory:")
    with pytest.raises(sqlite3.OperationalError) as caught:
        conn.execute("SELECT * FROM no_such_table")
    error = library_error(caught.value, "emguard")
    assert isinstance(error, LibraryError)
    assert str(error).splitlines()[0] == "emguard: sqlite3 failed: OperationalError: no such table: no_such_table"
    assert error.__cause__ is caught.value

    long = ValueError("Target modules not found\n" + "  layer\n" * 250)  # peft lists every layer
    assert library_error(long, "emguard") is None  # raised here, by the plugin's tests: no library's error
    try:
        import json

        json.loads("{")
    except ValueError as exc:
        assert library_error(exc, "emguard") is None  # the standard library is not one of them


def test_a_builtin_error_raised_inside_a_library_is_named_after_it() -> None:
    transformers = pytest.importorskip("transformers")
    from pytest_emguard.errors import first_line, library_error

    with pytest.raises(ValueError) as caught:
        transformers.AutoConfig.for_model("no-such-model-type")
    error = library_error(caught.value, "emguard")
    assert error is not None and error.problem.startswith("transformers failed: ValueError: ")
    assert "\n" not in error.problem and len(first_line(ValueError("x" * 1000))) == 300
