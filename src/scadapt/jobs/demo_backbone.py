"""The demo backbone: the pretraining job behind it (on the bundled data, or on the user's own
cells into a folder of its own), its folder, what identifies it before it exists, and the one
place that makes sure it exists (pretrained here, or fetched from another worker's run)."""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import mlflow

from scadapt.backbone.checkpoint import ARGS_FILE, VOCAB_FILE, WEIGHTS_FILE
from scadapt.infra.storage import demo_backbone_dir
from scadapt.jobs.config import PretrainConfig
from scadapt.jobs.pretrain import PRETRAINED_BY_FILE, pretrain
from scadapt.tracking.contract import BACKBONE_ARTIFACT, PRETRAIN_FINGERPRINT_TAG

log = logging.getLogger(__name__)


def demo_pretraining(epochs: int = 10, seed: int = 0, device: str = "auto", data: tuple[str, ...] = (),
                     layer: str | None = None, gene_column: str | None = None) -> PretrainConfig:
    """The pretraining job behind the demo backbone: on the bundled data by default (folder
    ``demo``), or on ``data`` (your own unlabelled cells, read with ``layer`` and ``gene_column``)
    into a folder of its own named by the job's fingerprint, so each choice of data keeps its backbone."""
    if not data:
        return PretrainConfig(epochs=epochs, seed=seed, device=device)
    data = tuple(str(Path(d).resolve()) if Path(d).suffix == ".h5ad" else d for d in data)
    cfg = PretrainConfig(data=data, layer=layer, gene_column=gene_column, epochs=epochs, seed=seed, device=device)
    cfg.output_dir = str(demo_backbone_dir().with_name(f"demo-{cfg.fingerprint()[:12]}"))
    return cfg


def demo_folder(cfg: PretrainConfig) -> Path:
    """Where the demo backbone of the pretraining job ``cfg`` lives (or will)."""
    return Path(cfg.output_dir) if cfg.output_dir else demo_backbone_dir()


def demo_backbone_identity(cfg: PretrainConfig) -> str:
    """What tells results on the demo backbone of ``cfg`` apart, known before it is pretrained:
    the fingerprint of the pretraining job that made (or will make) it, or, for a folder
    pretrained before that was recorded, the content digest of its files."""
    from scadapt.backbone.checkpoint import checkpoint_digest

    directory = demo_folder(cfg)
    if not (directory / ARGS_FILE).is_file():
        return f"pretrained:{cfg.fingerprint()}"
    recorded = directory / PRETRAINED_BY_FILE
    return f"pretrained:{recorded.read_text().strip()}" if recorded.is_file() else checkpoint_digest(directory)


def ensure_demo_backbone(cfg: PretrainConfig | None = None,
                         lock: Callable[[str], AbstractContextManager] | None = None,
                         deadline: float | None = None) -> Path:
    """The demo backbone's folder, pretrained first (``cfg``: see :func:`demo_pretraining`) if it
    does not exist yet, or downloaded if another machine already pretrained it with the same
    settings into the tracking store. ``lock(name)``, shared by all workers, lets one of several
    workers that start together pretrain while the others wait for its checkpoint. ``deadline``:
    see :func:`pretrain`."""
    from scadapt.artifacts.checkpoints import fetch_checkpoint

    cfg = cfg or demo_pretraining()
    directory = demo_folder(cfg)
    if (directory / ARGS_FILE).is_file():
        log.info("Reusing the demo backbone in %s.", directory)
        return directory
    with (lock(f"pretrain:{cfg.fingerprint()}") if lock else contextlib.nullcontext()):
        if (directory / ARGS_FILE).is_file():
            return directory
        if uri := _pretrained_elsewhere(cfg):
            fetched = fetch_checkpoint(uri)
            directory.mkdir(parents=True, exist_ok=True)
            (directory / PRETRAINED_BY_FILE).write_text(cfg.fingerprint() + "\n")
            for name in (VOCAB_FILE, WEIGHTS_FILE, ARGS_FILE):  # args.json last: it marks the folder complete
                shutil.copyfile(fetched / name, directory / name)
            log.info("Using the demo backbone pretrained by another worker (%s), in %s.", uri, directory)
            return directory
        log.info("No demo backbone yet: pretraining one on %s (%d epochs).", ", ".join(cfg.data), cfg.epochs)
        pretrain(cfg, deadline)
    return directory


def _pretrained_elsewhere(cfg: PretrainConfig) -> str | None:
    """The ``runs:/`` URI of a finished pretraining run of these settings in the tracking store."""
    from scadapt.tracking.runs import search_all_runs

    experiment = mlflow.get_experiment_by_name(cfg.experiment)
    if experiment is None:
        return None
    runs = search_all_runs([experiment.experiment_id], f"tags.`{PRETRAIN_FINGERPRINT_TAG}` = '{cfg.fingerprint()}' and "
                                                       "attributes.status = 'FINISHED'")
    return f"runs:/{runs[0].info.run_id}/{BACKBONE_ARTIFACT}" if runs else None
