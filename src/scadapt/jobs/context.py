"""What a strategy trains on: the data, its split, the tokenized cells and the frozen backbone.

:func:`prepare` does the work that does not depend on a strategy's settings once, so that tuning
reuses it for every trial.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from anndata import AnnData

from scadapt.artifacts.checkpoints import local_checkpoint, publish_checkpoint
from scadapt.backbone import embed_cells, load_backbone
from scadapt.backbone.checkpoint import ARGS_FILE
from scadapt.backbone.embedding_cache import EmbeddingCache, embedding_key
from scadapt.data import DatasetInfo, Split, load_and_split
from scadapt.data.options import SplitOptions
from scadapt.fitting.memory import MemoryBudget, inference_token_cap
from scadapt.infra.coordination import Coordinator
from scadapt.infra.devices import compute_dtype, resolve_device
from scadapt.infra.errors import CheckpointError, ScadaptError
from scadapt.infra.notices import warn_once
from scadapt.infra.options import group_of
from scadapt.infra.storage import demo_backbone_dir
from scadapt.jobs.config import TrainJob
from scadapt.jobs.preflight import GeneCoverage
from scadapt.strategies.base import Strategy
from scadapt.tokenization import GeneTokenizer, TokenCache, TokenizedCells

log = logging.getLogger(__name__)


@dataclass
class TrainingContext:
    """Everything about the data and backbone that does not depend on the strategy's settings."""

    adata: AnnData
    info: DatasetInfo
    split: Split
    classes: list[str]  # the classes of the training cells, in model output order
    codes: np.ndarray  # [n_cells] class index, -1 for a class absent from training
    device: torch.device
    checkpoint: Path | None  # the backbone's folder on this machine
    weights_hash: str | None = None
    checkpoint_uri: str = ""  # the same checkpoint in the artifact store (runs:/...), for other machines
    backbone: torch.nn.Module | None = field(default=None, repr=False)  # pristine, on ``device``; never trained
    tokenizer: GeneTokenizer | None = None
    cells: TokenizedCells | None = None
    gene_overlap: str = ""
    _embeddings: np.ndarray | None = field(default=None, repr=False)  # [n_cells, d]; valid where _embedded
    _embedded: np.ndarray | None = field(default=None, repr=False)  # [n_cells] bool
    embedding_sec: float = 0.0
    memory: MemoryBudget | None = None  # what training through the backbone may use
    checkpointing: str = "auto"  # activation checkpointing: auto, on or off
    deadline: float | None = None  # time.time() after which a fit ends at its next epoch (the job's time budget)
    method: Strategy | None = None  # the job's strategy: it scores the cells with what it fitted

    @property
    def labels(self) -> np.ndarray:
        return self.adata.obs[self.info.label_key].astype(str).to_numpy()

    def fresh_backbone(self) -> torch.nn.Module:
        """A copy of the pristine backbone for a strategy that changes it in place."""
        return copy.deepcopy(self.backbone)

    def embeddings(self, indices: np.ndarray | None = None, progress: bool = True) -> np.ndarray:
        """Frozen CLS embeddings of cells ``indices`` ``[len(indices), d]`` (default: of every cell,
        ``[n_cells, d]``). Each cell passes through the backbone once for all jobs on the same
        data and backbone: embeddings are kept in the on-disk :class:`EmbeddingCache`."""
        n_cells, width = self.cells.n_cells, self.backbone.config.d_model
        key = self._embedding_key()
        if self._embeddings is None:
            stored = EmbeddingCache().load(key, n_cells, width) if key else None
            self._embeddings, self._embedded = stored if stored is not None else (
                np.zeros((n_cells, width), dtype=np.float32), np.zeros(n_cells, dtype=bool))
        wanted = np.arange(n_cells) if indices is None else np.asarray(indices)
        missing = wanted[~self._embedded[wanted]]
        if len(missing):
            started = time.perf_counter()
            self._embeddings[missing] = embed_cells(self.backbone, self.tokenizer, self.cells, progress=progress,
                                                    indices=missing, max_tokens=self.inference_cap())
            self._embedded[missing] = True
            if key:
                EmbeddingCache().save(key, self._embeddings, self._embedded)
            self.embedding_sec += time.perf_counter() - started
        return self._embeddings if indices is None else self._embeddings[wanted]

    def inference_cap(self) -> int | None:
        """Tokens a pass without gradients may take at once within the memory budget."""
        if self.memory is None or self.cells is None:
            return None
        config = self.backbone.config
        longest = int(self.tokenizer.token_lengths(self.cells, np.arange(self.cells.n_cells)).max(initial=1))
        return inference_token_cap(self.memory, config.d_model, config.d_hid, config.nhead, longest)

    def frozen_limit(self) -> int | None:
        """Bytes the frozen-layer outputs kept for training may take: half the memory budget."""
        return None if self.memory is None else self.memory.bytes // 2

    def _embedding_key(self) -> str:
        if not (self.cells.key and self.weights_hash):
            return ""
        t = self.tokenizer
        return embedding_key(self.weights_hash, self.cells.key, t.max_seq_len, t.pad_value, t.seed,
                             f"{self.device.type}-{compute_dtype(self.device)}")


def prepare(job: TrainJob, board: Coordinator | None = None) -> TrainingContext:
    """Load and validate the data, make the job's split, tokenize for the backbone.

    The backbone is also logged to the artifact store (once per weights hash; ``board``'s lock
    keeps workers that start together from logging it twice), so other machines can use what
    this one trains."""
    adata, splits = load_and_split(job.data, job.reading, group_of(job, SplitOptions))
    by_name = {s.name: s for s in splits}
    if job.split is not None and job.split not in by_name:
        raise ScadaptError(f"No split {job.split!r} in regime {job.regime!r}; splits: {', '.join(by_name)}.")
    split = by_name[job.split] if job.split else splits[0]
    info = DatasetInfo.of(adata)
    labels = adata.obs[info.label_key].astype(str).to_numpy()
    classes = sorted(set(labels[split.train]))
    position = {name: i for i, name in enumerate(classes)}
    codes = np.array([position.get(label, -1) for label in labels], dtype=np.int64)
    ctx = TrainingContext(adata, info, split, classes, codes, resolve_device(job.device), None,
                          checkpointing=job.activation_checkpointing, deadline=job.deadline, method=job.method)
    if job.method.needs_backbone:
        ctx.checkpoint = local_checkpoint(job.checkpoint) if job.checkpoint else demo_backbone_dir()
        if not (ctx.checkpoint / ARGS_FILE).is_file() and not job.checkpoint:
            raise CheckpointError(
                f"No backbone checkpoint at {ctx.checkpoint}. Create the demo backbone with `scadapt pretrain` "
                "(a few minutes on CPU) or pass the scGPT model folder with --checkpoint."
            )
        loaded = load_backbone(ctx.checkpoint, with_decoders=False, device=ctx.device)
        ctx.backbone = loaded.model
        cfg = loaded.config
        ctx.weights_hash = loaded.weights_hash
        ctx.checkpoint_uri = publish_checkpoint(ctx.checkpoint, loaded.weights_hash, board.hold if board else None)
        ctx.tokenizer = GeneTokenizer(loaded.vocab, n_bins=cfg.n_bins, max_seq_len=job.max_seq_len or cfg.max_seq_len,
                                      pad_value=cfg.pad_value, min_genes=job.min_genes, seed=job.seed,
                                      cache=TokenCache())
        ctx.cells = ctx.tokenizer.tokenize(adata)
        ctx.memory = MemoryBudget.resolve(job.memory_budget, ctx.device)
        ctx.gene_overlap = ctx.cells.overlap.describe()
        overlap = ctx.cells.overlap
        coverage = GeneCoverage(info.name, overlap.n_genes, overlap.n_matched, f"checkpoint {ctx.checkpoint}")
        if coverage.low:  # once per job: a pipeline prepares many fits, in several processes
            warn_once(log, coverage.warning(), key=coverage.warning_key)
    return ctx
