"""The promotion policy: which runs compete, how they are ranked, which are good enough.

The policy lives in ``registry/policy.yaml`` at the top of the project; it is read with
``yaml.safe_load`` and checked here, so a typo fails with a message instead of a silent default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from scadapt.errors import ScadaptError

DEFAULT_POLICY = Path(__file__).resolve().parents[3] / "registry" / "policy.yaml"
KEYS = {"registered_model", "regimes", "rank_by", "decimals", "gates", "aliases"}


@dataclass(frozen=True)
class RankKey:
    metric: str
    higher_is_better: bool


@dataclass
class PromotionPolicy:
    registered_model: str = "scadapt-{dataset}"
    regimes: tuple[str, ...] = ("full",)
    rank_by: tuple[RankKey, ...] = ()
    decimals: int = 3
    gates: dict[str, float] = field(default_factory=dict)
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
            keys = tuple(RankKey(str(k["metric"]), bool(k["higher_is_better"])) for k in raw.get("rank_by", []))
            aliases = raw.get("aliases", {})
            policy = cls(str(raw.get("registered_model", cls.registered_model)), tuple(raw.get("regimes", ("full",))),
                         keys, int(raw.get("decimals", 3)), {str(k): float(v) for k, v in raw.get("gates", {}).items()},
                         str(aliases.get("champion", "champion")), str(aliases.get("previous", "previous")))
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ScadaptError(f"{path}: malformed policy ({error!r}); see the comments in registry/policy.yaml.") from None
        if not policy.rank_by:
            raise ScadaptError(f"{path}: rank_by must name at least one metric.")
        if "{dataset}" not in policy.registered_model:
            raise ScadaptError(f"{path}: registered_model must contain {{dataset}} (one model per dataset).")
        return policy

    def model_name(self, dataset: str) -> str:
        return self.registered_model.replace("{dataset}", dataset)

    def failed_gates(self, metrics: dict[str, float]) -> list[str]:
        """The gates a run's metrics do not pass (a missing metric fails its gate)."""
        return [f"{name} {metrics.get(name, float('nan')):.3f} < {floor}" for name, floor in self.gates.items()
                if not metrics.get(name, float("-inf")) >= floor]

    def sort_key(self, metrics: dict[str, float]) -> tuple[float, ...]:
        """Smaller is better; missing metrics rank last."""
        key = []
        for rank in self.rank_by:
            value = metrics.get(rank.metric)
            if value is None:
                key.append(float("inf"))
            else:
                value = round(value, self.decimals)
                key.append(-value if rank.higher_is_better else value)
        return tuple(key)
