"""Reference pages of the documentation, written from the code so that they cannot drift from it.

- :func:`cli_reference`: every option of every ``scadapt`` command and its MLproject parameter,
  from the same parsers (and so the same ``option()`` declarations) the command uses;
- :func:`strategies_reference`: every registered strategy, its family, what it adapts, its
  search space and its trainable parameters at the whole-human scGPT shapes;
- :func:`contract_reference`: the experiments, tags, artifacts and metrics of
  :mod:`scadapt.tracking.contract`, with the comments that explain them.

``docs/gen_pages.py`` writes them into the site at build time (``mkdocs build``).
"""

from __future__ import annotations

import argparse
import ast
import io
import re
import tokenize
from pathlib import Path
from typing import Any

from mlproject import ENTRY_POINTS, subparsers  # tools/mlproject.py, beside this file

from scadapt.strategies.hyperparameters import declarations


def cli_reference() -> str:
    """Markdown: each subcommand of ``scadapt``, its MLflow entry point, and a table of its options."""
    from scadapt.cli import build_parser

    entry_of = {command: entry for entry, (command, _, _) in ENTRY_POINTS.items()}
    lines = ["# Command and MLproject reference", "",
             "Written from the option declarations at build time: every `scadapt` subcommand with every "
             "option it takes. A subcommand that is also an MLflow entry point takes the same settings as "
             "`-P name=value` (`mlflow run . -e ENTRY --env-manager local -P name=value`), with the same "
             "defaults.", ""]
    for command, parser in subparsers(build_parser()).items():
        entry = entry_of.get(command)
        lines += [f"## `scadapt {command}`", "", _sentence(parser.description or _help_of(command)), ""]
        if entry:
            about = ENTRY_POINTS[entry][2]
            run = "mlflow run . --env-manager local" if entry == "main" else f"mlflow run . -e {entry} --env-manager local"
            lines += [f"MLflow entry point `{entry}`: `{run}`. {about}", ""]
        lines += ["| option | " + ("MLproject parameter | " if entry else "") + "default | what it sets |",
                  "|---|" + ("---|" if entry else "") + "---|---|"]
        formatter = parser._get_formatter()
        for action in parser._actions:
            if not action.option_strings or action.dest == "help":
                continue
            names = ", ".join(f"`{name}`" for name in action.option_strings)
            default = "required" if action.required else _default(action.default)
            text = _DEFAULT_NOTE.sub("", formatter._expand_help(action)) if action.help else ""
            row = [names, *([f"`{action.dest}`"] if entry else []), default, _cell(text)]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


_DEFAULT_NOTE = re.compile(r"\s*\(default: (?:[^()]|\([^()]*\))*\)")  # the table has a default column


def _help_of(command: str) -> str:
    from scadapt.cli import build_parser

    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return next((c.help for c in action._choices_actions if c.dest == command), "") or ""


def _sentence(text: str) -> str:
    text = text.strip()
    return (text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")) if text else ""


def _default(value: object) -> str:
    if value is None or value == {} or value == "":
        return "(none)"
    if isinstance(value, tuple | list):
        return f"`{','.join(map(str, value))}`"
    return f"`{value}`"


def _cell(text: str) -> str:
    """Text for one cell of a Markdown table (Sphinx roles such as :meth:`x` become `x`)."""
    return re.sub(r":\w+:`~?([^`]+)`", r"`\1`", " ".join(text.split())).replace("|", "\\|")


# Options of the other tools the documentation shows (mlflow, pip, PostgreSQL, mkdocs, benchmark scripts).
OTHER_TOOLS_OPTIONS = frozenset({"--env-manager", "--no-deps", "--host", "--port", "--workers", "--backend-store-uri",
                                 "--artifacts-destination", "--pwprompt", "--strict", "--help", "--part", "--name",
                                 "--cap", "--cells"})
_OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
_PARAMETER = re.compile(r"-P ([a-z_]+)=")


def unknown_options(text: str) -> set[str]:
    """The ``--options`` and ``-P parameters`` a page names that no ``scadapt`` command or MLflow
    entry point declares (nor another tool the pages show): a page still naming a removed option."""
    from scadapt.cli import build_parser

    options, parameters = set(OTHER_TOOLS_OPTIONS), {"name"}
    for parser in subparsers(build_parser()).values():
        for action in parser._actions:
            options.update(action.option_strings)
            parameters.add(action.dest)
    return ({o for o in _OPTION.findall(text) if o not in options} |
            {f"-P {p}=" for p in _PARAMETER.findall(text) if p not in parameters})


# -- strategies -----------------------------------------------------------------------------------

def trainable_parameters(strategy: type, checkpoint: str | Path, n_classes: int = 10) -> int | None:
    """Trainable parameters of ``strategy`` at the shapes of ``checkpoint`` (its ``args.json`` and
    ``vocab.json``; no weights are read: the model is built on PyTorch's meta device). None for
    strategies without a backbone, whose size follows the data."""
    import torch

    from scadapt.backbone import ScGPTBackbone
    from scadapt.backbone.checkpoint import ARGS_FILE, VOCAB_FILE, read_args
    from scadapt.backbone.config import BackboneConfig
    from scadapt.tokenization import GeneVocab

    if not strategy.needs_backbone:
        return None
    checkpoint = Path(checkpoint)
    vocab = GeneVocab.from_file(checkpoint / VOCAB_FILE)
    with torch.device("meta"):
        backbone = ScGPTBackbone(BackboneConfig.from_args(read_args(checkpoint / ARGS_FILE), len(vocab)),
                                 pad_id=vocab.pad_id)
        backbone.decoder = backbone.mvc_decoder = None  # as loaded for annotation
        model = strategy(strategy.config_class.from_params({})).build_model(backbone, n_classes)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def strategies_reference(checkpoint: str | Path, n_classes: int = 10) -> str:
    """Markdown: the strategy registry as a table, then each strategy's defaults and search space."""
    from scadapt.strategies import all_strategies
    from scadapt.strategies.families import AdaptedStrategy, ExpressionStrategy, FrozenStrategy

    families = {ExpressionStrategy: "expression only (no backbone)", FrozenStrategy: "frozen backbone",
                AdaptedStrategy: "trained through the backbone"}
    strategies = all_strategies()
    counts = {name: trainable_parameters(cls, checkpoint, n_classes) for name, cls in strategies.items()}
    total = counts["full"]
    lines = ["# Strategies", "",
             "Written from the strategy registry (`scadapt.strategies.NAMES`) at build time. Trainable "
             f"parameters are counted at the whole-human scGPT shapes ({Path(checkpoint).name}: its `args.json` "
             f"and `vocab.json`), for {n_classes} classes, with each strategy's default settings; expression "
             "baselines have no backbone and their size follows the genes and classes of the data.", "",
             "## Families", ""]
    for family, title in families.items():
        members = ", ".join(f"`{n}`" for n, c in strategies.items() if issubclass(c, family))
        lines.append(f"- **{title}** ({members}): {_cell(family.__doc__ or '')}")
    lines += ["", "## The registry", "",
              "| strategy | family | what it adapts | trainable parameters | share of `full` |",
              "|---|---|---|---|---|"]
    for name, cls in strategies.items():
        family = next(title for f, title in families.items() if issubclass(cls, f))
        count = counts[name]
        share = f"{count / total:.3%}" if count is not None and total else "-"
        lines.append(f"| [`{name}`](#{name}) | {family} | {_cell(cls.description)} | "
                     f"{'follows the data' if count is None else f'{count:,}'} | {share} |")
    lines.append("")
    for name, cls in strategies.items():
        lines += [f"## {name}", "", f"{_sentence(cls.description)} Configuration: "
                  f"`{cls.config_class.__module__}.{cls.config_class.__name__}`; `scadapt train --strategy {name} "
                  "--hparams help` prints this table.", "",
                  "| hyperparameter | default | what it is | allowed | search space |", "|---|---|---|---|---|"]
        for d in declarations(cls.config_class).values():
            lines.append(f"| `{d.name}` | `{d.default}` | {_cell(d.help)} | {d.range_text()} | {d.search_text()} |")
        lines.append("")
    return "\n".join(lines)


# -- the MLflow contract --------------------------------------------------------------------------

def contract_entries(module) -> list[tuple[str, str, str, str]]:
    """``(section, name, value, comment)`` for every constant of the contract module, in order.

    The comments are read from the source (``tokenize``), so the comment written beside a name, or
    the one just above it, is its documentation; the values are the module's own."""
    source = Path(module.__file__).read_text()
    comments = {token.start[0]: token.string.lstrip("#").strip()
                for token in tokenize.generate_tokens(io.StringIO(source).readline) if token.type == tokenize.COMMENT}
    lines = source.splitlines()
    entries, section = [], ""
    for node in ast.parse(source).body:
        above = [comments[n] for n in range(_comment_block_start(lines, node.lineno), node.lineno) if n in comments]
        if headings := [m.group(1) for text in above if (m := _SECTION.match(text))]:
            section = headings[-1]
        if not isinstance(node, ast.Assign):
            continue
        target = node.targets[0]
        names = [t.id for t in target.elts] if isinstance(target, ast.Tuple) else [target.id]
        comment = comments.get(node.end_lineno) or " ".join(t for t in above if not _SECTION.match(t))
        for name in names:
            entries.append((section, name, _render_value(getattr(module, name)), comment))
    return entries


_SECTION = re.compile(r"-+ (.+?) -+$")  # "# -- tags ----": a heading of the contract module


def _comment_block_start(lines: list[str], lineno: int) -> int:
    """The first line of the comment block just above line ``lineno`` (1-based)."""
    start = lineno
    while start > 1 and lines[start - 2].lstrip().startswith("#"):
        start -= 1
    return start


def _render_value(value: Any) -> str:
    if isinstance(value, str):
        return f"`{value}`"
    return ", ".join(f"`{v}`" for v in sorted(value) if isinstance(value, frozenset)) if isinstance(value, frozenset) \
        else ", ".join(f"`{v}`" for v in value)


def contract_reference() -> str:
    """Markdown: the experiments, run tags, artifacts and metrics scadapt writes into MLflow."""
    from scadapt.tracking import contract

    lines = ["# The MLflow contract", "",
             "Written at build time from `scadapt/tracking/contract.py`, the one module that names what one "
             "stage writes into MLflow and another reads back. A dataset's `train`, `tune` and `pipeline` runs "
             f"go to the experiment `{contract.experiment_name('<dataset>')}`; the registered model of a dataset "
             "is named by the promotion policy (`registered_model` in `registry/policy.yaml`, "
             "`scadapt-<dataset>` by default) and carries the aliases `@champion` and `@previous`.", ""]
    section = None
    for where, name, value, comment in contract_entries(contract):
        if where != section:
            section = where
            lines += ["", f"## {section.capitalize()}", "", "| constant | value | meaning |", "|---|---|---|"]
        lines.append(f"| `{name}` | {_cell(value)} | {_cell(comment)} |")
    lines.append("")
    return "\n".join(lines)
