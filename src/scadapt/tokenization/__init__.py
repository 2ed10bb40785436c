"""Gene vocabulary, scGPT binning and the AnnData -> token tensors pipeline."""

from scadapt.tokenization.binning import bin_cells
from scadapt.tokenization.cache import TokenCache
from scadapt.tokenization.tokenizer import GeneOverlap, GeneTokenizer, TokenizedCells
from scadapt.tokenization.vocab import GeneVocab

__all__ = ["GeneOverlap", "GeneTokenizer", "GeneVocab", "TokenCache", "TokenizedCells", "bin_cells"]
