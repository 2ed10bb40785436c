"""Hyperparameters declared once, as job options are: a config field made by :func:`hyperparameter`
carries its meaning, the values it may take and where a study searches it, and every reader reads
that declaration: parsing ``--hparams k=v`` (the options' own parsers, :func:`scadapt.infra.options.keyword_values`),
checking a config, the Optuna search space (:func:`search_space`), a study's first trial (the
defaults, :func:`default_trial`), ``scadapt train --hparams help`` and the strategies page.

A subclass that only changes a default writes ``epochs: int = 50``: the meaning, bounds and
search of ``epochs`` stay those declared in the base class (:func:`inherit_declarations`).
"""

from __future__ import annotations

import dataclasses
import math
import operator
from dataclasses import dataclass, field
from typing import Any

from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution


@dataclass(frozen=True)
class AroundDefault:
    """A log-uniform search from ``default * low`` to ``default * high`` (a learning rate, whose
    default differs by strategy)."""

    low: float
    high: float


@dataclass(frozen=True)
class Declaration:
    """What one hyperparameter is: its meaning, the values it may take and its search."""

    name: str
    default: Any
    help: str
    search: BaseDistribution | None = None  # None: fixed at its default in a study
    choices: tuple | None = None  # the only values it may take
    at_least: float | None = None
    above: float | None = None
    below: float | None = None
    at_most: float | None = None

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not allowed (None when it is)."""
        if self.choices is not None and value not in self.choices:
            return f"{self.name} must be one of {', '.join(map(str, self.choices))} (got {value!r})"
        if failed := [f"{sign} {bound:g}" for bound, sign, holds in self._limits() if not holds(value, bound)]:
            return f"{self.name} must be {' and '.join(failed)} (got {value})"
        return None

    def range_text(self) -> str:
        """The values it may take, in words (the help of ``--hparams`` and the strategies page)."""
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        limits = " and ".join(f"{sign} {bound:g}" for bound, sign, _ in self._limits())
        return limits or ("true or false" if isinstance(self.default, bool) else "any")

    def _limits(self) -> list[tuple[float, str, Any]]:
        return [(bound, sign, holds) for bound, sign, holds in ((self.at_least, ">=", operator.ge),
                                                                (self.above, ">", operator.gt),
                                                                (self.below, "<", operator.lt),
                                                                (self.at_most, "<=", operator.le)) if bound is not None]

    def search_text(self) -> str:
        """Where a study searches it, in words."""
        dist = self.search
        if dist is None:
            return "fixed"
        if isinstance(dist, CategoricalDistribution):
            return "one of " + ", ".join(map(str, dist.choices))
        step = f" in steps of {dist.step:g}" if isinstance(dist, IntDistribution) and dist.step != 1 else ""
        return f"{dist.low:g} to {dist.high:g}{step}" + (" (log scale)" if dist.log else "")


def hyperparameter(default: Any, help: str, *, search: BaseDistribution | AroundDefault | None = None,
                   choices: tuple | None = None, at_least: float | None = None, above: float | None = None,
                   below: float | None = None, at_most: float | None = None) -> Any:
    """A config field that is a declared hyperparameter (see the module's docstring)."""
    # "choices" would be read by the options' parser as text choices: the allowed values are checked here
    metadata = {"help": help, "search": search, "allowed": choices, "at_least": at_least, "above": above,
                "below": below, "at_most": at_most}
    return field(default=default, metadata=metadata)


def inherit_declarations(config_class: type) -> None:
    """Before ``@dataclass`` reads ``config_class``: a field that only changes a default
    (``epochs: int = 50``) becomes a field with the declaration of the class that declared it."""
    for name in config_class.__dict__.get("__annotations__", {}):
        value = config_class.__dict__.get(name, dataclasses.MISSING)
        declared = next((base.__dataclass_fields__[name] for base in config_class.__mro__[1:]
                         if name in getattr(base, "__dataclass_fields__", {})), None)
        if declared is not None and value is not dataclasses.MISSING and not isinstance(value, dataclasses.Field):
            setattr(config_class, name, field(default=value, metadata=declared.metadata))


def declarations(config_class: type) -> dict[str, Declaration]:
    """Every hyperparameter of ``config_class`` in field order, with its default there."""
    found = {}
    for f in dataclasses.fields(config_class):
        declared = f.metadata
        if "help" not in declared:
            raise TypeError(f"{config_class.__name__}.{f.name} is not declared with hyperparameter()")
        search = declared["search"]
        if isinstance(search, AroundDefault):
            search = FloatDistribution(f.default * search.low, f.default * search.high, log=True)
        found[f.name] = Declaration(f.name, f.default, declared["help"], search, declared["allowed"],
                                    declared["at_least"], declared["above"], declared["below"], declared["at_most"])
    return found


def search_space(config_class: type, fixed: Any = ()) -> dict[str, BaseDistribution]:
    """The distributions a study of ``config_class`` samples: every searched hyperparameter not in ``fixed``."""
    return {name: d.search for name, d in declarations(config_class).items() if d.search is not None and name not in fixed}


def default_trial(config_class: type, values: dict[str, Any], fixed: Any = ()) -> dict[str, Any]:
    """A study's first trial: ``values`` (the defaults, with the job's fixed settings) of the searched
    names, where the search can take them. The search then replaces them only by a better validation
    score; where validation cannot tell trials apart, the defaults stay instead of a random draw."""
    return {name: values[name] for name, dist in search_space(config_class, fixed).items() if contains(dist, values[name])}


def contains(dist: BaseDistribution, value: Any) -> bool:
    if isinstance(dist, CategoricalDistribution):
        return value in dist.choices
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) \
        and dist.low <= value <= dist.high


def help_text(config_class: type, strategy: str) -> str:
    """``scadapt train --strategy NAME --hparams help``: each hyperparameter, its default, meaning,
    allowed values and search."""
    lines = [f"Hyperparameters of {strategy} (--hparams name=value,name=value):"]
    for d in declarations(config_class).values():
        lines.append(f"  {d.name} = {d.default}: {d.help}. Allowed: {d.range_text()}; searched: {d.search_text()}.")
    return "\n".join(lines)
