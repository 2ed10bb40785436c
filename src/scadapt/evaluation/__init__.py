"""Metrics and figures for annotation results."""

from scadapt.evaluation.metrics import ClassificationReport, classification_report

__all__ = ["ClassificationReport", "classification_report"]
