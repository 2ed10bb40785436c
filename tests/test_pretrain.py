"""Masked-value pretraining: it learns, it is tracked, it writes a loadable checkpoint, it resumes."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
import torch

from scadapt.backbone import load_backbone
from scadapt.infra.errors import ScadaptError
from scadapt.jobs import pretrain as pretrain_module
from scadapt.jobs.pretrain import PretrainConfig, mask_values, pretrain

TINY = dict(data=("pancreas_small",), d_model=32, nlayers=2, nhead=4, d_hid=48, max_seq_len=128,
            batch_size=32, lr=3e-3, warmup_steps=5, min_genes=50)


def test_mask_values_never_masks_cls_or_padding():
    values = torch.arange(1, 41, dtype=torch.float32).reshape(4, 10)
    padding = torch.zeros(4, 10, dtype=torch.bool)
    padding[1, 6:] = True
    masked, mask = mask_values(values, padding, 0.5, -1.0, torch.Generator().manual_seed(0))
    assert not mask[:, 0].any() and not mask[padding].any()
    assert (masked[mask] == -1).all() and torch.equal(masked[~mask], values[~mask])
    assert 0.3 < mask[~padding].float().mean() < 0.7


def test_pretraining_learns_and_writes_a_tracked_checkpoint(tmp_path):
    result = pretrain(PretrainConfig(**TINY, epochs=4, output_dir=str(tmp_path / "out")))
    assert result.epoch_losses[-1] < 0.5 * result.epoch_losses[0]
    loaded = load_backbone(result.checkpoint_dir, with_decoders=True)
    assert loaded.weights_hash == result.weights_hash
    assert not (result.checkpoint_dir / pretrain_module.STATE_FILE).exists()

    run = mlflow.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["d_model"] == "32" and run.data.params["data"] == "pancreas_small"
    assert run.data.params["gene_overlap.pancreas_small"] == "2000/2000"
    assert run.data.metrics["total_parameters"] == sum(p.numel() for p in loaded.model.parameters())
    assert run.data.metrics["runtime_sec"] > 0
    assert run.data.tags["weights_hash"] == result.weights_hash
    metrics = run.data.metrics
    assert metrics["val_loss"] == pytest.approx(metrics["val_loss_expr"] + metrics["val_loss_mvc"])
    assert 0 < metrics["val_loss_gene_mean_baseline"] < 400  # bins 1..50: a constant guess scores ~200
    history = mlflow.MlflowClient().get_metric_history(result.run_id, "val_loss")
    assert [m.step for m in history] == [1, 2, 3, 4]
    artifacts = {f.path for f in mlflow.MlflowClient().list_artifacts(result.run_id, "backbone")}
    assert artifacts == {"backbone/args.json", "backbone/vocab.json", "backbone/best_model.pt"}
    assert mlflow.MlflowClient().list_artifacts(result.run_id, "figures")[0].path == "figures/loss_curve.png"


def test_pretraining_is_deterministic(tmp_path):
    a = pretrain(PretrainConfig(**TINY, epochs=1, output_dir=str(tmp_path / "a")))
    b = pretrain(PretrainConfig(**TINY, epochs=1, output_dir=str(tmp_path / "b")))
    assert a.weights_hash == b.weights_hash


def test_continued_pretraining_starts_from_the_checkpoint(tmp_path, tiny_checkpoint):
    before = load_backbone(tiny_checkpoint)
    result = pretrain(PretrainConfig(data=("pancreas_small",), checkpoint=str(tiny_checkpoint), epochs=1,
                                     batch_size=32, min_genes=50, output_dir=str(tmp_path / "cont")))
    after = load_backbone(result.checkpoint_dir)
    assert after.config == before.config and after.vocab.to_dict() == before.vocab.to_dict()
    assert after.weights_hash != before.weights_hash
    assert mlflow.get_run(result.run_id).data.params["init_weights_hash"] == before.weights_hash


def test_interrupted_pretraining_resumes(tmp_path, monkeypatch):
    config = PretrainConfig(**TINY, epochs=2, output_dir=str(tmp_path / "out"))
    uninterrupted = pretrain(PretrainConfig(**TINY, epochs=2, output_dir=str(tmp_path / "ref")))

    real_evaluate = pretrain_module._evaluate
    calls = []

    def interrupt_in_epoch_two(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(pretrain_module, "_evaluate", interrupt_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        pretrain(config)
    assert (tmp_path / "out" / pretrain_module.STATE_FILE).is_file()
    failed = mlflow.search_runs(experiment_names=["scadapt-pretrain"], filter_string="attributes.status = 'KILLED'")
    assert len(failed) == 1  # the interrupted run is closed, not left RUNNING

    monkeypatch.setattr(pretrain_module, "_evaluate", real_evaluate)
    resumed = pretrain(config)
    assert mlflow.get_run(resumed.run_id).data.params["resumed_from_epoch"] == "1"
    assert resumed.weights_hash == uninterrupted.weights_hash
    assert np.allclose(resumed.epoch_losses, uninterrupted.epoch_losses)


def test_bad_settings_are_refused():
    with pytest.raises(ScadaptError, match="mask_ratios"):
        PretrainConfig(mask_ratios=(0.5, 1.5))
    with pytest.raises(ScadaptError, match="at least one dataset"):
        PretrainConfig(data=())


def test_a_log_that_is_not_a_terminal_gets_one_line_per_epoch_not_one_per_step(tmp_path, capsys, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="scadapt"):
        pretrain(PretrainConfig(**TINY, epochs=2, output_dir=str(tmp_path / "out")))
    assert "pretrain epoch" not in capsys.readouterr().err  # the step bar drew a line per step into a log file
    assert [m for m in caplog.messages if m.startswith("epoch ")] == [m for m in caplog.messages
                                                                     if m.startswith(("epoch 1/2", "epoch 2/2"))]
    assert len([m for m in caplog.messages if m.startswith("epoch ")]) == 2
