"""Cell embeddings, batching, and adapters acting on the attention projections in eval mode."""

from __future__ import annotations

import numpy as np
import torch
from conftest import padded_batch, random_backbone

from scadapt.backbone import embed_cells, load_backbone
from scadapt.tokenization import GeneTokenizer, GeneVocab
from scadapt.tokenization.batching import inference_batches, length_grouped_batches


def test_length_grouped_batches_cover_every_cell_once():
    lengths = np.random.default_rng(0).integers(1, 500, 1000)
    for rng in (None, np.random.default_rng(1)):
        batches = length_grouped_batches(lengths, 32, rng)
        flat = np.concatenate(batches)
        assert sorted(flat.tolist()) == list(range(1000)) and max(map(len, batches)) == 32
    sorted_batches = length_grouped_batches(lengths, 32, None)
    spread = np.mean([np.ptp(lengths[b]) for b in sorted_batches])
    assert spread < 0.1 * np.ptp(lengths)  # batches hold cells of similar length


def test_inference_batches_hold_every_cell_once_within_the_token_and_cell_limits():
    lengths = np.random.default_rng(0).integers(1, 1200, 1000)
    for max_tokens, max_cells in ((4096, 64), (4096, 8), (500, 64)):
        batches = inference_batches(lengths, max_tokens, max_cells)
        assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
        for batch in batches:  # within the limits, or one cell longer than the token budget alone
            assert len(batch) <= max_cells
            assert len(batch) * lengths[batch].max() <= max_tokens or len(batch) == 1
        longest = [lengths[b].max() for b in batches]
        assert longest == sorted(longest)  # sorted by length: little padding
        # a batch stops only where the next cell would break a limit
        for batch, following in zip(batches, batches[1:], strict=False):
            grown = np.append(batch, following[0])
            assert len(grown) > max_cells or len(grown) * lengths[grown].max() > max_tokens
    assert inference_batches(np.array([], dtype=int), 4096, 8) == []


def test_embed_cells_keeps_cell_order_and_matches_single_cell_forward(tiny_checkpoint, pancreas):
    loaded = load_backbone(tiny_checkpoint)
    tokenizer = GeneTokenizer(loaded.vocab, max_seq_len=96, min_genes=50)
    cells = tokenizer.tokenize(pancreas[:40])
    embeddings = embed_cells(loaded.model, tokenizer, cells, batch_size=8, progress=False)
    assert embeddings.shape == (40, 32)
    with torch.no_grad():
        for cell in (0, 17, 39):
            single = tokenizer.batch(cells, np.array([cell]))
            expected = loaded.model(single["gene_ids"], single["values"], single["padding_mask"])
            np.testing.assert_allclose(embeddings[cell], expected[0].numpy(), atol=1e-5)
    some = np.array([39, 3, 17])
    subset = embed_cells(loaded.model, tokenizer, cells, batch_size=2, progress=False, indices=some)
    np.testing.assert_allclose(subset, embeddings[some], atol=1e-5)


def test_lora_on_attention_projections_changes_eval_outputs():
    """peft adapters wrap q/k/v/out; they must act in eval mode under no_grad (the fast path of
    torch's TransformerEncoderLayer would bypass them)."""
    from peft import LoraConfig, inject_adapter_in_model

    vocab = GeneVocab.from_genes(f"G{i}" for i in range(50))
    model = random_backbone(vocab)
    ids, values, mask = padded_batch(vocab, 4, 16, pad_from={1: 9})
    with torch.no_grad():
        before = model.eval()(ids, values, mask)
    adapted = inject_adapter_in_model(LoraConfig(r=4, target_modules=["q", "k", "v", "out"]), model)
    lora_b = [p for n, p in adapted.named_parameters() if "lora_B" in n]
    assert len(lora_b) == 4 * 2  # four projections in each of two layers
    with torch.no_grad():
        assert torch.allclose(adapted.eval()(ids, values, mask), before, atol=1e-6)  # B starts at 0
        for p in lora_b:
            p.normal_(0, 0.5)
        after = adapted.eval()(ids, values, mask)
    assert (after - before).abs().max() > 1e-2
