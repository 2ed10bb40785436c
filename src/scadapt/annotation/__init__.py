"""Annotating cells with a trained model, as a notebook user calls it: :func:`annotate` on an
in-memory or backed AnnData, :func:`annotate_h5ad` from file to file in chunks. The served model
and ``scadapt predict`` label their cells through the same :func:`label_cells`."""

from scadapt.annotation.annotate import annotate
from scadapt.annotation.files import annotate_h5ad
from scadapt.annotation.labelling import CellLabels, label_cells
from scadapt.annotation.voting import majority_vote, over_cluster
from scadapt.artifacts.annotators import AnnotationModel, load_model

__all__ = ["AnnotationModel", "CellLabels", "annotate", "annotate_h5ad", "label_cells", "load_model",
           "majority_vote", "over_cluster"]
