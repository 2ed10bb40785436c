"""Checks that a job can run, made before any pretraining, tuning or download starts.

The backbone's vocabulary is read without loading weights: from the checkpoint's ``vocab.json``,
from the demo backbone if it exists, or, when the demo backbone is still to be pretrained, from
the genes of the data it will be pretrained on (its vocabulary is exactly those genes). A dataset
with fewer than ``min_genes`` genes in it is refused; one with under half of its genes in it is
run with a warning that names the two remedies.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from anndata import AnnData

from scadapt.backbone.checkpoint import ARGS_FILE, read_args
from scadapt.backbone.config import BackboneConfig
from scadapt.data import load_expression
from scadapt.infra.notices import warn_once
from scadapt.infra.storage import demo_backbone_dir
from scadapt.jobs.config import PretrainConfig
from scadapt.tokenization import GeneTokenizer, GeneVocab
from scadapt.tokenization.tokenizer import COVERAGE_REMEDIES, mean_tokens

log = logging.getLogger(__name__)

LOW_COVERAGE = 0.5  # below this fraction of a dataset's genes in the vocabulary, warn


@dataclass(frozen=True)
class GeneCoverage:
    """How much of a dataset the backbone's vocabulary covers."""

    dataset: str
    n_genes: int
    n_matched: int
    vocabulary: str  # which vocabulary: a checkpoint folder, or the demo backbone and its data

    @property
    def fraction(self) -> float:
        return self.n_matched / self.n_genes if self.n_genes else 0.0

    @property
    def low(self) -> bool:
        return self.fraction < LOW_COVERAGE

    def describe(self) -> str:
        return (f"{self.dataset}: {self.n_matched} of {self.n_genes} genes ({self.fraction:.1%}) are in the "
                f"vocabulary of {self.vocabulary}")

    @property
    def warning_key(self) -> str:
        """The same for one dataset's low coverage however the vocabulary is described."""
        return f"low gene coverage: {self.dataset}"

    def warning(self) -> str:
        """The low-coverage warning (empty when coverage is fine)."""
        if not self.low:
            return ""
        return (f"Low gene coverage: only {self.describe()}. The backbone sees the rest of the genes as absent. "
                f"{COVERAGE_REMEDIES}")


@dataclass(frozen=True)
class BackboneVocabulary:
    vocab: GeneVocab
    description: str


def backbone_vocabulary(checkpoint: str | Path | None, pretrain: PretrainConfig) -> BackboneVocabulary:
    """The vocabulary the job will use: the checkpoint's, the existing demo backbone's, or the one
    that pretraining the demo backbone on ``pretrain.data`` will give (the data is read and
    checked now, so bad pretraining data fails before anything else)."""
    from scadapt.backbone.checkpoint import read_vocabulary

    if checkpoint:
        return BackboneVocabulary(read_vocabulary(checkpoint), f"checkpoint {checkpoint}")
    directory = Path(pretrain.output_dir) if pretrain.output_dir else demo_backbone_dir()
    where = f"the demo backbone in {directory}"
    if (directory / ARGS_FILE).is_file():
        return BackboneVocabulary(read_vocabulary(directory), where)
    genes = (gene for source in pretrain.data
             for gene in load_expression(source, layer=pretrain.layer, gene_column=pretrain.gene_column).var_names)
    return BackboneVocabulary(GeneVocab.from_genes(genes),
                              f"{where} (to be pretrained on {', '.join(pretrain.data)})")


def backbone_shape(checkpoint: str | Path | None, pretrain: PretrainConfig, vocab_size: int) -> BackboneConfig:
    """The shape of the job's backbone: the checkpoint's, the demo backbone's, or the one
    pretraining it will give (known before it exists, for planning)."""
    directory = Path(checkpoint) if checkpoint else Path(pretrain.output_dir) if pretrain.output_dir \
        else demo_backbone_dir()
    if (directory / ARGS_FILE).is_file():
        return BackboneConfig.from_args(read_args(directory / ARGS_FILE), vocab_size)
    return pretrain.backbone_config(vocab_size)


def pretraining_size(pretrain: PretrainConfig, vocab: GeneVocab) -> tuple[int, float]:
    """Cells of the demo backbone's pretraining data and their mean tokens per cell."""
    sizes = [(adata.n_obs, mean_tokens(adata.X, adata.var_names, vocab, pretrain.max_seq_len))
             for adata in (load_expression(source, layer=pretrain.layer, gene_column=pretrain.gene_column)
                           for source in pretrain.data)]
    n_cells = sum(n for n, _ in sizes)
    return n_cells, sum(n * tokens for n, tokens in sizes) / max(1, n_cells)


def check_coverage(adata: AnnData, name: str, vocabulary: BackboneVocabulary, min_genes: int) -> GeneCoverage:
    """Refuse a dataset with fewer than ``min_genes`` genes in the vocabulary; warn under half."""
    tokenizer = GeneTokenizer(vocabulary.vocab, min_genes=min_genes)
    _, overlap = tokenizer.match_genes(np.asarray(adata.var_names, dtype=str))
    coverage = GeneCoverage(name, overlap.n_genes, overlap.n_matched, vocabulary.description)
    if coverage.low:
        warn_once(log, coverage.warning(), key=coverage.warning_key)
    else:
        log.info("Gene coverage: %s.", coverage.describe())
    return coverage
