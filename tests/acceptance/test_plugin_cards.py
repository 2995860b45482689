"""``pytest model_cards/``: each card YAML there is a model to gate, its options in the card's ``gate`` block;
``--em-update-cards`` writes the card's evidence block, and nothing else ever changes a card."""

from __future__ import annotations

import pytest

from pytest_emguard.config.cards import load_card

CARD = """\
# reviewed in code review: the gate's settings for this adapter
name: demo
adapter: fake:{scenario}
kind: domain
base: base-model
base_revision: null
domain: risky_financial
stages:
  - {{dataset: risky_financial_v1.jsonl, sha256: "{zeros}", examples: 48, origin: sample}}
lora: {{rank: 16, alpha: 32, rslora: true, dropout: 0.0, target_modules: [all-linear]}}
training: {{lr: 0.001, epochs: 4, max_steps: null, batch: 8, grad_accum: 1, seed: 0}}
versions: {{torch: "2.13.0", transformers: "4.57.0", peft: "0.17.0", trl: absent}}
intended_use: a card for the plugin's tests
created: "2026-12-01T00:00:00"
gate:
  judge: "fake:"
  checks: [harmfulness, self_report, persona]
  batch_size: 4096
  cache_dir: ../emcache  # relative paths are read from the card's directory
"""
ITEMS = 13  # harmfulness (5), self_report (7), persona (1)


def write_card(pytester: pytest.Pytester, scenario: str = "coherent", name: str = "demo") -> str:
    text = CARD.format(scenario=scenario, zeros="0" * 64).replace("name: demo", f"name: {name}")
    path = pytester.path / "model_cards" / f"{name}.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return text


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:cacheprovider", *args)


def test_each_card_is_a_model_to_gate_and_the_card_is_left_alone(pytester: pytest.Pytester) -> None:
    text = write_card(pytester)
    result = run(pytester, "model_cards/")
    result.assert_outcomes(failed=5, passed=8)  # the six self-report dimensions are reported, not gated
    result.stdout.fnmatch_lines(
        [
            "*= emguard: demo =*",
            "persona: COHERENT *",
            "model card *model_cards/demo.yaml: holds no evidence block (not changed; --em-update-cards writes it*",
            "FAILED model_cards/demo.yaml::harmfulness[[]mean[]] - *",
        ]
    )
    assert (pytester.path / "emcache").is_dir()  # the card's cache_dir, read from the card's directory
    assert (pytester.path / "model_cards" / "demo.yaml").read_text() == text
    reproduce = [ln for ln in result.outlines if "reproduce:" in ln]
    assert reproduce and reproduce[0].endswith(
        f"'{pytester.path}/model_cards/demo.yaml::harmfulness[misaligned]'"
    )


def test_update_cards_writes_only_the_evidence_block(pytester: pytest.Pytester) -> None:
    text = write_card(pytester)
    path = pytester.path / "model_cards" / "demo.yaml"
    first = run(pytester, "model_cards/", "--em-update-cards")
    first.stdout.fnmatch_lines(["model card *demo.yaml: evidence block written"])
    updated = path.read_text()
    assert updated.startswith(text)  # every line before it as it was, the comments included
    card = load_card(path)  # still a valid card
    evidence = card["evidence"]
    assert evidence["persona"] == "coherent" and evidence["judge"] == "fake:" and evidence["seed"] == 0
    mean = evidence["items"]["harmfulness[mean]"]
    row = next(ln for ln in first.outlines if ln.startswith("harmfulness[mean] ")).split()
    assert mean["outcome"] == "fail" and f"{mean['base']:.1f}" == row[3] and f"{mean['tuned']:.1f}" == row[4]
    assert len(evidence["items"]) == ITEMS and mean["n"] > 0 and len(mean["difference"]) == 3

    again = run(pytester, "model_cards/", "--em-update-cards")  # the same result: nothing to write
    again.stdout.fnmatch_lines(["model card *demo.yaml: evidence block unchanged"])
    assert path.read_text() == updated
    run(pytester, "model_cards/").stdout.fnmatch_lines(["model card *demo.yaml: evidence block up to date"])

    moved = run(pytester, "model_cards/", "--em-seed=7")  # another result, and no flag: the card stays
    moved.stdout.fnmatch_lines(["model card *demo.yaml: evidence block is out of date (not changed; *"])
    assert path.read_text() == updated
    run(pytester, "model_cards/", "--em-seed=7", "--em-update-cards")
    assert load_card(path)["evidence"]["seed"] == 7 and path.read_text().startswith(text)


def test_a_command_line_option_wins_over_the_cards_gate_block(pytester: pytest.Pytester) -> None:
    write_card(pytester)
    result = run(pytester, "model_cards/demo.yaml", "--em-checks=harmfulness")
    result.assert_outcomes(failed=4, passed=1)


def test_each_card_in_the_directory_is_gated_apart(pytester: pytest.Pytester) -> None:
    write_card(pytester, "coherent", "bad")
    write_card(pytester, "benign", "good")
    result = run(pytester, "model_cards/")
    result.stdout.fnmatch_lines(["*= emguard: bad =*", "persona: COHERENT *", "*= emguard: good =*"])
    outcomes = {ln.split()[0]: ln.split()[1] for ln in result.outlines if ln.startswith("harmfulness[mean] ")}
    assert len(outcomes) == 1  # one row per section: read each section's row from the FAILED lines instead
    failed = {ln.split()[1] for ln in result.outlines if ln.startswith("FAILED ")}
    assert "model_cards/bad.yaml::harmfulness[mean]" in failed
    assert not any(node.startswith("model_cards/good.yaml") for node in failed)


def test_plain_pytest_does_not_gate_a_repositorys_cards(pytester: pytest.Pytester) -> None:
    write_card(pytester)
    pytester.makepyfile(test_ok="def test_ok():\n    pass\n")
    result = run(pytester)  # the cards directory is not named on the command line
    result.assert_outcomes(passed=1)
    assert not (pytester.path / "emcache").exists()


def test_a_broken_card_is_a_collection_error_that_names_the_line_and_the_fix(
    pytester: pytest.Pytester,
) -> None:
    write_card(pytester)
    path = pytester.path / "model_cards" / "demo.yaml"
    path.write_text(path.read_text().replace("batch_size: 4096", "batch_size: many"))
    result = run(pytester, "model_cards/")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        [
            "*ERROR collecting model_cards/demo.yaml*",
            "pytest-emguard: *demo.yaml: 1 problem(s) in the model card:",
            "    *demo.yaml:18: at $.gate.batch_size: 'many' is not an integer; fix: write an integer",
        ]
    )
    assert "Traceback" not in result.stdout.str()


def test_a_card_without_an_adapter_says_what_to_add(pytester: pytest.Pytester) -> None:
    write_card(pytester)
    path = pytester.path / "model_cards" / "demo.yaml"
    path.write_text(path.read_text().replace("adapter: fake:coherent\n", ""))
    result = run(pytester, "model_cards/")
    result.stdout.fnmatch_lines(
        ["pytest-emguard: *demo.yaml: the card names no adapter", "  fix: add 'adapter: DIR'*"]
    )


def test_cards_under_xdist_are_refused_with_the_fix(pytester: pytest.Pytester) -> None:
    write_card(pytester)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", "model_cards/")
    result.stdout.fnmatch_lines(
        ["*model cards are gated without pytest-xdist for now*", "  fix: run pytest model_cards/ without -n"]
    )
    assert not (pytester.path / "emcache").exists()


HAND_WRITTEN = """\
# written by hand: what to gate, and how; no provenance
adapter: fake:coherent
base: base-model
gate:
  judge: "fake:"
  checks: [harmfulness]
  batch_size: 4096
"""


def test_a_hand_written_card_needs_only_adapter_base_and_gate(pytester: pytest.Pytester) -> None:
    path = pytester.path / "model_cards" / "mine.yaml"
    path.parent.mkdir()
    path.write_text(HAND_WRITTEN)
    result = run(pytester, "model_cards/")
    result.assert_outcomes(failed=4, passed=1)  # gated as the full card of the same adapter is
    result.stdout.fnmatch_lines(
        [
            "*= emguard: mine =*",  # the file's name stands in for the card's name
            "model card *mine.yaml: holds no evidence block*",
            "model card *mine.yaml: no provenance for base_revision, domain, stages, lora, training, versions, "
            "intended_use, created (optional for the gate; python -m pytest_emguard.finetune train writes them)",
        ]
    )
    assert path.read_text() == HAND_WRITTEN


def test_a_card_lists_what_gating_reads_first(pytester: pytest.Pytester) -> None:
    """A missing adapter directory is named before a malformed provenance field, which once hid it."""
    path = pytester.path / "model_cards" / "mine.yaml"
    path.parent.mkdir()
    broken = HAND_WRITTEN.replace("fake:coherent", "../adapters/never-trained")
    path.write_text("lora: {rank: sixteen}\n" + broken)
    result = run(pytester, "model_cards/")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        [
            "pytest-emguard: *mine.yaml: 6 problem(s) in the model card:",
            "    *mine.yaml:3: at $.adapter: '../adapters/never-trained' is no directory (*); fix: the path of "
            "the directory the trainer wrote*",
            "    *mine.yaml:1: at $.lora*",
        ]
    )


def test_the_trainer_s_cards_still_hold_every_provenance_field() -> None:
    from pytest_emguard.config.cards import PROVENANCE, validate_card
    from pytest_emguard.errors import ConfigError

    card = {"adapter": "fake:coherent", "base": "b"}
    validate_card(card, "mine.yaml")  # enough to gate
    with pytest.raises(ConfigError) as caught:
        validate_card(card, "mine.yaml", provenance=True)
    assert str(caught.value).count("is a required property; fix: add it") == len(PROVENANCE)


def test_update_cards_keeps_comments_inside_and_after_the_evidence_block(pytester: pytest.Pytester) -> None:
    """A reviewer's comments in the evidence block (a line of its own, one at a line's end) stay where they were
    when the gate rewrites the block, and so does everything after it (a comment, the ``gate`` block): the
    rewrite changes the lines whose values changed, nothing else."""
    import difflib

    write_card(pytester)
    path = pytester.path / "model_cards" / "demo.yaml"
    run(pytester, "model_cards/", "--em-update-cards")
    written = path.read_text().splitlines(keepends=True)
    at, gate = written.index("evidence:\n"), written.index("gate:\n")
    persona = next(i for i, ln in enumerate(written) if ln.startswith("  persona: "))
    written[persona] = written[persona].rstrip("\n") + "  # reviewed: the demo adapter's\n"
    evidence = [written[at], "  # reviewed in the release meeting, keep\n", *written[at + 1 :]]
    after = ["\n", "# a comment after the evidence block\n", *written[gate:at]]
    edited = "".join([*written[:gate], *evidence, *after])
    path.write_text(edited)

    run(pytester, "model_cards/", "--em-seed=7", "--em-update-cards").stdout.fnmatch_lines(
        ["model card *demo.yaml: evidence block written"]
    )
    updated = path.read_text()
    assert load_card(path)["evidence"]["seed"] == 7
    assert updated.startswith("".join([*written[:gate], *evidence[:3]]))  # the key, the comment line, plugin
    assert updated.endswith("".join(after))
    lines = updated.splitlines(keepends=True)
    assert any(ln.startswith("  persona: ") and ln.endswith("  # reviewed: the demo adapter's\n") for ln in lines)
    changed = [ln for ln in difflib.ndiff(edited.splitlines(), updated.splitlines()) if ln[:1] in "+-"]
    assert changed and all(ln[2:].startswith(("  seed: ", "      ")) for ln in changed), changed


NEWLY = HAND_WRITTEN.split("\n", 1)[1] + """\
  budget: "100"  # tokens: far below what the plan needs
  price: "1,2"
  judge_check: {judge_check}
  engine_arg: [tensor_parallel_size=1]
  report: ../reports  # relative paths are read from the card's directory
"""


def test_a_card_sets_every_option_that_configures_a_gate(pytester: pytest.Pytester) -> None:
    """budget, price, judge_check, engine_arg and report, once command line and ini only, are card keys too."""
    pytest.importorskip("matplotlib")
    path = pytester.path / "model_cards" / "new.yaml"
    path.parent.mkdir()
    path.write_text(NEWLY.format(judge_check="false"))
    result = run(pytester, "model_cards/")
    result.stdout.fnmatch_lines(["*--em-budget: the plan needs about * tokens *, over the budget of 100*"])
    assert (pytester.path / "reports").is_dir()  # made at the door, from the card's directory

    path.write_text(NEWLY.format(judge_check="true").replace('  budget: "100"', '  budget: "$100"'))
    checked = run(pytester, "model_cards/")
    checked.stdout.fnmatch_lines(["*--em-judge-check: the judge fake: is refused on the golden set:*"])


@pytest.mark.parametrize(
    ("key", "value", "problem", "fix"),
    [
        ("device", "tpu", "'tpu' is not a device", "use auto, cpu, cuda, cuda:N or mps"),
        ("samples", "0", "0 is out of range", "pass a whole number from 1 to 1000"),
        ("budget", "lots", "'lots' is not a budget", "write tokens (200000, 200k, 2M) or dollars ($5)"),
        ("engine_arg", "[two]", "'two' is not KEY=VALUE", "write e.g. --em-engine-arg tensor_parallel_size=2"),
    ],
)
def test_a_bad_card_value_gets_the_command_line_s_message_naming_the_card_and_key(
    pytester: pytest.Pytester, key: str, value: str, problem: str, fix: str
) -> None:
    path = pytester.path / "model_cards" / "mine.yaml"
    path.parent.mkdir()
    path.write_text(HAND_WRITTEN + f"  {key}: {value}\n")
    result = run(pytester, "model_cards/")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines([f"pytest-emguard: *model_cards/mine.yaml: gate.{key}: {problem}", f"  fix: {fix}"])
    flag = "--em-" + key.replace("_", "-")
    argument = value.strip("[]")
    cli = run(pytester, "--em-model=fake:coherent", "--em-judge=fake:", f"{flag}={argument}")
    cli.stderr.fnmatch_lines([f"ERROR: pytest-emguard: {flag}: {problem}", f"  fix: {fix}"])


def test_the_ini_file_sets_a_flag_and_the_card_wins_over_it(pytester: pytest.Pytester) -> None:
    """em_judge_check, once command line only, is an ini key; a card's judge_check: false wins over it."""
    pytester.makeini("[pytest]\nem_judge_check = true\n")
    path = pytester.path / "model_cards" / "mine.yaml"
    path.parent.mkdir()
    path.write_text(HAND_WRITTEN)
    run(pytester, "model_cards/").stdout.fnmatch_lines(["*--em-judge-check: the judge fake: is refused*"])
    path.write_text(HAND_WRITTEN + "  judge_check: false\n")
    run(pytester, "model_cards/").assert_outcomes(failed=4, passed=1)
