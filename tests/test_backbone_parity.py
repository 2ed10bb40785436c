"""Our backbone against the reference scGPT ``TransformerModel`` on the same release checkpoint."""

from __future__ import annotations

import json

import numpy as np
import torch
from conftest import WHOLE_HUMAN, padded_batch, random_backbone
from reference_scgpt import reference_cls_embeddings, reference_model

from scadapt.backbone import BackboneConfig, ScGPTBackbone, load_backbone, save_backbone
from scadapt.tokenization import GeneTokenizer, GeneVocab


def test_tiny_config_matches_reference(tmp_path):
    vocab = GeneVocab.from_genes(f"G{i}" for i in range(60))
    save_backbone(random_backbone(vocab, nlayers=3), vocab, tmp_path)
    ours = load_backbone(tmp_path).model
    ref = reference_model(tmp_path)
    ids, values, mask = padded_batch(vocab, 6, 40, pad_from={1: 25, 3: 7, 4: 39})
    expected = reference_cls_embeddings(ref, ids, values, mask)
    with torch.no_grad():
        cls_only = ours(ids, values, mask)
        full = ours.encode(ids, values, mask)[:, 0]
    assert expected.abs().max() > 0.1  # a meaningful comparison, not two zero tensors
    assert (cls_only - expected).abs().max() <= 1e-5
    assert (full - expected).abs().max() <= 1e-5


def test_padding_does_not_change_the_embedding(tmp_path):
    vocab = GeneVocab.from_genes(f"G{i}" for i in range(60))
    model = random_backbone(vocab).eval()
    ids, values, mask = padded_batch(vocab, 2, 30, pad_from={0: 20})
    with torch.no_grad():
        padded = model(ids[:1], values[:1], mask[:1])
        trimmed = model(ids[:1, :20], values[:1, :20], mask[:1, :20])
    assert torch.allclose(padded, trimmed, atol=1e-6)


def test_whole_human_shapes_match_reference(tmp_path, pancreas):
    args = json.loads((WHOLE_HUMAN / "args.json").read_text())
    vocab = GeneVocab.from_file(WHOLE_HUMAN / "vocab.json")
    config = BackboneConfig.from_args(args, vocab_size=len(vocab))
    assert (config.d_model, config.nlayers, config.nhead, len(vocab)) == (512, 12, 8, 60697)
    torch.manual_seed(0)
    model = ScGPTBackbone(config, pad_id=vocab["<pad>"], with_decoders=True)
    save_backbone(model, vocab, tmp_path)
    del model
    ours = load_backbone(tmp_path)
    n_params = sum(p.numel() for p in ours.model.parameters())
    assert 50e6 < n_params < 53e6  # about 51.9M with the decoders, which are not loaded here

    tokenizer = GeneTokenizer(vocab, max_seq_len=config.max_seq_len, min_genes=100)
    cells = tokenizer.tokenize(pancreas[:4])
    batch = tokenizer.batch(cells, np.arange(4))
    ref = reference_model(tmp_path)
    expected = reference_cls_embeddings(ref, batch["gene_ids"], batch["values"], batch["padding_mask"])
    with torch.no_grad():
        got = ours.model(batch["gene_ids"], batch["values"], batch["padding_mask"])
    assert (got - expected).abs().max() <= 1e-5
