"""The jobs as a notebook user calls them, on an AnnData in memory as well as on a file or a
bundled dataset: ``scadapt.train``, ``scadapt.tune`` and ``scadapt.run_pipeline`` take the same
options as the commands (the fields of their job dataclasses) and return typed results.

An AnnData is written once into the cache as ``anndata/<content digest>/<name>.h5ad`` (its
digest covers the matrix, the cell and gene names and ``obs``), so the job's worker processes,
a resumed run and the MLflow run's dataset input all name the same cells; the same AnnData
given again is not written again.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from anndata import AnnData

from scadapt.benchmark.config import BenchmarkConfig
from scadapt.data.digest import content_digest
from scadapt.infra.errors import ScadaptError
from scadapt.infra.options import keyword_values
from scadapt.infra.parsers import NAME_RULE, bad_name
from scadapt.infra.storage import atomic_write, default_cache_dir
from scadapt.jobs.config import TrainJob, TuneJob
from scadapt.jobs.study import TuneResult
from scadapt.jobs.study import tune as tune_job
from scadapt.jobs.train import TrainResult
from scadapt.jobs.train import train as train_job
from scadapt.pipeline import PipelineResult, pipeline_config
from scadapt.pipeline import run_pipeline as run_pipeline_job

Data = str | Path | AnnData
log = logging.getLogger(__name__)


def train(data: Data, strategy: str, *, name: str | None = None, **options: Any) -> TrainResult:
    """One strategy on one split as one MLflow run (``scadapt train``); ``options`` are the fields
    of :class:`~scadapt.jobs.config.TrainJob` (``label_key``, ``hparams``, ``split``, ...), in the
    command's forms (``hparams="lr=0.001,epochs=5"``) or as Python values."""
    settings = keyword_values(TrainJob, {"strategy": strategy, **options}, "train")
    return train_job(TrainJob(data=dataset_file(data, name), **settings))


def tune(data: Data, strategy: str, *, name: str | None = None, **options: Any) -> TuneResult:
    """An Optuna study of one strategy (``scadapt tune``); ``options`` are the fields of
    :class:`~scadapt.jobs.config.TuneJob` (``label_key``, ``n_trials``, ...), as :func:`train` reads them."""
    settings = keyword_values(TuneJob, {"strategy": strategy, **options}, "tune")
    return tune_job(TuneJob(data=dataset_file(data, name), **settings))


def run_pipeline(data: Data, *, name: str | None = None, **options: Any) -> PipelineResult:
    """The main job (``scadapt pipeline``): a study per strategy, promotion of the best to
    ``@champion``, the summary (``result.summary``) and the champion's URI (``result.champion_uri``).
    ``options`` are the command's (``label_key``, ``strategies``, ``n_trials``, ...), as :func:`train`
    reads them (``strategies="pca_logreg,logreg"`` or a list)."""
    settings = keyword_values(BenchmarkConfig, options, "run_pipeline")
    return run_pipeline_job(pipeline_config(dataset_file(data, name), **settings))


def dataset_file(data: Data, name: str | None = None) -> str:
    """What a job reads: a catalogue name or path as given, an AnnData as its file in the cache."""
    if not isinstance(data, AnnData):
        if name is not None:
            raise ScadaptError("name= names an in-memory AnnData; a file's dataset is named by its file name.")
        return str(data)
    if data.isbacked:
        raise ScadaptError("This AnnData is backed by a file: pass the file's path instead.")
    name = name or "anndata"
    if bad_name(name):
        raise ScadaptError(f"name={name!r} {NAME_RULE}.")
    folder = default_cache_dir() / "anndata" / content_digest(data, data.obs.columns)
    path = folder / f"{name}.h5ad"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        if mixed := [c for c in data.obs.columns if data.obs[c].dtype == object and
                     not data.obs[c].map(lambda v: isinstance(v, str)).all()]:  # h5py writes no dicts or mixed types
            log.warning("obs columns %s hold values other than strings; the job's copy stores them as strings.", mixed)
            data = data.copy()
            data.obs[mixed] = data.obs[mixed].astype(str)
        atomic_write(path, lambda handle: data.write_h5ad(handle.name))
    return str(path)

