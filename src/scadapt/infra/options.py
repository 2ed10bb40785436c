"""Options declared once: the machinery that turns a dataclass field into a command-line option and
an MLproject parameter, the parsers of option values, and the memory options every job shares.
(What a dataset is and how it is split lives in :mod:`scadapt.data.options`.)

This module imports nothing heavy (no torch, anndata or MLflow), so ``scadapt`` parses and
rejects a bad option in a fraction of a second, before any work starts.

An option group is a dataclass whose fields carry their help text (``metadata["help"]``) and,
where a string needs more than its type to become a value, a parser (``metadata["parse"]``).
:func:`add_options` turns a group into ``argparse`` arguments; ``tools/mlproject.py`` writes the
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
from typing import Any, TypeVar

from scadapt.infra.errors import ScadaptError

T = TypeVar("T")
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


def optional_count(text: str) -> int | None:
    """A whole number, where 0 or nothing means "not given" (None)."""
    return integer(text) or None if str(text).strip() else None


def optional_seconds(text: str) -> float | None:
    """Seconds, where 0 or nothing means "no limit" (None)."""
    return number(text) or None if str(text).strip() else None


def optional_minutes(text: str) -> float | None:
    """Minutes, where nothing means "no limit" (None); zero and negative values are refused by the
    job, which says the smallest budget that fits."""
    return number(text) if str(text).strip() else None


def unknown_cells(text: str) -> str | float | None:
    """How annotation treats cells unlike any trained type: ``auto`` (the model's calibrated
    threshold), a fraction of known cells to reject (``0.1``), or ``none`` (no rejection)."""
    text = str(text).strip().lower()
    if text in ("none", "off"):
        return None
    if text == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto, none or a fraction between 0 and 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"the fraction of known cells to reject is between 0 and 1, got {text!r}")
    return value


def pairs(text: str) -> dict[str, str]:
    """``name=value,name=value`` -> dict (values stay strings: their reader converts them)."""
    found = {}
    for entry in filter(None, (e.strip() for e in text.split(","))):
        name, sep, value = entry.partition("=")
        if not sep or not name.strip():
            raise argparse.ArgumentTypeError(f"expected name=value,name=value (got {entry!r})")
        found[name.strip()] = value.strip()
    return found


NAME_RULE = ("is not a usable name (it names MLflow experiments, registered models and files): use one without '/', "
             "'\\', ':' or control characters, not made of dots only, and without spaces at its ends")


def bad_name(name: str | None) -> bool:
    """Whether ``name`` breaks :data:`NAME_RULE`: MLflow's rule for experiment and registered model
    names, plus no path separator and no ``.``/``..`` (None: no name given, not a bad one)."""
    return name is not None and (not name.strip() or name != name.strip() or not name.isprintable()
                                 or any(c in name for c in "/\\:") or not name.strip("."))


# -- option groups -----------------------------------------------------------------------------

def option(default: Any, help: str, parse: Callable[[str], Any] | None = None,
           choices: tuple[str, ...] | None = None, *, flag: str | None = None) -> Any:
    """A dataclass field that is also a command-line option and an MLproject parameter.

    ``parse`` turns the option's text into the value (by default: from the field's type);
    ``flag`` makes a yes/no option named ``--<flag>`` that sets the field to ``not default``
    (``umap`` is switched off by ``--no-umap``). A dict default is copied for each instance."""
    metadata = {"help": help, **({"parse": parse} if parse else {}), **({"choices": choices} if choices else {}),
                **({"flag": flag} if flag else {})}
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def internal(default: Any = None) -> Any:
    """A field that is not an option: set by library code (a parent run, tags, progress bars)."""
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default))
    return field(default=default)


def group_of(job: Any, group: type[T]) -> T:
    """The options of ``group`` alone, of a job dataclass that extends it (its data, split or
    memory options): one object to pass on, not fields copied out one by one."""
    return group(**{f.name: getattr(job, f.name) for f in dataclasses.fields(group)})


def option_fields(group: type) -> list[dataclasses.Field]:
    """The fields of ``group`` that are options, in declaration order."""
    return [f for f in dataclasses.fields(group) if "help" in f.metadata]


def option_name(f: dataclasses.Field) -> str:
    """The field's ``argparse`` destination (also its MLproject parameter)."""
    return f.metadata.get("flag", f.name).replace("-", "_")


def check_keys(group: type, given: dict[str, Any], what: str) -> None:
    """Refuse keys of ``given`` that are not fields of ``group``, naming the known ones."""
    known = {f.name for f in dataclasses.fields(group)}
    if unknown := sorted(set(given) - known):
        raise ScadaptError(f"Unknown {what} {', '.join(unknown)}; known: {', '.join(sorted(known))}.")


def keyword_values(group: type, given: dict[str, Any], what: str) -> dict[str, Any]:
    """Python keywords for the fields of ``group``, read as the command reads its options: a string
    is parsed by the option's own parser, a list or tuple is the command's comma-separated form, a
    dict is taken where the field holds one, a float is refused where an integer is asked for, and
    any other value is parsed from its text. Each bad keyword is one :class:`ScadaptError` naming
    it and what it accepts; fields that are not options pass as given."""
    check_keys(group, given, f"keyword of {what}")
    hints, fields = typing.get_type_hints(group), {f.name: f for f in dataclasses.fields(group)}
    values = {}
    for name, value in given.items():
        f, hint = fields[name], hints[name]
        if "help" not in f.metadata or value is None and type(None) in typing.get_args(hint):
            values[name] = value
            continue
        parse = f.metadata.get("parse") or _parser_for(hint)
        try:
            if isinstance(value, dict) and dict in {typing.get_origin(h) for h in (hint, *typing.get_args(hint))}:
                values[name] = dict(value)
                continue
            if isinstance(value, float) and parse in (integer, optional_count) or value is None:
                raise argparse.ArgumentTypeError(f"expected {'an integer' if value is not None else 'a value'}")
            text = ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
            values[name] = parse(text)
            if (choices := f.metadata.get("choices")) and values[name] not in choices:
                raise argparse.ArgumentTypeError(f"expected one of {', '.join(choices)}")
        except (argparse.ArgumentTypeError, ValueError) as error:
            raise ScadaptError(f"{what}: {name}={value!r} is refused ({error}). {name}: "
                               f"{f.metadata['help'].replace('%%', '%')}.") from None
    return values


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


@dataclass
class AnnotateOptions:
    """How cells are labelled: the same options for ``scadapt.annotate``, ``scadapt predict`` and
    :func:`~scadapt.annotation.annotate_h5ad` (the served model takes ``unknown`` as a param)."""

    key: str = option("scadapt", "prefix of the annotation's obs and obsm names (<key>_label, X_<key>, ...)", parse=str)
    majority_voting: bool = option(False, "give each cluster of an over-clustering its most frequent label "
                                          "(obs <key>_majority_voting)")
    over_clustering: str | None = option(None, "obs column of clusters to vote in (implies majority voting; "
                                               "default: Leiden clusters of the model's embedding)")
    unknown: str | float | None = option("auto", "cells unlike every trained type are Unassigned: auto (the model's "
                                                 "calibrated threshold, at most 5%% of known cells rejected), a "
                                                 "fraction of known cells to reject, or none", parse=unknown_cells)
    batch_size: int | None = option(None, "cells read, labelled and written at a time (default: 10000)")
    layer: str | None = option(None, "the matrix to read: a layer, or 'raw' for .raw (default: X)")
    gene_column: str | None = option(None, "var column with gene symbols, when var_names are not symbols")

    def __post_init__(self) -> None:
        if bad_name(self.key) or not self.key or " " in self.key:
            raise ScadaptError(f"key={self.key!r} {NAME_RULE}, and no spaces: the annotation's obs and obsm "
                               "names start with it.")
        if self.batch_size is not None and self.batch_size < 1:
            raise ScadaptError(f"batch_size is a number of cells, at least 1 (got {self.batch_size}); leave it out "
                               "for 10,000.")


def add_options(parser: argparse.ArgumentParser, group: type) -> None:
    """One ``--name`` option per option field of the dataclass ``group`` (its own and inherited)."""
    hints = typing.get_type_hints(group)
    for f in option_fields(group):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        help_text = f.metadata["help"]
        if default not in (None, "", (), {}, False) and "default" not in help_text and "flag" not in f.metadata:
            help_text += " (default: %(default)s)"
        if "flag" in f.metadata:  # --no-umap: the yes/no option that turns the field's default around
            parser.add_argument(f"--{f.metadata['flag']}", dest=option_name(f), type=boolean, nargs="?", const=True,
                                default=False, metavar="true|false", help=help_text)
            continue
        parse = f.metadata.get("parse") or _parser_for(hints[f.name])
        kwargs: dict[str, Any] = {"dest": f.name, "default": default, "type": parse, "help": help_text}
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


def from_args(group: type, args: argparse.Namespace, **more: Any) -> Any:
    """The ``group`` dataclass filled from parsed arguments (its options that were added to the
    parser; ``more`` sets other fields)."""
    values = {}
    for f in option_fields(group):
        if hasattr(args, option_name(f)):
            value = getattr(args, option_name(f))
            values[f.name] = (not f.default) if "flag" in f.metadata and value else \
                (f.default if "flag" in f.metadata else value)
    return group(**values, **more)


def _parser_for(hint: Any) -> Callable[[str], Any]:
    options = set(typing.get_args(hint)) or {hint}
    if bool in options:
        return boolean
    if int in options or float in options:
        parse = integer if int in options else number
        return (lambda text: parse(text) if str(text).strip() else None) if type(None) in options else parse
    return optional_text
