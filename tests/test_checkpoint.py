"""Checkpoint format: release layout, key accounting, provenance hash and bad files."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import padded_batch, random_backbone

from scadapt.backbone import load_backbone, save_backbone
from scadapt.backbone.checkpoint import WEIGHTS_FILE
from scadapt.infra.errors import CheckpointError
from scadapt.tokenization import GeneVocab


def _vocab(n: int = 40) -> GeneVocab:
    return GeneVocab.from_genes(f"G{i}" for i in range(n))


def _weights(directory):
    return torch.load(directory / WEIGHTS_FILE, weights_only=True)


def test_saved_in_release_layout_and_round_trips(tmp_path):
    vocab = _vocab()
    model = random_backbone(vocab).eval()
    digest = save_backbone(model, vocab, tmp_path)
    keys = set(_weights(tmp_path))
    assert "transformer_encoder.layers.0.self_attn.Wqkv.weight" in keys
    assert "transformer_encoder.layers.1.self_attn.out_proj.bias" in keys
    assert not any(".self_attn.q." in k or ".self_attn.out." in k for k in keys)
    assert {"decoder.fc.0.weight", "mvc_decoder.W.weight", "encoder.enc_norm.weight"} <= keys
    loaded = load_backbone(tmp_path)
    assert loaded.weights_hash == digest
    ids, values, mask = padded_batch(vocab, 3, 12, pad_from={2: 6})
    with torch.no_grad():
        assert torch.equal(loaded.model(ids, values, mask), model(ids, values, mask))


def test_in_proj_layout_loads_to_the_same_weights(tmp_path):
    vocab = _vocab()
    digest = save_backbone(random_backbone(vocab), vocab, tmp_path)
    state = {k.replace("Wqkv.", "in_proj_"): v for k, v in _weights(tmp_path).items()}
    torch.save({"model_state_dict": state}, tmp_path / WEIGHTS_FILE)
    assert any(k.endswith("self_attn.in_proj_weight") for k in state)
    assert load_backbone(tmp_path).weights_hash == digest


def test_hash_changes_with_any_weight(tmp_path):
    vocab = _vocab()
    model = random_backbone(vocab)
    first = save_backbone(model, vocab, tmp_path / "a")
    with torch.no_grad():
        model.transformer_encoder.layers[1].linear2.bias[0] += 1e-3
    assert save_backbone(model, vocab, tmp_path / "b") != first


def test_missing_special_tokens_are_appended(tmp_path):
    vocab = _vocab()
    save_backbone(random_backbone(vocab), vocab, tmp_path)
    plain = {k: v for k, v in json.loads((tmp_path / "vocab.json").read_text()).items() if not k.startswith("<")}
    (tmp_path / "vocab.json").write_text(json.dumps(plain))
    loaded = load_backbone(tmp_path)
    assert loaded.vocab.appended_special_tokens == ["<pad>", "<cls>", "<eoc>"]
    assert loaded.vocab["<cls>"] == len(plain) + 1


def test_known_unused_keys_are_ignored_and_reported(tmp_path):
    vocab = _vocab()
    save_backbone(random_backbone(vocab), vocab, tmp_path)
    state = _weights(tmp_path)
    state["cls_decoder.out_layer.weight"] = torch.zeros(3, 32)
    torch.save(state, tmp_path / WEIGHTS_FILE)
    loaded = load_backbone(tmp_path)
    assert "cls_decoder.out_layer.weight" in loaded.ignored_keys
    assert "decoder.fc.0.weight" in loaded.ignored_keys  # decoders unused for embedding
    assert load_backbone(tmp_path, with_decoders=True).model.decoder is not None


@pytest.mark.parametrize("missing", ["args.json", "vocab.json", "best_model.pt"])
def test_missing_file(tmp_path, missing):
    vocab = _vocab()
    save_backbone(random_backbone(vocab), vocab, tmp_path)
    (tmp_path / missing).unlink()
    with pytest.raises(CheckpointError, match=f"lacks {missing}"):
        load_backbone(tmp_path)


def test_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_backbone(tmp_path / "nowhere")


def test_truncated_weights(tmp_path):
    vocab = _vocab()
    save_backbone(random_backbone(vocab), vocab, tmp_path)
    blob = (tmp_path / WEIGHTS_FILE).read_bytes()
    (tmp_path / WEIGHTS_FILE).write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_backbone(tmp_path)


def test_pickled_objects_are_refused(tmp_path):
    vocab = _vocab()
    save_backbone(random_backbone(vocab), vocab, tmp_path)
    torch.save({"model": random_backbone(vocab)}, tmp_path / WEIGHTS_FILE)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_backbone(tmp_path)


def test_vocab_embedding_size_mismatch(tmp_path):
    vocab = _vocab()
    save_backbone(random_backbone(vocab), vocab, tmp_path)
    GeneVocab.from_genes(f"G{i}" for i in range(45)).save(tmp_path / "vocab.json")
    with pytest.raises(CheckpointError, match="does not belong to these weights"):
        load_backbone(tmp_path)


def test_every_key_problem_is_listed(tmp_path):
    vocab = _vocab()
    save_backbone(random_backbone(vocab), vocab, tmp_path)
    state = _weights(tmp_path)
    del state["transformer_encoder.layers.1.norm2.weight"]
    state["transformer_encoder.layers.0.linear1.weight"] = torch.zeros(7, 32)
    state["batch_encoder.embedding.weight"] = torch.zeros(2, 32)
    torch.save(state, tmp_path / WEIGHTS_FILE)
    with pytest.raises(CheckpointError) as info:
        load_backbone(tmp_path)
    message = str(info.value)
    assert "1 missing key(s): transformer_encoder.layers.1.norm2.weight" in message
    assert "1 unexpected key(s): batch_encoder.embedding.weight" in message
    assert "linear1.weight: file (7, 32) vs model (48, 32)" in message


def test_args_that_do_not_fit_the_weights(tmp_path):
    vocab = _vocab()
    save_backbone(random_backbone(vocab), vocab, tmp_path)
    args = json.loads((tmp_path / "args.json").read_text())
    args["nlayers"] = 3
    (tmp_path / "args.json").write_text(json.dumps(args))
    with pytest.raises(CheckpointError, match="missing key"):
        load_backbone(tmp_path)


def test_corrupt_json_files(tmp_path):
    vocab = _vocab()
    save_backbone(random_backbone(vocab), vocab, tmp_path)
    (tmp_path / "vocab.json").write_text('{"G0": 0, "G1"')
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_backbone(tmp_path)
    vocab.save(tmp_path / "vocab.json")
    (tmp_path / "args.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="JSON object"):
        load_backbone(tmp_path)


def test_unsupported_input_style(tmp_path):
    vocab = _vocab()
    save_backbone(random_backbone(vocab), vocab, tmp_path)
    args = json.loads((tmp_path / "args.json").read_text())
    args["input_emb_style"] = "category"
    (tmp_path / "args.json").write_text(json.dumps(args))
    with pytest.raises(CheckpointError, match="supports only 'continuous'"):
        load_backbone(tmp_path)
