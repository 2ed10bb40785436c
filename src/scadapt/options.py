"""Options defined once: the constants and option groups that the console command, the MLproject
and the job dataclasses share.

This module imports nothing heavy (no torch, anndata or MLflow), so ``scadapt`` parses and
rejects a bad option in a fraction of a second, before any work starts.

An option group is a dataclass whose fields carry their help text (``metadata["help"]``) and,
where a string needs more than its type to become a value, a parser (``metadata["parse"]``).
:func:`add_options` turns a group into ``argparse`` arguments; ``scadapt.project`` writes the
MLproject parameters from the same parsers.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from scadapt.strategies import STRATEGY_NAMES  # light: the names, not the implementations

REGIMES = ("full", "low", "cross_study")
DEFAULT_LABEL_FRACTIONS = (0.01, 0.05, 0.10)
DEFAULT_N_FOLDS = 5
TUNING_MODES = ("reuse", "per_fold")
PRUNERS = ("median", "threshold", "none")
CHECKPOINTING_MODES = ("auto", "on", "off")
_BYTES_PER_UNIT = {"": 2**30, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20, "mib": 2**20,
                   "g": 2**30, "gb": 2**30, "gib": 2**30, "t": 2**40, "tb": 2**40, "tib": 2**40}


# -- parsers of option values (MLflow passes every parameter as a string) ------------------------

def optional_text(text: str) -> str | None:
    """An empty string means "not given"."""
    return text or None


def integer(text: str) -> int:
    """An integer, also when MLflow renders it as a float ("10.0")."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not math.isfinite(value) or not value.is_integer():
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}")
    return int(value)


def number(text: str) -> float:
    """A finite number (``nan`` and ``inf`` are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def boolean(text: str) -> bool:
    lowered = str(text).strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no", ""):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def names(text: str) -> tuple[str, ...]:
    """``a,b`` -> ``("a", "b")``."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def number_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(number(part) for part in text.split(",") if part.strip())
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def parse_study_groups(text: str) -> dict[str, tuple[str, ...]] | None:
    """``name:value,value;name:value`` -> ``{name: (value, ...)}``; empty -> None."""
    if not text:
        return None
    groups = {}
    for entry in filter(None, (e.strip() for e in text.split(";"))):
        name, sep, members = entry.partition(":")
        if not sep or not name.strip() or not members.strip():
            raise argparse.ArgumentTypeError(f"study groups are written name:value,value;name:value (got {entry!r})")
        groups[name.strip()] = tuple(m.strip() for m in members.split(",") if m.strip())
    return groups


def parse_memory_size(text: str) -> int | None:
    """``"8GB"``, ``"512MB"``, ``"8"`` (gigabytes) -> bytes; ``"auto"`` (or empty) -> None.
    Units are binary (1 GB = 2**30 bytes)."""
    text = str(text).strip().lower().replace(" ", "")
    if text in ("", "auto"):
        return None
    match = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)([a-z]*)", text)
    if not match or match.group(2) not in _BYTES_PER_UNIT or float(match.group(1)) <= 0:
        raise ValueError(f"a memory budget is 'auto' or a size such as 4GB or 512MB, not {text!r}")
    return int(float(match.group(1)) * _BYTES_PER_UNIT[match.group(2)])


def memory_size(text: str) -> str:
    """A memory budget as given (``auto``, ``4GB``, ...), checked."""
    try:
        parse_memory_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return str(text).strip() or "auto"


def strategy_names(text: str) -> tuple[str, ...]:
    chosen = names(text)
    if not chosen:
        raise argparse.ArgumentTypeError("name at least one strategy")
    if unknown := [s for s in chosen if s not in STRATEGY_NAMES]:
        raise argparse.ArgumentTypeError(f"unknown strategies {', '.join(unknown)}; known: {', '.join(STRATEGY_NAMES)}")
    return chosen


# -- option groups -----------------------------------------------------------------------------

def option(default: Any, help: str, parse: Callable[[str], Any] | None = None,
           choices: tuple[str, ...] | None = None) -> Any:
    """A dataclass field (with an immutable default) that is also a command-line option."""
    return field(default=default, metadata={"help": help, **({"parse": parse} if parse else {}),
                                            **({"choices": choices} if choices else {})})


@dataclass
class DataOptions:
    """How to read a labelled dataset: the same options for ``train``, ``tune``, ``splits``, the
    pipeline (``main``) and the benchmark. Unset keys fall back to the catalogue's for catalogued
    datasets; a user's ``.h5ad`` needs at least ``label_key``."""

    label_key: str | None = option(None, "obs column with the cell types (required for your own .h5ad)")
    batch_key: str | None = option(None, "obs column with the technology/batch (needed for cross_study)")
    layer: str | None = option(None, "matrix to use: a layer name, or 'raw' for adata.raw (default: X, "
                                     "or the catalogue's choice); counts or log-normalised values")
    gene_column: str | None = option(None, "var column with gene symbols, when var_names are not symbols")
    drop_rare_classes: bool = option(False, "drop classes too small for the regime instead of refusing "
                                            "(the drop is logged)")
    study_groups: dict[str, tuple[str, ...]] | None = option(
        None, "cross-study groups as name:value,value;name:value (default: the catalogue's groups, else leave "
              "one batch out)", parse=parse_study_groups)

    def given(self) -> dict[str, Any]:
        """The options set to something other than their default (what to pass on as overrides)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) != f.default and getattr(self, f.name) is not None}

    def data_options(self) -> DataOptions:
        """The data options alone (of a job dataclass that extends this group)."""
        return DataOptions(**{f.name: getattr(self, f.name) for f in dataclasses.fields(DataOptions)})


@dataclass
class SplitOptions:
    """How to split a dataset into training, validation and test cells: the same options for
    ``train``, ``tune`` and ``splits`` (the pipeline uses the defaults; the benchmark runs several
    regimes). Splits are deterministic from ``seed``."""

    regime: str = option("full", "full (k-fold), low (1/5/10 %% of the training labels) or cross_study "
                                 "(held-out technologies)", choices=REGIMES)
    n_folds: int = option(DEFAULT_N_FOLDS, "folds of the full and low regimes")
    validation_fraction: float = option(0.2, "share of the training cells kept to choose the epoch and the settings")
    label_fractions: tuple[float, ...] = option(DEFAULT_LABEL_FRACTIONS,
                                                f"training-label fractions for the low regime (default: "
                                                f"{','.join(map(str, DEFAULT_LABEL_FRACTIONS))})", parse=number_list)
    seed: int = option(0, "seed of the splits, the models and the search")

    def split_options(self) -> SplitOptions:
        """The split options alone (of a job dataclass that extends this group)."""
        return SplitOptions(**{f.name: getattr(self, f.name) for f in dataclasses.fields(SplitOptions)})


@dataclass
class MemoryOptions:
    """How much memory training through the backbone may use: the same options for ``train``,
    ``tune``, the pipeline (``main``) and the benchmark. They change how a step is computed, not
    its result (micro-batches accumulate to the whole batch; checkpointing recomputes the same
    activations)."""

    memory_budget: str = option("auto", "memory training may use beyond the loaded model and data, e.g. 4GB "
                                        "(auto: 8GB on a CPU, the free memory of a GPU; local workers share it); "
                                        "batches run in micro-batches that fit", parse=memory_size)
    activation_checkpointing: str = option("auto", "recompute the backbone's activations in the backward pass to "
                                                   "save memory: auto (when the budget needs it), on or off",
                                           choices=CHECKPOINTING_MODES)

    def memory_options(self) -> MemoryOptions:
        """The memory options alone (of a job dataclass that extends this group)."""
        return MemoryOptions(**{f.name: getattr(self, f.name) for f in dataclasses.fields(MemoryOptions)})


def add_options(parser: argparse.ArgumentParser, group: type) -> None:
    """One ``--name`` option per field of the dataclass ``group``."""
    hints = typing.get_type_hints(group)
    for f in dataclasses.fields(group):
        parse = f.metadata.get("parse") or _parser_for(hints[f.name])
        kwargs: dict[str, Any] = {"dest": f.name, "default": f.default, "type": parse, "help": f.metadata.get("help")}
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
        if parse is boolean:
            kwargs.update(nargs="?", const=True, metavar="true|false")
        parser.add_argument(f"--{f.name.replace('_', '-')}", **kwargs)


def dashed_option_names(argv: list[str]) -> list[str]:
    """``--label_key`` -> ``--label-key``: ``mlflow run -P name=value`` passes a parameter that the
    entry point does not declare as ``--name value``, with the parameter's underscores."""
    def dashed(arg: str) -> str:
        if not arg.startswith("--"):
            return arg  # a value keeps its underscores
        name, equals, value = arg[2:].partition("=")
        return f"--{name.replace('_', '-')}{equals}{value}"

    return [dashed(arg) for arg in argv]


def from_args(group: type, args: argparse.Namespace) -> Any:
    """The ``group`` dataclass filled from parsed arguments."""
    return group(**{f.name: getattr(args, f.name) for f in dataclasses.fields(group)})


def _parser_for(hint: Any) -> Callable[[str], Any]:
    options = set(typing.get_args(hint)) or {hint}
    if bool in options:
        return boolean
    if int in options:
        return integer
    if float in options:
        return number
    return optional_text
