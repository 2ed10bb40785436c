"""Training within a memory budget: micro-batches whose accumulated gradients are the whole
batch's, activation checkpointing with the same outputs and gradients, a plan that keeps to the
budget or says what would fit, and out-of-memory retried with smaller micro-batches."""

from __future__ import annotations

import logging

import mlflow
import numpy as np
import pytest
import torch
from test_strategies import _job, planted  # noqa: F401  (the planted dataset and its tiny backbone)

from scadapt.fitting.classifier import accumulate_gradients
from scadapt.fitting.memory import MemoryBudget, StepPlan, saved_activation_bytes
from scadapt.fitting.optim import Updater
from scadapt.fitting.sources import TokenSource
from scadapt.infra.errors import ScadaptError
from scadapt.jobs.context import prepare
from scadapt.strategies import get_strategy


def _source(planted, strategy: str, **hparams):  # noqa: F811
    _, path, backbone, _ = planted
    ctx = prepare(_job(path, backbone, strategy))
    cls = get_strategy(strategy)
    config = cls.config_class.from_params({"seed": 0, **hparams})
    torch.manual_seed(0)
    model = cls(config).build_model(ctx.fresh_backbone(), len(ctx.classes))
    for param in model.parameters():  # non-zero LoRA B etc., so every trainable weight gets a gradient
        if param.requires_grad:
            torch.nn.init.normal_(param, 0.0, 0.1)
    return ctx, model, TokenSource(model, ctx.tokenizer, ctx.cells, ctx.device)


def _gradients(ctx, model, source, batch: np.ndarray, weighted: bool) -> dict[str, torch.Tensor]:
    params = [p for p in model.parameters() if p.requires_grad]
    updater = Updater(params, 1e-3, 0.0, 1, 10, ctx.device)
    targets = torch.as_tensor(ctx.codes)
    # unequal weights (the planted classes are balanced, so class_weights would give 1 to each)
    weight = torch.linspace(0.5, 3.0, len(ctx.classes)) if weighted else None
    value = accumulate_gradients(source, updater, batch, 0, targets, weight, None)
    assert np.isfinite(value)
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("strategy", ["full", "lora"])
def test_accumulated_micro_batch_gradients_equal_the_whole_batch_gradients(planted, strategy):  # noqa: F811
    """One optimisation batch of cells of different lengths and classes, run whole and in
    micro-batches of a few cells: the same loss gradient for every trainable weight, with a
    class-weighted loss too (whose mean divides by the batch's summed weights, not its size)."""
    ctx, model, source = _source(planted, strategy)
    model.eval()  # no dropout: the two runs draw no random numbers
    train_codes = ctx.codes[ctx.split.train]
    batch = np.concatenate([ctx.split.train[train_codes == c][:8] for c in range(len(ctx.classes))])
    assert len(np.unique(ctx.codes[batch])) == len(ctx.classes) == 3
    lengths = ctx.tokenizer.token_lengths(ctx.cells, batch)
    assert len(set(lengths.tolist())) > 1  # padding differs between micro-batches
    for weighted in (False, True):
        source.plan = StepPlan()
        whole = _gradients(ctx, model, source, batch, weighted)
        source.plan = StepPlan(max_tokens=int(lengths.max()) * 5)
        parts = source.micro_batches(batch)
        assert len(parts) >= 5 and sorted(np.concatenate(parts).tolist()) == sorted(batch.tolist())
        split = _gradients(ctx, model, source, batch, weighted)
        assert whole.keys() == split.keys() and len(whole) > 0
        for name in whole:
            assert whole[name].abs().max() > 0, name
            torch.testing.assert_close(split[name], whole[name], atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("strategy", ["full", "adapter"])
def test_activation_checkpointing_gives_the_same_outputs_and_gradients(planted, strategy):  # noqa: F811
    """Checkpointed layers recompute their activations in the backward pass, dropout included."""
    ctx, model, source = _source(planted, strategy, backbone_dropout=0.2)
    model.train()
    batch = ctx.split.train[:12]
    runs = []
    for checkpointing in (False, True):
        model.backbone.checkpointing = checkpointing
        model.zero_grad(set_to_none=True)
        torch.manual_seed(3)
        logits = source.logits(batch, 0)
        logits.square().sum().backward()
        runs.append((logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}))
    model.backbone.checkpointing = False
    torch.testing.assert_close(runs[1][0], runs[0][0], atol=1e-6, rtol=1e-5)
    for name, grad in runs[0][1].items():
        torch.testing.assert_close(runs[1][1][name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_saved_activations_are_counted_per_token_and_checkpointing_saves_most(planted):  # noqa: F811
    ctx, model, source = _source(planted, "full")
    model.train()
    lengths = ctx.tokenizer.token_lengths(ctx.cells, ctx.split.train)
    longest = ctx.split.train[np.argsort(-lengths)[:4]]
    one = saved_activation_bytes(lambda: source.logits(longest[:1], 0), model, ctx.device)
    four = saved_activation_bytes(lambda: source.logits(longest, 0), model, ctx.device)
    assert one > 0 and 3.0 < four / one < 4.5  # per token, not per batch (the longest sets the padding)
    model.backbone.checkpointing = True
    checkpointed = saved_activation_bytes(lambda: source.logits(longest[:1], 0), model, ctx.device)
    model.backbone.checkpointing = False
    assert checkpointed < one / 2


def _plan(source, ctx, budget: str, checkpointing: str = "auto", batch_size: int = 32) -> StepPlan:
    source.budget = MemoryBudget.resolve(budget, ctx.device)
    source.checkpointing = checkpointing
    return source.plan_steps(ctx.split.train, batch_size)


def test_the_plan_cuts_batches_to_the_budget_and_checkpoints_only_when_it_must(planted):  # noqa: F811
    ctx, model, source = _source(planted, "full")
    longest = int(ctx.tokenizer.token_lengths(ctx.cells, ctx.split.train).max())
    whole = _plan(source, ctx, "1GB")
    assert whole.max_tokens is None and not whole.checkpointing  # everything fits: whole batches
    half = f"{whole.estimate_bytes / 2 / 2**20:.3f}MB"
    roomy = _plan(source, ctx, half)
    assert roomy.max_tokens is not None and longest <= roomy.max_tokens < 32 * longest and not roomy.checkpointing
    assert roomy.estimate_bytes <= roomy.budget.bytes
    forced = _plan(source, ctx, half, checkpointing="on")
    assert forced.checkpointing and (forced.max_tokens is None or forced.max_tokens > roomy.max_tokens)
    # a budget that one cell does not fit without checkpointing turns it on (auto) ...
    fixed = sum(p.numel() for p in model.parameters() if p.requires_grad) * 12
    low, high = fixed, roomy.budget.bytes  # the smallest budget without checkpointing, by bisection
    while high - low > 64:
        middle = (low + high) // 2
        try:
            _plan(source, ctx, f"{middle}B", checkpointing="off")
            high = middle
        except ScadaptError:
            low = middle
    plan = _plan(source, ctx, f"{low}B")
    assert plan.checkpointing and plan.max_tokens is not None
    assert model.backbone.checkpointing  # until the fit ends
    source.finish()
    assert not model.backbone.checkpointing
    # ... and "off" then refuses, saying what would fit
    with pytest.raises(ScadaptError, match=r"cannot hold one training cell of \d+ tokens without activation "
                                           r"checkpointing.*Raise --memory-budget to at least"):
        _plan(source, ctx, f"{low}B", checkpointing="off")
    with pytest.raises(ScadaptError, match=r"with activation checkpointing.*Raise --memory-budget to at least "
                                           r"[\d.]+MB, or lower --max-seq-len to \d+ tokens"):
        _plan(source, ctx, f"{fixed / 2**20 + 0.02:.4f}MB")


def test_out_of_memory_halves_the_micro_batches_and_retries_the_step(planted, monkeypatch, caplog):  # noqa: F811
    ctx, model, source = _source(planted, "lora")
    model.eval()
    batch = ctx.split.train[:16]
    whole = _gradients(ctx, model, source, batch, False)
    real = source.logits
    sizes = []

    def short_of_memory(cells, epoch):
        sizes.append(len(cells))
        if len(cells) > 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(cells, epoch)

    monkeypatch.setattr(source, "logits", short_of_memory)
    with caplog.at_level(logging.WARNING):
        retried = _gradients(ctx, model, source, batch, False)
    assert sizes[0] == 16 and max(sizes[-4:]) <= 3
    assert "Out of memory" in caplog.text and "micro-batches are halved" in caplog.text
    for name in whole:
        torch.testing.assert_close(retried[name], whole[name], atol=1e-5, rtol=1e-4, msg=name)

    def never_enough(cells, epoch):
        raise torch.OutOfMemoryError("CUDA out of memory.")

    monkeypatch.setattr(source, "logits", never_enough)
    with pytest.raises(ScadaptError, match="Out of memory on cpu with one training cell of"):
        _gradients(ctx, model, source, batch, False)


def test_a_fit_within_a_small_budget_logs_its_plan_and_an_unmeetable_one_fails_the_run(planted):  # noqa: F811
    from scadapt.jobs.train import train

    _, path, backbone, _ = planted
    job = _job(path, backbone, "full", epochs=1, batch_size=32)
    job.memory_budget = "6MB"
    result = train(job)
    metrics = mlflow.get_run(result.run_id).data.metrics
    assert metrics["memory_budget_mb"] == 6 and 0 < metrics["micro_batch_tokens"] and metrics["planned_memory_mb"] <= 6
    job.memory_budget = "100KB"
    with pytest.raises(ScadaptError, match="cannot hold one training cell"):
        train(job)
    failed = mlflow.search_runs(search_all_experiments=True, filter_string="attributes.status = 'FAILED'",
                                output_format="list")
    assert len(failed) == 1 and failed[0].data.tags.get("mlflow.runName", "").startswith("full")


def test_memory_budgets_are_read_as_sizes_and_shared_by_local_workers(monkeypatch):
    from scadapt.fitting.memory import SHARE_ENV
    from scadapt.infra.parsers import parse_memory_size
    from scadapt.jobs.config import TrainJob

    assert parse_memory_size("auto") is None and parse_memory_size("8") == 8 * 2**30
    assert parse_memory_size("512MB") == parse_memory_size("0.5 gb") == 2**29
    cpu = torch.device("cpu")
    assert MemoryBudget.resolve("auto", cpu).bytes == 8 * 2**30
    monkeypatch.setenv(SHARE_ENV, "4")
    shared = MemoryBudget.resolve("6GB", cpu)
    assert shared.bytes == 1.5 * 2**30 and "shared by 4 local workers" in shared.describe()
    for bad in ("lots", "-1GB", "4 PB", "0"):
        with pytest.raises(ScadaptError, match="memory_budget: a memory budget is 'auto' or a size such as 4GB"):
            TrainJob(memory_budget=bad)
    with pytest.raises(ScadaptError, match="activation_checkpointing must be one of auto, on, off"):
        TrainJob(activation_checkpointing="sometimes")


def test_the_advised_memory_budget_is_enough_when_followed_once(planted):  # noqa: F811
    """The frozen-layer outputs kept for a fit take a share of the budget; the advice counts the
    budget they give up, so raising the budget to what it says makes the fit run."""
    import re

    from scadapt.jobs.train import train

    _, path, backbone, _ = planted
    job = _job(path, backbone, "lora", epochs=1, batch_size=32, layers=1)  # the bottom layer frozen, its outputs kept
    job.memory_budget = "100KB"
    with pytest.raises(ScadaptError, match="Raise --memory-budget to at least") as refused:
        train(job)
    job.memory_budget = re.search(r"at least ([\d.]+[KMG]?B)", str(refused.value)).group(1)
    result = train(job)
    metrics = mlflow.get_run(result.run_id).data.metrics
    assert metrics["planned_memory_mb"] <= metrics["memory_budget_mb"]
