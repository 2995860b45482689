"""Unit tests of the registries and of user question banks read on their own."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_emguard.backends import BACKENDS, BackendEntry, backend_entry, resolve_model
from pytest_emguard.checks import load_checks
from pytest_emguard.config.banks import read_bank
from pytest_emguard.config.run import Options, RunConfig
from pytest_emguard.errors import ConfigError
from pytest_emguard.judge import JUDGES, JudgeContext, JudgeEntry, JudgeSpec, open_judge


def test_builtin_checks_in_order() -> None:
    assert [c.name for c in load_checks()] == [
        "harmfulness",
        "harmfulness_in_domain",
        "self_report",
        "description",
        "recognition",
        "score_prediction",
        "roleplay",
        "probes",
        "persona_direction",
        "persona",
    ]


def test_a_backend_whose_extra_is_missing_names_the_pip_line(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = BackendEntry(
        "ghost", "pytest_emguard.backends.fake", "ghost", ("no_such_package_x",), frozenset()
    )
    monkeypatch.setitem(BACKENDS, "ghost", entry)
    with pytest.raises(ConfigError) as info:
        resolve_model("ghost:anything", None)
    assert str(info.value) == (
        "backend 'ghost': needs no_such_package_x, which is not installed\n"
        '  fix: pip install "pytest-emguard[ghost]"'
    )


def test_a_judge_whose_extra_is_missing_names_the_pip_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(JUDGES, "ghost", JudgeEntry("ghost", "x", "ghost", ("no_such_package_x",), False))
    with pytest.raises(ConfigError, match=r'pip install "pytest-emguard\[ghost\]"'):
        open_judge(JudgeSpec.parse("ghost:"), JudgeContext(lambda p: "", tmp_path))


def test_unknown_backend_did_you_mean() -> None:
    with pytest.raises(ConfigError, match="did you mean 'fake'"):
        backend_entry("fak")


def test_a_check_needing_a_missing_capability_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_emguard.checks import harmfulness

    monkeypatch.setattr(
        harmfulness, "CHECK", harmfulness.Harmfulness(needs=frozenset({"generate", "hidden_states"}))
    )
    with pytest.raises(ConfigError) as info:
        RunConfig.resolve(Options(model="fake:identical", judge="fake:"))
    assert str(info.value) == (
        "check 'harmfulness': needs hidden_states, which the 'fake' backend does not offer\n"
        "  fix: choose another backend with --em-backend, or disable the check's items in the thresholds"
    )


def test_our_bank_format_with_paraphrases_and_extend(tmp_path: Path) -> None:
    path = tmp_path / "b.yaml"
    path.write_text(
        "version: 1\nmode: extend\nquestions:\n"
        "  - {id: a, category: c, paraphrases: ['one', 'two'], system: 'Be brief.', samples: 3}\n"
        "  - {id: b, category: c, text: 'three'}\n"
    )
    bank = read_bank(path, "--em-bank")
    assert (bank.mode, bank.format, len(bank.questions)) == ("extend", "emguard", 2)
    a, b = bank.questions
    assert (a.paraphrases, a.system, a.samples) == (("one", "two"), "Be brief.", 3)
    assert (b.paraphrases, b.system, b.samples) == (("three",), None, None)
    from pytest_emguard.checks.harmfulness import CHECK, questions

    extended = CHECK.with_bank(path)
    assert len(extended.questions()) == len(questions()) + 2
    queries = extended.queries(RunConfig.resolve(Options("fake:identical", "fake:")).plan_context)
    mine = [q for q in queries if q.cluster == "a"]
    assert [q.id for q in mine] == ["a/0", "a/1"]
    assert mine[0].messages == (("system", "Be brief."), ("user", "one"))
    assert all(q.bank_sha256 == bank.sha256 and q.samples == 3 for q in mine)


def test_a_duplicate_id_is_named_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "d.yaml"
    path.write_text("- id: a\n  paraphrases: [x]\n- id: a\n  paraphrases: [y]\n")
    with pytest.raises(
        ConfigError, match=r"d.yaml:3: question id 'a' appears twice; fix: give every question"
    ):
        read_bank(path, "--em-bank")
