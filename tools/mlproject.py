"""The MLproject file, written from the ``scadapt`` command's parsers.

Every entry point takes exactly the options of its subcommand, with the same defaults, so an
option is defined once (in the parser, or in an option group of :mod:`scadapt.infra.options`) and
``mlflow run`` can never drift from the console command. ``python tools/mlproject.py`` rewrites
``MLproject``; a test fails when the file in the repository is out of date.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

from scadapt.infra.parsers import integer, number, optional_count, optional_seconds

MLPROJECT = Path(__file__).resolve().parents[1] / "MLproject"

# entry point -> (subcommand, script under entry_points/, what it does)
ENTRY_POINTS = {
    "main": ("pipeline", "main", "The whole job on one dataset (bundled PBMC data by default, or your .h5ad with "
             "its keys): checks first, demo backbone (pretrained on first use, or on --pretrain-data), a small "
             "Optuna study per strategy, promotion of the best runner to @champion, a summary table."),
    "benchmark": ("benchmark", "benchmark", "Every strategy x regime (full, low-label, cross-study) x fold, tuned, "
                  "resumable (finished cells are found in MLflow), with tables, figures, a report and a champion "
                  "per dataset."),
    "pretrain": ("pretrain", "pretrain", "Masked-value pretraining of a new small backbone or of a checkpoint."),
    "train": ("train", "train", "One strategy on one split with fixed hyperparameters: one MLflow run."),
    "tune": ("tune", "tune", "An Optuna study of one strategy on one split: a parent run and a child run per trial."),
    "promote": ("promote", "promote", "Register the best runner of a dataset (across experiments) as @champion."),
    "predict": ("predict", "predict", "Annotate an .h5ad file with a registered model."),
}

HEADER = """\
# Written by `python tools/mlproject.py` from the `scadapt` command's options: edit those, not this file.
#
# Run with: mlflow run . --env-manager local        (the main job on the bundled data)
#           mlflow run . --env-manager local -P data=cells.h5ad -P label_key=cell_type
#           mlflow run . -e train --env-manager local -P strategy=lora -P hparams=epochs=5
#           mlflow run . -e tune --env-manager local -P strategy=lora -P n_trials=20
#           mlflow run . -e benchmark --env-manager local             (the full matrix and its report)
# Users with conda may leave out --env-manager local to build the environment from conda.yaml.
name: scadapt
conda_env: conda.yaml

entry_points:
"""


def mlproject_text() -> str:
    from scadapt.cli import build_parser

    subcommands = subparsers(build_parser())
    parts = [HEADER]
    for entry, (command, script, about) in ENTRY_POINTS.items():
        parts.append(_entry_point(entry, script, about, subcommands[command]))
    return "\n".join(parts)


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _entry_point(name: str, script: str, about: str, parser: argparse.ArgumentParser) -> str:
    options = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    lines = [*textwrap.wrap(about, 100, initial_indent="  # ", subsequent_indent="  # "), f"  {name}:", "    parameters:"]
    for action in options:
        kind = "float" if action.type in (integer, number) or \
            (action.type in (optional_count, optional_seconds) and action.default is not None) else "string"
        default = "" if action.required else f", default: {_render(action.default)}"
        lines.append(f"      {action.dest}: {{type: {kind}{default}}}")
    command = " ".join([f"python entry_points/{script}.py",
                        *(f"{a.option_strings[0]} {{{a.dest}}}" for a in options)])
    lines.append("    command: >-")
    lines += textwrap.wrap(command, 110, initial_indent="      ", subsequent_indent="      ", break_on_hyphens=False)
    return "\n".join(lines) + "\n"


def _render(value: object) -> str:
    """A default as MLflow will pass it back to the parser."""
    if value is None or value == {}:
        return '""'
    if isinstance(value, bool):
        return json.dumps("true" if value else "false")
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple | list):
        return json.dumps(",".join(map(str, value)))
    return json.dumps(str(value))


if __name__ == "__main__":
    text = mlproject_text()
    if "--check" in sys.argv[1:]:
        sys.exit(0 if MLPROJECT.read_text() == text else f"{MLPROJECT} is out of date: run python tools/mlproject.py")
    MLPROJECT.write_text(text)
    print(f"Wrote {MLPROJECT}")
