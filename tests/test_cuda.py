"""The CUDA path (bf16/fp16 autocast). Skipped on machines without a GPU, as in CI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scadapt.backbone import embed_cells, load_backbone
from scadapt.jobs.pretrain import PretrainConfig, pretrain
from scadapt.tokenization import GeneTokenizer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory):
    """A tiny backbone pretrained for 4 epochs: unlike a random one, its cells lie far enough apart
    (nearest other cell ~0.05 on CPU) for bf16 noise (~0.01) to be told from a real error."""
    directory = tmp_path_factory.mktemp("trained") / "backbone"
    pretrain(PretrainConfig(data=("pancreas_small",), d_model=32, nlayers=2, nhead=4, d_hid=48, max_seq_len=128,
                            epochs=4, min_genes=50, device="cuda", output_dir=str(directory)))
    return directory


def test_autocast_embeddings_agree_with_cpu_closer_than_any_two_cells(trained_checkpoint, pancreas):
    """Each cell's GPU embedding lies within half the distance from its CPU embedding to the nearest
    other cell's, and nearest to its own. Shuffled cells, or a padding mask ignored (cells of many
    lengths: up to 1,200 tokens), are far outside that (measured on CPU: 21x the distance)."""
    loaded = load_backbone(trained_checkpoint)
    tokenizer = GeneTokenizer(loaded.vocab, max_seq_len=1200, min_genes=50)
    cells = tokenizer.tokenize(pancreas[:64])
    on_cpu = embed_cells(loaded.model, tokenizer, cells, progress=False)
    on_gpu = embed_cells(loaded.model.to("cuda"), tokenizer, cells, progress=False)
    between = np.linalg.norm(on_cpu[:, None] - on_cpu[None], axis=2)
    np.fill_diagonal(between, np.inf)
    error = np.linalg.norm(on_gpu - on_cpu, axis=1)
    assert (error < 0.5 * between.min(axis=1)).all(), (error.max(), between.min())
    assert (np.linalg.norm(on_gpu[:, None] - on_cpu[None], axis=2).argmin(axis=1) == np.arange(len(on_cpu))).all()


def test_pretraining_runs_on_cuda(tmp_path):
    result = pretrain(PretrainConfig(data=("pancreas_small",), d_model=32, nlayers=2, nhead=4, d_hid=48,
                                     max_seq_len=128, epochs=2, min_genes=50, device="cuda",
                                     output_dir=str(tmp_path / "gpu")))
    assert np.isfinite(result.val_loss) and result.epoch_losses[-1] < result.epoch_losses[0]
