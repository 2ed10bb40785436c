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
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from scadapt.infra.errors import ScadaptError
from scadapt.infra.parsers import (
    NAME_RULE,
    bad_name,
    boolean,
    integer,
    memory_size,
    number,
    optional_count,
    optional_text,
    unknown_cells,
)

T = TypeVar("T")
TUNING_MODES = ("reuse", "per_fold")
PRUNERS = ("median", "threshold", "none")
CHECKPOINTING_MODES = ("auto", "on", "off")


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
    """The options of ``group`` alone, of a job dataclass that extends it (its split or memory
    options): one object to pass on, not fields copied out one by one."""
    return group(**{f.name: getattr(job, f.name) for f in dataclasses.fields(group)})


def options_group(group: type) -> Any:
    """A field that holds an option group (``job.reading``: a :class:`~scadapt.data.options.DataOptions`):
    its options are the command's and the MLproject's as they are (``--label-key``), and the job
    passes the one object on."""
    return field(default_factory=group, metadata={"group": group})


def grouped(group: type, given: dict[str, Any],
            read: Callable[[type, dict[str, Any]], dict[str, Any]] = lambda sub, keywords: keywords) -> dict[str, Any]:
    """``given`` with the keywords of ``group``'s option groups (``label_key``, ...) gathered into
    the group objects the job holds (``reading``), each group's keywords ``read`` first (as given)."""
    nested = {f.name: f.metadata["group"] for f in dataclasses.fields(group) if "group" in f.metadata}
    inner = {name: {k: v for k, v in given.items() if k in {f.name for f in dataclasses.fields(sub)}}
             for name, sub in nested.items()}
    taken = {k for keywords in inner.values() for k in keywords}
    rest = {k: v for k, v in given.items() if k not in taken}
    return {**rest, **{name: dataclasses.replace(rest.get(name) or nested[name](), **read(nested[name], keywords))
                       for name, keywords in inner.items() if keywords}}


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
    it and what it accepts; fields that are not options pass as given. The keywords of an option
    group the job holds (:func:`options_group`) fill that group."""
    given = grouped(group, given, lambda sub, keywords: keyword_values(sub, keywords, what))
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
    for f in dataclasses.fields(group):
        if "group" in f.metadata:
            add_options(parser, f.metadata["group"])
        if "help" not in f.metadata:
            continue
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
    values = {f.name: from_args(f.metadata["group"], args) for f in dataclasses.fields(group) if "group" in f.metadata}
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
