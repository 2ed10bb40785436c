"""Promotion of the best runner per dataset in the MLflow model registry."""

from scadapt.registry.policy import PromotionPolicy
from scadapt.registry.promote import DowngradeRefused, PromotionResult, has_champion, promote

__all__ = ["DowngradeRefused", "PromotionPolicy", "PromotionResult", "has_champion", "promote"]
