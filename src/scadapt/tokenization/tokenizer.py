"""From AnnData to model input: gene matching, validation, binning, ``<cls>``, subsetting, padding."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch
from anndata import AnnData

from scadapt.data.validation import check_values, looks_like_ensembl, scaled_data_fix
from scadapt.infra.errors import InputDataError, VocabularyError
from scadapt.tokenization.binning import bin_cells
from scadapt.tokenization.cache import TokenCache
from scadapt.tokenization.vocab import GeneVocab

log = logging.getLogger(__name__)

COVERAGE_REMEDIES = (
    "Two remedies: pass the real scGPT checkpoint (--checkpoint DIR; the whole-human vocabulary has 60,697 genes), "
    "or pretrain the demo backbone on your own unlabelled cells in the same command (--pretrain-data cells.h5ad, "
    "or -P pretrain_data=cells.h5ad with mlflow run), or beforehand with "
    "`scadapt pretrain --data cells.h5ad --output-dir DIR` and --checkpoint DIR."
)


@dataclass(frozen=True)
class GeneOverlap:
    """How the genes of a dataset map onto a vocabulary."""

    n_genes: int
    n_matched: int
    unmatched_examples: list[str] = field(default_factory=list)

    @property
    def fraction(self) -> float:
        return self.n_matched / self.n_genes if self.n_genes else 0.0

    def describe(self) -> str:
        return f"{self.n_matched} of {self.n_genes} genes ({self.fraction:.1%}) are in the vocabulary"


@dataclass
class TokenizedCells:
    """Binned, vocabulary-mapped cells in CSR form (no ``<cls>``, no padding yet).

    Row ``i`` holds the in-vocabulary genes with non-zero expression of cell ``i``:
    ``gene_ids[indptr[i]:indptr[i+1]]`` and their bins ``bins[...]``.
    """

    indptr: np.ndarray  # [n_cells + 1] int64
    gene_ids: np.ndarray  # [nnz] int64 vocabulary ids
    bins: np.ndarray  # [nnz] float32, 1..n_bins-1
    overlap: GeneOverlap
    key: str = ""  # content hash of the input and binning (see GeneTokenizer.tokenize); "" if unknown

    @property
    def n_cells(self) -> int:
        return len(self.indptr) - 1

    @property
    def lengths(self) -> np.ndarray:
        """Number of expressed in-vocabulary genes per cell (``[n_cells]``)."""
        return np.diff(self.indptr)


def mean_tokens(matrix, genes, vocab: GeneVocab, max_seq_len: int) -> float:
    """Mean tokens per cell of ``matrix`` ``[cells, genes]`` a backbone over ``vocab`` reads: its
    expressed genes in the vocabulary and the ``<cls>`` token, at most ``max_seq_len``."""
    known = np.fromiter((vocab.get(str(g), -1) >= 0 for g in genes), dtype=bool, count=len(genes))
    expressed = matrix[:, known]
    counts = expressed.getnnz(axis=1) if sp.issparse(expressed) else np.count_nonzero(expressed, axis=1)
    return float(np.minimum(np.asarray(counts).ravel() + 1, max_seq_len).mean()) if len(counts) else 0.0


class GeneTokenizer:
    """Turns an AnnData into scGPT input tensors.

    Args:
        vocab: the model vocabulary.
        n_bins: number of value bins (scGPT: 51).
        max_seq_len: tokens per cell including ``<cls>``; cells with more genes are subsampled.
        pad_value: value at padded positions (scGPT: -2).
        min_genes: refuse datasets with fewer genes in the vocabulary than this.
        seed: seed for tie-breaking in binning and for gene subsetting.
        cache: where tokenized datasets are kept between runs (None: no caching).
    """

    def __init__(
        self,
        vocab: GeneVocab,
        n_bins: int = 51,
        max_seq_len: int = 1200,
        pad_value: float = -2.0,
        min_genes: int = 200,
        seed: int = 0,
        cache: TokenCache | None = None,
    ):
        self.vocab = vocab
        self.n_bins = n_bins
        self.max_seq_len = max_seq_len
        self.pad_value = pad_value
        self.min_genes = min_genes
        self.seed = seed
        self.cache = cache

    # -- genes ---------------------------------------------------------------------------------
    def gene_symbols(self, adata: AnnData, gene_column: str | None = None) -> np.ndarray:
        if gene_column is None:
            return np.asarray(adata.var_names, dtype=str)
        if gene_column not in adata.var.columns:
            raise InputDataError(
                f"Gene column {gene_column!r} is not in adata.var. Columns: "
                f"{', '.join(map(str, adata.var.columns)) or '(none)'}; or leave it out to use var_names."
            )
        return np.asarray(adata.var[gene_column], dtype=str)

    def match_genes(self, symbols: np.ndarray) -> tuple[np.ndarray, GeneOverlap]:
        """Vocabulary id per gene (-1 where absent) and the overlap; refuses too small an overlap."""
        ids = np.fromiter((self.vocab.get(s, -1) for s in symbols), dtype=np.int64, count=len(symbols))
        matched = ids >= 0
        overlap = GeneOverlap(
            n_genes=len(symbols),
            n_matched=int(matched.sum()),
            unmatched_examples=[str(s) for s in symbols[~matched][:5]],
        )
        if overlap.n_matched < self.min_genes:
            hint = ""
            if looks_like_ensembl(symbols):
                hint = (
                    " The genes look like Ensembl ids; the vocabulary uses gene symbols: pass the "
                    "var column that holds symbols (gene_column=...)."
                )
            raise VocabularyError(
                f"Only {overlap.describe()}, fewer than the required {self.min_genes} "
                f"(examples not found: {', '.join(overlap.unmatched_examples) or 'none'}).{hint} "
                f"Use gene symbols as in the model vocabulary, or lower min_genes if you accept a weaker input. "
                f"{COVERAGE_REMEDIES}"
            )
        duplicated = np.unique(ids[matched], return_counts=True)
        dupes = duplicated[0][duplicated[1] > 1]
        if len(dupes):
            names = [self.vocab.token(int(i)) for i in dupes[:5]]
            raise InputDataError(
                f"{len(dupes)} gene symbol(s) occur in more than one column, e.g. {', '.join(names)}. "
                "Make them unique (e.g. sum duplicated genes, or adata.var_names_make_unique())."
            )
        return ids, overlap

    # -- values --------------------------------------------------------------------------------
    @staticmethod
    def expression_matrix(adata: AnnData, layer: str | None = None) -> sp.csr_matrix:
        """The chosen matrix as CSR float, checked for being numeric, finite and non-negative."""
        if layer is not None and layer not in adata.layers:
            raise InputDataError(
                f"Layer {layer!r} is not in adata.layers ({', '.join(adata.layers.keys()) or 'none'})."
            )
        matrix = adata.X if layer is None else adata.layers[layer]
        if matrix is None:
            raise InputDataError("adata.X is empty; pass layer=... with the expression values.")
        check_values(matrix, scaled_data_fix(adata) if layer is None else "")
        matrix = sp.csr_matrix(matrix) if not sp.issparse(matrix) else matrix.tocsr()
        matrix = matrix.astype(np.float32, copy=True)
        matrix.eliminate_zeros()
        matrix.sort_indices()
        return matrix

    # -- tokenization --------------------------------------------------------------------------
    def tokenize(
        self, adata: AnnData, layer: str | None = None, gene_column: str | None = None
    ) -> TokenizedCells:
        """Match genes, validate values and bin every cell (cached when a cache is set)."""
        ids, overlap = self.match_genes(self.gene_symbols(adata, gene_column))
        log.info("Tokenizing %d cells: %s.", adata.n_obs, overlap.describe())
        return self._tokenize(self.expression_matrix(adata, layer), ids, overlap)

    def tokenize_matrix(self, matrix, symbols: np.ndarray) -> TokenizedCells:
        """:meth:`tokenize` of an expression matrix ``[n_cells, len(symbols)]`` (dense or sparse)
        whose columns are the gene ``symbols``: the served model's path, without an AnnData."""
        ids, overlap = self.match_genes(symbols)
        check_values(matrix)
        matrix = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
        matrix.eliminate_zeros()
        return self._tokenize(matrix, ids, overlap)

    def _tokenize(self, matrix: sp.csr_matrix, ids: np.ndarray, overlap: GeneOverlap) -> TokenizedCells:
        matrix = matrix[:, np.flatnonzero(ids >= 0)]
        matrix.sort_indices()
        gene_ids = ids[ids >= 0][matrix.indices]
        key = self._cache_key(matrix, gene_ids)
        if self.cache is not None and (hit := self.cache.load(key)) is not None:
            return TokenizedCells(hit["indptr"], hit["gene_ids"], hit["bins"], overlap, key)
        bins = bin_cells(matrix.indptr, matrix.data, self.n_bins, self.seed, gene_ids)
        cells = TokenizedCells(matrix.indptr.astype(np.int64), gene_ids, bins, overlap, key)
        if self.cache is not None:
            self.cache.save(key, indptr=cells.indptr, gene_ids=cells.gene_ids, bins=cells.bins)
        return cells

    def _cache_key(self, matrix: sp.csr_matrix, gene_ids: np.ndarray) -> str:
        digest = hashlib.blake2b(digest_size=16)
        digest.update(f"v2|{self.n_bins}|{self.seed}|{matrix.shape}|".encode())  # v2: per-cell tie-breaking
        for array in (matrix.indptr.astype(np.int64), gene_ids, matrix.data):
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()

    @staticmethod
    def _content_key(cells: TokenizedCells, start: int, stop: int) -> int:
        """A number that names a tokenized cell by its content, not its place among other cells."""
        digest = hashlib.blake2b(cells.gene_ids[start:stop].tobytes(), digest_size=8)
        digest.update(cells.bins[start:stop].tobytes())
        return int.from_bytes(digest.digest(), "little")

    def varies_by_epoch(self, cells: TokenizedCells, indices: np.ndarray) -> np.ndarray:
        """Whether each cell's tokens differ between epochs (bool ``[len(indices)]``): cells with
        more genes than fit in ``max_seq_len`` get a new random subset in every epoch."""
        return cells.lengths[np.asarray(indices)] > self.max_seq_len - 1

    def token_lengths(self, cells: TokenizedCells, indices: np.ndarray) -> np.ndarray:
        """Tokens of each cell in a batch, ``<cls>`` included (``[len(indices)]``)."""
        return np.minimum(cells.lengths[np.asarray(indices)] + 1, self.max_seq_len)

    def batch(
        self, cells: TokenizedCells, indices: np.ndarray, epoch: int = 0
    ) -> dict[str, torch.Tensor]:
        """Padded tensors for the cells ``indices``.

        A cell with more genes than ``max_seq_len - 1`` keeps a random subset, drawn from a
        generator seeded by (seed, epoch, the cell's genes and bins): the same cell gets the same
        subset in any batch, chunk or request, and training sees new subsets each epoch.

        Returns:
            ``gene_ids`` ``[B, L]`` long, ``values`` ``[B, L]`` float, ``padding_mask`` ``[B, L]``
            bool (True at padding), with ``L = min(max_seq_len, longest cell + 1)``.
        """
        indices = np.asarray(indices)
        lengths = self.token_lengths(cells, indices)
        width = int(lengths.max())
        gene_ids = np.full((len(indices), width), self.vocab.pad_id, dtype=np.int64)
        values = np.full((len(indices), width), self.pad_value, dtype=np.float32)
        gene_ids[:, 0] = self.vocab.cls_id
        values[:, 0] = 0.0
        for row, cell in enumerate(indices):
            start, stop = cells.indptr[cell], cells.indptr[cell + 1]
            keep = np.arange(start, stop)
            if stop - start > self.max_seq_len - 1:  # as in varies_by_epoch
                rng = np.random.default_rng((self.seed, epoch, self._content_key(cells, start, stop)))
                keep = start + np.sort(rng.choice(stop - start, self.max_seq_len - 1, replace=False))
            gene_ids[row, 1 : len(keep) + 1] = cells.gene_ids[keep]
            values[row, 1 : len(keep) + 1] = cells.bins[keep]
        return {
            "gene_ids": torch.from_numpy(gene_ids),
            "values": torch.from_numpy(values),
            "padding_mask": torch.from_numpy(np.arange(width)[None, :] >= lengths[:, None]),
        }
