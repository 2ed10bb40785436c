"""The served model: an MLflow pyfunc (models-from-code) around a saved annotator."""

from scadapt.serving.package import log_served_model
from scadapt.serving.request import cells_from_table

__all__ = ["cells_from_table", "log_served_model"]
