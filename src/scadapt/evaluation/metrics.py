"""Annotation metrics. Labels are compared as strings, so test cells of a class the model never
saw count as errors instead of being dropped."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

SUMMARY_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1")


@dataclass(frozen=True)
class ClassificationReport:
    summary: dict[str, float]  # SUMMARY_METRICS
    per_class: pd.DataFrame  # index class; precision, recall, f1, support
    confusion: pd.DataFrame  # rows true class, columns predicted class (cell counts)

    def prefixed(self, prefix: str) -> dict[str, float]:
        """``{"test_macro_f1": ...}`` style names for MLflow."""
        return {f"{prefix}_{name}": value for name, value in self.summary.items()}


def classification_report(y_true, y_pred) -> ClassificationReport:
    """Summary, per-class and confusion tables for string labels ``[n_cells]``."""
    y_true = np.asarray(y_true, dtype=str)
    y_pred = np.asarray(y_pred, dtype=str)
    labels = sorted(set(y_true) | set(y_pred))
    summary = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)) if len(y_true) else 0.0,
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, average="weighted", zero_division=0)),
    }
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    per_class = pd.DataFrame({"precision": precision, "recall": recall, "f1": f1, "support": support},
                             index=pd.Index(labels, name="class"))
    confusion = pd.DataFrame(confusion_matrix(y_true, y_pred, labels=labels), index=pd.Index(labels, name="true"),
                             columns=pd.Index(labels, name="predicted"))
    return ClassificationReport(summary, per_class, confusion)
