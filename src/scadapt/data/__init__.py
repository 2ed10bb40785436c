"""Datasets and evaluation regimes.

``load_dataset`` reads a catalogued dataset or any ``.h5ad`` and validates it;
``make_splits`` divides its cells into named train/validation/test splits for a regime;
``load_and_split`` does both, as every job does. The names load on first use, so reading the
options (:mod:`scadapt.data.options`) imports no anndata.
"""

from scadapt.infra.lazy import lazy_attributes

_WHERE = {
    **dict.fromkeys(("CATALOG", "DatasetSpec", "catalog_listing", "fetch_dataset", "resolve_spec"),
                    "scadapt.data.catalog"),
    **dict.fromkeys(("DatasetInfo", "load_dataset", "load_expression"), "scadapt.data.dataset"),
    **dict.fromkeys(("DEFAULT_LABEL_FRACTIONS", "DEFAULT_N_FOLDS", "REGIMES", "required_cells_per_class"),
                    "scadapt.data.options"),
    "load_and_split": "scadapt.data.loading",
    "read_h5ad": "scadapt.data.sources",
    **dict.fromkeys(("Split", "load_splits", "make_splits", "save_splits"), "scadapt.data.splits"),
}
__getattr__, __dir__ = lazy_attributes(__name__, _WHERE)
__all__ = list(_WHERE)
