"""The promotion policy: which runs compete, how they are ranked, which are good enough.

The policy lives in ``registry/policy.yaml`` at the top of the project; it is read with
``yaml.safe_load`` and checked here, so a typo fails with a message instead of a silent default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from scadapt.data.options import REGIMES
from scadapt.evaluation.metrics import SUMMARY_METRICS
from scadapt.infra.errors import ScadaptError
from scadapt.tracking.contract import FIT_METRICS, LOWER_IS_BETTER_METRICS, UNORDERED_METRICS

DEFAULT_POLICY = Path(__file__).resolve().parents[3] / "registry" / "policy.yaml"
KEYS = {"registered_model", "regimes", "rank_by", "decimals", "gates", "aliases"}
KNOWN_METRICS = tuple(f"{part}_{name}" for part in ("val", "test") for name in SUMMARY_METRICS) + FIT_METRICS


@dataclass(frozen=True)
class RankKey:
    metric: str
    higher_is_better: bool


@dataclass(frozen=True)
class Gate:
    """Bounds a candidate's metric must keep to: a minimum, a maximum or both."""

    minimum: float | None = None
    maximum: float | None = None

    def failure(self, name: str, value: float | None) -> str:
        """Why ``value`` fails the gate ("" when it passes; a missing metric fails)."""
        if value is None or value != value:
            return f"{name} missing (gate {self.describe()})"
        if self.minimum is not None and not value >= self.minimum:
            return f"{name} {value:.3f} < {self.minimum:g}"
        if self.maximum is not None and not value <= self.maximum:
            return f"{name} {value:.3f} > {self.maximum:g}"
        return ""

    def describe(self) -> str:
        return " and ".join(f"{sign} {bound:g}" for sign, bound in ((">=", self.minimum), ("<=", self.maximum))
                            if bound is not None)


@dataclass
class PromotionPolicy:
    registered_model: str = "scadapt-{dataset}"
    regimes: tuple[str, ...] = ("full",)
    rank_by: tuple[RankKey, ...] = ()
    decimals: int = 3
    gates: dict[str, Gate] = field(default_factory=dict)
    champion_alias: str = "champion"
    previous_alias: str = "previous"

    @classmethod
    def load(cls, path: str | Path | None = None) -> PromotionPolicy:
        path = Path(path) if path else DEFAULT_POLICY
        try:
            raw = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as error:
            raise ScadaptError(f"Cannot read the promotion policy {path}: {error}") from None
        if not isinstance(raw, dict) or (unknown := set(raw) - KEYS):
            raise ScadaptError(f"{path}: unknown policy keys {sorted(unknown) if isinstance(raw, dict) else raw!r}; "
                               f"known: {', '.join(sorted(KEYS))}.")
        try:
            policy = cls(_text(raw, "registered_model", cls.registered_model), _regimes(raw.get("regimes", ["full"])),
                         tuple(_rank_key(entry) for entry in _list(raw, "rank_by")), _decimals(raw.get("decimals", 3)),
                         _gates(raw.get("gates", {})), *_aliases(raw.get("aliases", {})))
        except _PolicyProblem as problem:
            raise ScadaptError(f"{path}: {problem} See the comments in registry/policy.yaml.") from None
        if not policy.rank_by:
            raise ScadaptError(f"{path}: rank_by must name at least one metric.")
        if "{dataset}" not in policy.registered_model:
            raise ScadaptError(f"{path}: registered_model must contain {{dataset}} (one model per dataset).")
        if problem := invalid_model_name(policy.model_name("dataset")):
            raise ScadaptError(f"{path}: registered_model {policy.registered_model!r} is not a valid MLflow model "
                               f"name: {problem}")
        return policy

    def model_name(self, dataset: str) -> str:
        return self.registered_model.replace("{dataset}", dataset)

    def failed_gates(self, metrics: dict[str, float]) -> list[str]:
        """The gates a run's metrics do not pass (a missing metric fails its gate)."""
        return [failure for name, gate in self.gates.items() if (failure := gate.failure(name, metrics.get(name)))]

    def missing_rank_metrics(self, metrics: dict[str, float]) -> list[str]:
        """The ranking metrics a run did not log (such a run cannot be ranked against the others)."""
        return [k.metric for k in self.rank_by if metrics.get(k.metric) is None or metrics[k.metric] != metrics[k.metric]]

    def standing(self, metrics: dict[str, float]) -> tuple[float, ...]:
        """Smaller is better: runs that pass the gates first, then :meth:`sort_key`."""
        return (float(bool(self.failed_gates(metrics))), *self.sort_key(metrics))

    def sort_key(self, metrics: dict[str, float]) -> tuple[float, ...]:
        """Smaller is better (runs lacking a metric are left out of the ranking before it is used)."""
        key = []
        for rank in self.rank_by:
            value = metrics.get(rank.metric)
            if value is None:
                key.append(float("inf"))
            else:
                value = round(value, self.decimals)
                key.append(-value if rank.higher_is_better else value)
        return tuple(key)


class _PolicyProblem(Exception):
    """One thing wrong with a policy file (turned into a ScadaptError naming the file)."""


def _known_metric(name: object, where: str) -> str:
    if not isinstance(name, str) or name not in KNOWN_METRICS:
        raise _PolicyProblem(f"{where} names the unknown metric {name!r}; known: {', '.join(KNOWN_METRICS)}.")
    return name


def _rank_key(entry: object) -> RankKey:
    if not isinstance(entry, dict) or set(entry) != {"metric", "higher_is_better"}:
        raise _PolicyProblem(f"each rank_by entry is {{metric: NAME, higher_is_better: true|false}} (got {entry!r}).")
    if not isinstance(entry["higher_is_better"], bool):
        raise _PolicyProblem(f"higher_is_better of {entry['metric']!r} must be true or false, unquoted "
                             f"(got {entry['higher_is_better']!r}).")
    return RankKey(_known_metric(entry["metric"], "rank_by"), entry["higher_is_better"])


def _list(raw: dict, key: str) -> list:
    value = raw.get(key, [])
    if not isinstance(value, list):
        raise _PolicyProblem(f"{key} must be a list (got {value!r}).")
    return value


def _text(raw: dict, key: str, default: str) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str) or not value.strip():
        raise _PolicyProblem(f"{key} must be a non-empty string (got {value!r}).")
    return value


def _regimes(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or any(r not in REGIMES for r in value):
        raise _PolicyProblem(f"regimes must be a non-empty list of {', '.join(REGIMES)} (got {value!r}).")
    return tuple(value)


def _decimals(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 12:
        raise _PolicyProblem(f"decimals must be an integer from 0 to 12 (got {value!r}).")
    return value


def _gates(value: object) -> dict[str, Gate]:
    """``metric: minimum`` for larger-is-better metrics, ``metric: {max: X}`` (or ``{min: X}``,
    both) for any: a bare number on a cost such as runtime_sec would read as a minimum."""
    if not isinstance(value, dict):
        raise _PolicyProblem(f"gates must map metric names to a minimum or to {{min: X, max: Y}} (got {value!r}).")
    gates = {}
    for name, bounds in value.items():
        name = _known_metric(name, "gates")
        if _is_number(bounds):
            if name in LOWER_IS_BETTER_METRICS or name in UNORDERED_METRICS:
                kind = "lower-is-better" if name in LOWER_IS_BETTER_METRICS else "neither better high nor low"
                raise _PolicyProblem(f"{name} is {kind}, so a bare number would be a minimum; write "
                                     f"{name}: {{max: {bounds}}} (or {{min: ...}}).")
            gates[name] = Gate(minimum=float(bounds))
            continue
        if not isinstance(bounds, dict) or not bounds or set(bounds) - {"min", "max"} or \
                not all(_is_number(b) for b in bounds.values()):
            raise _PolicyProblem(f"the gate of {name!r} must be a number (a minimum) or {{min: X, max: Y}} with numbers "
                                 f"(got {bounds!r}).")
        gates[name] = Gate(_float_or_none(bounds.get("min")), _float_or_none(bounds.get("max")))
    return gates


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


def _float_or_none(value: object) -> float | None:
    return None if value is None else float(value)


def invalid_model_name(name: str) -> str:
    """Why MLflow would refuse ``name`` as a registered model name ("" when it accepts it)."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_model_name

    try:
        _validate_model_name(name)
    except MlflowException as error:
        return error.message
    return ""


def _aliases(value: object) -> tuple[str, str]:
    if not isinstance(value, dict) or set(value) - {"champion", "previous"}:
        raise _PolicyProblem(f"aliases may set champion and previous only (got {value!r}).")
    champion, previous = value.get("champion", "champion"), value.get("previous", "previous")
    for alias in (champion, previous):
        # MLflow aliases: letters, digits, '_' and '-'; "latest" and version-like names are reserved
        if not isinstance(alias, str) or not alias or not alias.replace("_", "").replace("-", "").isalnum() \
                or alias.lower() == "latest" or (alias[0] in "vV" and alias[1:].isdigit()):
            raise _PolicyProblem(f"alias {alias!r} is not a valid MLflow alias (letters, digits, _ and -; "
                                 "not 'latest' or v<number>).")
    if champion == previous:
        raise _PolicyProblem(f"the champion and previous aliases clash (both {champion!r}); give them different names.")
    return champion, previous
