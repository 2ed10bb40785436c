"""The one place that knows every named dataset: where it comes from and which keys it uses."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from anndata import AnnData

from scadapt.data.sources import InMemory, LocalFile, PackageFile, RemoteFile, ScanpyDataset, Source
from scadapt.infra.errors import InputDataError
from scadapt.infra.options import NAME_RULE, bad_name


@dataclass(frozen=True)
class DatasetSpec:
    """How to get a labelled dataset and read it.

    Args:
        name: identifier used in run names, the registry and reports.
        source: where the AnnData comes from.
        label_key: ``obs`` column with the cell types.
        batch_key: ``obs`` column with the technology/batch (needed for ``cross_study``).
        layer: matrix to use as ``X`` (a layer name, ``"raw"`` for ``adata.raw``, None for ``X``).
        gene_column: ``var`` column with gene symbols (None: ``var_names`` are symbols).
        study_groups: named groups of batch values held out together in ``cross_study``.
        description: one line for listings.
    """

    name: str
    source: Source
    label_key: str | None
    batch_key: str | None = None
    layer: str | None = None
    gene_column: str | None = None
    study_groups: Mapping[str, tuple[str, ...]] | None = None
    description: str = ""


HUMAN_PANCREAS_URL = "https://ndownloader.figshare.com/files/36086813"

CATALOG: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name="pbmc68k_reduced",
            source=ScanpyDataset("pbmc68k_reduced"),
            label_key="bulk_labels",
            layer="raw",  # X is scaled; raw holds log-normalised values of the same 765 genes
            description="700 PBMCs, 10 cell types, log-normalised (ships with scanpy)",
        ),
        DatasetSpec(
            name="pancreas_small",
            source=PackageFile("pancreas_panc8_small.h5ad"),
            label_key="celltype",
            batch_key="tech",
            study_groups={
                "plate_like": ("smartseq2",),
                "celseq_family": ("celseq", "celseq2"),
                "droplet_c1": ("indrop", "fluidigmc1"),
            },
            description="500 human pancreas cells, 6 cell types, 5 technologies, counts (bundled)",
        ),
        DatasetSpec(
            name="human_pancreas",
            # scIB / OpenProblems v1 file. figshare publishes no checksum we could read here, so the
            # first download's SHA-256 is recorded and every later use is checked against it.
            source=RemoteFile(url=HUMAN_PANCREAS_URL, filename="human_pancreas_scib.h5ad"),
            label_key="celltype",
            batch_key="tech",
            layer="counts",  # X is log-normalised; the counts are in this layer
            study_groups={
                "plate_like": ("smartseq2", "smarter"),
                "celseq_family": ("celseq", "celseq2"),
                "droplet_c1": ("inDrop1", "inDrop2", "inDrop3", "inDrop4", "fluidigmc1"),
            },
            description="scIB / OpenProblems v1 human pancreas, 9 technologies (downloaded once)",
        ),
    )
}


def resolve_spec(
    source: str | Path | DatasetSpec | AnnData,
    *,
    name: str | None = None,
    label_key: str | None = None,
    batch_key: str | None = None,
    layer: str | None = None,
    gene_column: str | None = None,
    study_groups: Mapping[str, tuple[str, ...]] | None = None,
) -> DatasetSpec:
    """A catalogued name, an ``.h5ad`` path, an AnnData or a spec, with any given keys overriding its own."""
    if isinstance(source, DatasetSpec):
        spec = source
    elif isinstance(source, AnnData):
        spec = DatasetSpec(name="adata", source=InMemory(source), label_key=None)
    elif str(source) in CATALOG:
        spec = CATALOG[str(source)]
    elif Path(source).suffix == ".h5ad" or Path(source).exists():
        spec = DatasetSpec(name=Path(source).stem, source=LocalFile(str(source)), label_key=None)
    else:
        raise InputDataError(
            f"{str(source)!r} is neither a catalogued dataset ({', '.join(CATALOG)}) nor an .h5ad file."
        )
    overrides = {
        "name": name, "label_key": label_key, "batch_key": batch_key, "layer": layer,
        "gene_column": gene_column, "study_groups": study_groups,
    }
    changed = {key: value for key, value in overrides.items() if value is not None}
    if "batch_key" in changed and "study_groups" not in changed and changed["batch_key"] != spec.batch_key:
        changed["study_groups"] = None  # the catalogue's groups name values of its own batch key
    if bad_name(name := changed.get("name", spec.name)):  # it names the dataset's experiment and registered model
        raise InputDataError(f"The dataset name {name!r} {NAME_RULE}. Rename the file or give name=...")
    return replace(spec, **changed)


def catalog_listing() -> str:
    """What ``scadapt datasets`` prints: each catalogued dataset, its keys and where it comes from."""
    entries = []
    for spec in CATALOG.values():
        where = spec.source.describe()
        if isinstance(spec.source, RemoteFile):
            path = spec.source.cached_path()
            where = f"cached at {path}" if path.is_file() else f"not downloaded yet (scadapt datasets --fetch {spec.name})"
        groups = "; ".join(f"{g}: {','.join(m)}" for g, m in (spec.study_groups or {}).items())
        entries.append(f"{spec.name}\n  {spec.description}\n  labels: obs[{spec.label_key!r}]"
                       + (f", batches: obs[{spec.batch_key!r}]" if spec.batch_key else "")
                       + (f", matrix: {spec.layer}" if spec.layer else "")
                       + (f"\n  cross-study groups: {groups}" if groups else "")
                       + f"\n  source: {where}")
    return "\n".join(entries)


def fetch_dataset(name: str) -> str:
    """Download a catalogued dataset into the cache now; says where it is."""
    if name not in CATALOG:
        raise InputDataError(f"{name!r} is not catalogued; choose one of {', '.join(CATALOG)}.")
    source = CATALOG[name].source
    return f"{name}: {source.fetch()}" if isinstance(source, RemoteFile) else \
        f"{name} needs no download ({source.describe()})."
