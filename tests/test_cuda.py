"""The CUDA path (bf16/fp16 autocast). Skipped on machines without a GPU, as in CI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scadapt.backbone import embed_cells, load_backbone
from scadapt.tokenization import GeneTokenizer
from scadapt.training.pretrain import PretrainConfig, pretrain

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_autocast_embeddings_agree_with_cpu(tiny_checkpoint, pancreas):
    loaded = load_backbone(tiny_checkpoint)
    tokenizer = GeneTokenizer(loaded.vocab, max_seq_len=128, min_genes=50)
    cells = tokenizer.tokenize(pancreas[:64])
    on_cpu = embed_cells(loaded.model, tokenizer, cells, progress=False)
    on_gpu = embed_cells(loaded.model.to("cuda"), tokenizer, cells, progress=False)
    cosine = (on_cpu * on_gpu).sum(1) / (np.linalg.norm(on_cpu, axis=1) * np.linalg.norm(on_gpu, axis=1))
    assert cosine.min() > 0.98


def test_pretraining_runs_on_cuda(tmp_path):
    result = pretrain(PretrainConfig(data=("pancreas_small",), d_model=32, nlayers=2, nhead=4, d_hid=48,
                                     max_seq_len=128, epochs=2, min_genes=50, device="cuda",
                                     output_dir=str(tmp_path / "gpu")))
    assert np.isfinite(result.val_loss) and result.epoch_losses[-1] < result.epoch_losses[0]
