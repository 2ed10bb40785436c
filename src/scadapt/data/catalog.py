"""The one place that knows every named dataset: where it comes from and how it is read (its
:class:`~scadapt.data.options.DataOptions`, which a job's options override)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from anndata import AnnData

from scadapt.data.options import DataOptions
from scadapt.data.sources import InMemory, LocalFile, PackageFile, RemoteFile, ScanpyDataset, Source
from scadapt.infra.errors import InputDataError
from scadapt.infra.parsers import NAME_RULE, bad_name


@dataclass(frozen=True)
class DatasetSpec:
    """A labelled dataset: its name (in run names, the registry and reports), where it comes from,
    how it is read (keys, matrix, gene symbols, study groups, the rare-class rule: one
    :class:`DataOptions`, whose every field is a command option too) and a line for listings."""

    name: str
    source: Source
    reading: DataOptions = field(default_factory=DataOptions)
    description: str = ""


HUMAN_PANCREAS_URL = "https://ndownloader.figshare.com/files/36086813"

CATALOG: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name="pbmc68k_reduced",
            source=ScanpyDataset("pbmc68k_reduced"),
            # X is scaled; raw holds log-normalised values of the same 765 genes
            reading=DataOptions(label_key="bulk_labels", layer="raw"),
            description="700 PBMCs, 10 cell types, log-normalised (ships with scanpy)",
        ),
        DatasetSpec(
            name="pancreas_small",
            source=PackageFile("pancreas_panc8_small.h5ad"),
            reading=DataOptions(label_key="celltype", batch_key="tech", study_groups={
                "plate_like": ("smartseq2",),
                "celseq_family": ("celseq", "celseq2"),
                "droplet_c1": ("indrop", "fluidigmc1"),
            }),
            description="500 human pancreas cells, 6 cell types, 5 technologies, counts (bundled)",
        ),
        DatasetSpec(
            name="human_pancreas",
            # scIB / OpenProblems v1 file. figshare publishes no checksum we could read here, so the
            # first download's SHA-256 is recorded and every later use is checked against it.
            source=RemoteFile(url=HUMAN_PANCREAS_URL, filename="human_pancreas_scib.h5ad"),
            # X is log-normalised; the counts are in this layer
            reading=DataOptions(label_key="celltype", batch_key="tech", layer="counts", study_groups={
                "plate_like": ("smartseq2", "smarter"),
                "celseq_family": ("celseq", "celseq2"),
                "droplet_c1": ("inDrop1", "inDrop2", "inDrop3", "inDrop4", "fluidigmc1"),
            }),
            description="scIB / OpenProblems v1 human pancreas, 9 technologies (downloaded once)",
        ),
    )
}


def resolve_spec(source: str | Path | DatasetSpec | AnnData, options: DataOptions | None = None,
                 name: str | None = None) -> DatasetSpec:
    """A catalogued name, an ``.h5ad`` path, an AnnData or a spec, read with the ``options`` given
    (those set override its own)."""
    if isinstance(source, DatasetSpec):
        spec = source
    elif isinstance(source, AnnData):
        spec = DatasetSpec(name="adata", source=InMemory(source))
    elif str(source) in CATALOG:
        spec = CATALOG[str(source)]
    elif Path(source).suffix == ".h5ad" or Path(source).exists():
        spec = DatasetSpec(name=Path(source).stem, source=LocalFile(str(source)))
    else:
        raise InputDataError(
            f"{str(source)!r} is neither a catalogued dataset ({', '.join(CATALOG)}) nor an .h5ad file."
        )
    given = options.given() if options is not None else {}
    if "study_groups" in given:
        given["study_groups"] = {str(k): tuple(map(str, v)) for k, v in given["study_groups"].items()}
    if given.get("batch_key", spec.reading.batch_key) != spec.reading.batch_key and "study_groups" not in given:
        given["study_groups"] = None  # the catalogue's groups name values of its own batch key
    if bad_name(name := name or spec.name):  # it names the dataset's experiment and registered model
        raise InputDataError(f"The dataset name {name!r} {NAME_RULE}. Rename the file or give name=...")
    return replace(spec, name=name, reading=replace(spec.reading, **given))


def catalog_listing() -> str:
    """What ``scadapt datasets`` prints: each catalogued dataset, its keys and where it comes from."""
    entries = []
    for spec in CATALOG.values():
        where = spec.source.describe()
        if isinstance(spec.source, RemoteFile):
            path = spec.source.cached_path()
            where = f"cached at {path}" if path.is_file() else f"not downloaded yet (scadapt datasets --fetch {spec.name})"
        reading = spec.reading
        groups = "; ".join(f"{g}: {','.join(m)}" for g, m in (reading.study_groups or {}).items())
        entries.append(f"{spec.name}\n  {spec.description}\n  labels: obs[{reading.label_key!r}]"
                       + (f", batches: obs[{reading.batch_key!r}]" if reading.batch_key else "")
                       + (f", matrix: {reading.layer}" if reading.layer else "")
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
