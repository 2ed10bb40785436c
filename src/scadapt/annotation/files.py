"""An ``.h5ad`` file annotated into a new file, chunk by chunk: the input is read backed and each
chunk's embedding written to disk as it comes, so memory follows the chunk size (plus a label and a
confidence per cell), not the file. The input is copied into the output while the cells are
labelled, so the copy costs no time beside the labelling."""

from __future__ import annotations

import logging
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anndata as ad
import h5py
import pandas as pd
from anndata.io import write_elem

from scadapt.annotation.annotate import given_clusters, read_query, write_labels, write_majority_vote
from scadapt.annotation.labelling import CellLabels, report_rejected
from scadapt.annotation.query import Query, label_query
from scadapt.annotation.voting import over_cluster
from scadapt.artifacts.annotators import AnnotationModel, load_model
from scadapt.infra.errors import ScadaptError
from scadapt.infra.options import AnnotateOptions, keyword_values
from scadapt.infra.storage import writable_file

log = logging.getLogger(__name__)

_ARRAY = {"encoding-type": "array", "encoding-version": "0.2.0"}  # how anndata marks a dense array
_MAPPING = {"encoding-type": "dict", "encoding-version": "0.1.0"}


@dataclass
class FileAnnotation:
    """What :func:`annotate_h5ad` wrote."""

    output: Path
    model: AnnotationModel
    labels: CellLabels        # labels and confidences of every cell (no embeddings: they are in the file)
    obs: pd.DataFrame         # the output's obs: the input's columns plus the annotation's

    @property
    def n_cells(self) -> int:
        return len(self.labels)


def annotate_h5ad(model: Any, data: str | Path, output: str | Path | None = None, *, progress: bool = True,
                  **options: Any) -> FileAnnotation:
    """Annotate the cells of the file ``data`` with ``model`` (see :func:`scadapt.annotate`, whose
    ``options`` it takes; ``over_clustering`` is an ``obs`` column's name) and write ``output``
    (default: ``<stem>_annotated.h5ad`` in the working directory): the input's content plus the
    annotation. The output appears only when complete."""
    opts = AnnotateOptions(**keyword_values(AnnotateOptions, options, "annotate_h5ad"))
    data = Path(data)
    output = Path(output) if output else Path.cwd() / f"{data.stem}_annotated.h5ad"
    if output.suffix != ".h5ad":
        raise ScadaptError(f"The output {output} is written as an .h5ad file: give it the .h5ad suffix.")
    if output.resolve() == data.resolve():
        raise ScadaptError("The output would overwrite the input; choose another --output.")
    writable_file(output, "the annotated cells", "--output")
    source, key = read_query(data, backed="r"), opts.key
    partial = output.with_name(f".{output.name}.partial")
    embeddings = output.with_name(f".{output.name}.embedding.partial")  # written while the input is copied
    copier = ThreadPoolExecutor(max_workers=1)
    copying = None
    try:
        loaded = load_model(model)
        threshold = loaded.annotator.unknown_threshold(opts.unknown)
        clusters = given_clusters(source.obs, opts.over_clustering) if opts.over_clustering is not None else None
        query = Query.of(source, loaded, opts.layer, opts.gene_column)
        copying = copier.submit(shutil.copyfile, data, partial)  # disk-bound: runs beside the CPU-bound labelling
        with h5py.File(embeddings, "w") as side:
            def write_embedding(start: int, stop: int, embedding) -> None:
                if start == 0:
                    side.create_dataset("embedding", shape=(query.n_cells, embedding.shape[1]), dtype="float32",
                                        chunks=(min(query.n_cells, 4096), embedding.shape[1]))
                side["embedding"][start:stop] = embedding

            labels = label_query(loaded, query, opts.batch_size, threshold=threshold, keep_embedding=False,
                                 on_embedding=write_embedding, progress=progress)
            report_rejected(labels)
            annotated = ad.AnnData(obs=source.obs.copy())
            write_labels(annotated, labels, key, loaded)
            if opts.majority_voting or clusters is not None:  # over_cluster: the one step with every cell's embedding
                write_majority_vote(annotated, labels.labels, over_cluster(side["embedding"][:]) if clusters is None
                                    else clusters, key)
            copying.result()
            with h5py.File(partial, "r+") as written:
                obsm = written.require_group("obsm")
                obsm.attrs.update(_MAPPING)
                embedding_key = f"X_{key}"
                if embedding_key in obsm:
                    del obsm[embedding_key]
                side.copy(side["embedding"], obsm, name=embedding_key)
                obsm[embedding_key].attrs.update(_ARRAY)
                del written["obs"]
                write_elem(written, "obs", annotated.obs)
                uns = written.require_group("uns")
                name = f"{key}_annotation"
                if name in uns:
                    del uns[name]
                write_elem(uns, name, annotated.uns[name])
        os.replace(partial, output)
    finally:
        source.file.close()
        if copying is not None:
            copying.exception()  # let a copy still running finish before its file is removed
        copier.shutdown()
        partial.unlink(missing_ok=True)
        embeddings.unlink(missing_ok=True)
    log.info("Annotated %d cells of %s with %s; wrote %s.", len(labels), data, loaded.source, output)
    return FileAnnotation(output, loaded, labels, annotated.obs)
