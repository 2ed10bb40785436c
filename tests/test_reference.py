"""The documentation's reference pages are written from the code: every strategy of the registry,
every option of every command, every name of the MLflow contract; a page naming an option that no
command declares is found."""

from __future__ import annotations

from pathlib import Path

from conftest import REPO
from mlproject import subparsers
from reference import cli_reference, contract_entries, contract_reference, strategies_reference, unknown_options

from scadapt.cli import build_parser
from scadapt.strategies import NAMES
from scadapt.tracking import contract


def test_the_strategies_page_lists_every_registered_strategy_with_its_search_space():
    page = strategies_reference(REPO / "tests" / "data" / "scgpt_human")
    for name in NAMES:
        assert f"| [`{name}`](#{name}) |" in page and f"\n## {name}\n" in page
    assert "| `r` | `8` | rank of each update | >= 1 | one of 4, 8, 16 |" in page  # LoRA's rank: meaning, range, search
    assert "| [`full`](#full) | trained through the backbone | full fine-tuning of the backbone and head | 50,810,890 |" \
        in page  # whole-human shapes, 10 classes


def test_the_command_reference_lists_every_option_of_every_command():
    page = cli_reference()
    for command, parser in subparsers(build_parser()).items():
        section = page.split(f"## `scadapt {command}`\n", 1)[1].split("\n## ", 1)[0]
        for action in parser._actions:
            if action.option_strings and action.dest != "help":
                assert f"`{action.option_strings[0]}`" in section, (command, action.option_strings)
    assert "| `--n-trials` | `n_trials` |" in page  # the MLproject parameter beside the option


def test_the_contract_page_names_every_constant_with_its_comment():
    page = contract_reference()
    names = [name for name in vars(contract) if name.isupper()]
    assert {name for _, name, _, _ in contract_entries(contract)} == set(names)
    assert "| `CANDIDATE_TAG` | `scadapt.candidate` | \"true\" on runs that compete for @champion |" in page


def test_a_page_naming_a_removed_option_is_found():
    assert unknown_options("scadapt tune --n-trials 3 --storage x; mlflow run . --env-manager local -P n_trials=3") \
        == set()
    assert unknown_options("scadapt tune --n-trails 3 -P n_trails=3") == {"--n-trails", "-P n_trails="}
    for page in [REPO / "README.md", *Path(REPO / "docs").rglob("*.md")]:
        assert not unknown_options(page.read_text()), page
