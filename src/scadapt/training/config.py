"""Settings of training jobs, importable without torch (the console command reads their defaults)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from scadapt.errors import ScadaptError


@dataclass
class PretrainConfig:
    """Settings of a pretraining job. Model-shape fields apply only to a new backbone."""

    data: tuple[str, ...] = ("pbmc68k_reduced", "pancreas_small")
    layer: str | None = None
    checkpoint: str | None = None
    output_dir: str | None = None
    d_model: int = 64
    nlayers: int = 4
    nhead: int = 4
    d_hid: int = 128
    dropout: float = 0.1
    n_bins: int = 51
    max_seq_len: int = 512
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 30
    mask_ratios: tuple[float, ...] = (0.25, 0.5, 0.75)
    val_fraction: float = 0.05
    min_genes: int = 100
    seed: int = 0
    device: str = "auto"
    experiment: str = "scadapt-pretrain"

    def __post_init__(self) -> None:
        self.data = tuple(self.data)
        self.mask_ratios = tuple(float(r) for r in self.mask_ratios)
        if not self.data:
            raise ScadaptError("Pretraining needs at least one dataset (data=...).")
        if not all(0.0 < r < 1.0 for r in self.mask_ratios):
            raise ScadaptError(f"mask_ratios must lie strictly between 0 and 1, got {self.mask_ratios}.")
        if self.epochs < 1 or self.batch_size < 1:
            raise ScadaptError("epochs and batch_size must be at least 1.")

    def fingerprint(self) -> str:
        """Identifies the job for resuming: everything but where it runs and logs."""
        keep = {k: v for k, v in asdict(self).items() if k not in ("device", "experiment", "output_dir")}
        return hashlib.blake2b(json.dumps(keep, sort_keys=True).encode(), digest_size=12).hexdigest()


@dataclass
class TrainJob:
    """One strategy on one split of one dataset, with fixed hyperparameters (the ``train`` entry point).

    ``hparams`` are the strategy's own settings (see ``scadapt.strategies``), given as values or
    strings; everything else chooses the data, the split and the backbone.
    """

    data: str = "pancreas_small"
    label_key: str | None = None
    batch_key: str | None = None
    layer: str | None = None
    gene_column: str | None = None
    drop_rare_classes: bool = False
    regime: str = "full"
    split: str | None = None  # e.g. "full_fold0"; default: the regime's first split
    n_folds: int = 5
    validation_fraction: float = 0.2
    label_fractions: tuple[float, ...] = (0.01, 0.05, 0.10)
    study_groups: dict[str, tuple[str, ...]] | None = None
    strategy: str = "head"
    hparams: dict[str, object] = field(default_factory=dict)
    checkpoint: str | None = None  # default: the demo backbone made by `scadapt pretrain`
    max_seq_len: int | None = None  # tokens per cell; default: the checkpoint's
    min_genes: int = 200  # refuse data with fewer genes in the backbone's vocabulary
    seed: int = 0
    device: str = "auto"
    experiment: str | None = None  # default: "scadapt-<dataset>"
    output_dir: str | None = None  # also save the trained annotator here
    umap: bool = True
    progress: bool = True
    parent_run_id: str | None = None  # nest the job's run under this run (e.g. a benchmark's)
    run_tags: dict[str, str] = field(default_factory=dict)  # more tags for the job's own run
