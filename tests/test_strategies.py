"""Every strategy: parameter counts, what they leave untouched, what they change, that
they learn a planted signal, and that a saved annotator reproduces its predictions exactly."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from anndata import AnnData
from conftest import random_backbone, tiny_config

from scadapt import annotate
from scadapt.artifacts.annotators import read_annotator
from scadapt.backbone import ScGPTBackbone, load_backbone, save_backbone
from scadapt.data.options import DataOptions
from scadapt.fitting.classifier import fit_classifier
from scadapt.fitting.sources import TokenSource
from scadapt.infra.errors import CheckpointError
from scadapt.jobs.config import TrainJob
from scadapt.jobs.train import train
from scadapt.strategies import NAMES, get_strategy
from scadapt.strategies.families import AdaptedStrategy
from scadapt.strategies.saved import rebuild_annotator
from scadapt.tokenization import GeneTokenizer, GeneVocab

D, H, LAYERS, K = 32, 48, 2, 3  # tiny_config: d_model, d_hid, nlayers; classes
BACKBONE_STRATEGIES = [s for s in NAMES if get_strategy(s).needs_backbone]
INJECTED = ["lora", "dora", "adalora", "adapter", "prefix", "ia3"]


def planted_data(n_per_class: int = 40, n_genes: int = 150, seed: int = 0) -> AnnData:
    """Three classes; each expresses its own 25 marker genes strongly, on sparse background noise."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(["alpha", "beta", "gamma"], n_per_class)
    counts = rng.poisson(0.3, (len(labels), n_genes)).astype(np.float32)
    for c in range(3):
        rows = labels == labels[c * n_per_class]
        counts[np.ix_(rows, np.arange(c * 25, (c + 1) * 25))] += rng.poisson(8.0, (rows.sum(), 25))
    adata = AnnData(sp.csr_matrix(counts))
    adata.var_names = [f"GENE{i}" for i in range(n_genes)]
    adata.obs_names = [f"cell{i}" for i in range(len(labels))]
    adata.obs["cell_type"] = labels
    return adata


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """The planted dataset as an .h5ad and a random tiny backbone over its genes."""
    root = tmp_path_factory.mktemp("planted")
    adata = planted_data()
    adata.write_h5ad(root / "planted.h5ad")
    vocab = GeneVocab.from_genes(adata.var_names)
    torch.manual_seed(0)  # PyTorch's default initialisation: random, but not degenerate
    save_backbone(ScGPTBackbone(tiny_config(vocab), pad_id=vocab.pad_id), vocab, root / "backbone")
    return adata, root / "planted.h5ad", root / "backbone", vocab


def _model(strategy: str, vocab: GeneVocab, **hparams):
    cls = get_strategy(strategy)
    config = cls.config_class.from_params(hparams)
    backbone = random_backbone(vocab)
    backbone.decoder = backbone.mvc_decoder = None  # as loaded for annotation (with_decoders=False)
    return get_strategy(strategy)(config).build_model(backbone, K), config


def _backbone_count(vocab_size: int) -> int:
    linear = lambda i, o: i * o + o  # noqa: E731
    layer = 4 * linear(D, D) + linear(D, H) + linear(H, D) + 2 * 2 * D
    return vocab_size * D + 2 * D + linear(1, D) + linear(D, D) + 2 * D + LAYERS * layer


def _token_batch(planted, n_cells: int) -> dict[str, torch.Tensor]:
    adata, _, _, vocab = planted
    tokenizer = GeneTokenizer(vocab, max_seq_len=64, min_genes=10)
    return tokenizer.batch(tokenizer.tokenize(adata), np.arange(n_cells))


HEAD3 = 2 * (D * D + D + 2 * D) + D * K + K


@pytest.mark.parametrize(
    ("strategy", "hparams", "expected"),
    [
        ("frozen_probe", {}, D * K + K),
        ("head", {}, HEAD3),
        ("full", {}, None),  # the whole backbone + head, counted below
        ("lora", {"r": 4}, LAYERS * 4 * (4 * 2 * D + (D + H) + (H + D)) + HEAD3),
        ("lora", {"r": 4, "targets": "qv"}, LAYERS * 4 * 2 * (2 * D) + HEAD3),
        # DoRA: LoRA's A and B plus one magnitude per output of each target
        ("dora", {"r": 4}, LAYERS * (4 * (4 * 2 * D + (D + H) + (H + D)) + 4 * D + H + D) + HEAD3),
        # AdaLoRA: A [r, in], B [out, r] and the singular values E [r, 1] per target (ranknum is fixed)
        ("adalora", {"init_r": 6, "target_r": 4}, LAYERS * 6 * (4 * (2 * D + 1) + (D + H + 1) + (H + D + 1)) + HEAD3),
        ("adapter", {"ratio": 0.25}, LAYERS * 2 * (2 * D * 8 + 8 + D) + HEAD3),
        ("adapter", {"ratio": 0.25, "layers": 1}, 1 * 2 * (2 * D * 8 + 8 + D) + HEAD3),
        # the top k layers only; more than exist is every layer
        ("lora", {"r": 4, "layers": 1}, 1 * 4 * (4 * 2 * D + (D + H) + (H + D)) + HEAD3),
        ("adalora", {"init_r": 6, "target_r": 4, "layers": 1}, 6 * (4 * (2 * D + 1) + (D + H + 1) + (H + D + 1)) + HEAD3),
        ("prefix", {"n_prefix": 5, "layers": 1}, 1 * 2 * 5 * D + HEAD3),
        ("ia3", {"layers": 5}, LAYERS * (D + D + H) + HEAD3),
        ("prefix", {"n_prefix": 5}, LAYERS * 2 * 5 * D + HEAD3),
        ("ia3", {}, LAYERS * (D + D + H) + HEAD3),
    ],
)
def test_trainable_parameters_match_a_hand_count(strategy, hparams, expected):
    vocab = GeneVocab.from_genes([f"G{i}" for i in range(50)])
    model, _ = _model(strategy, vocab, **hparams)
    if expected is None:
        expected = _backbone_count(len(vocab)) + HEAD3
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected


@pytest.mark.parametrize("strategy", ["lora", "dora", "adalora", "adapter", "ia3"])
def test_injection_starts_from_the_pretrained_function(strategy, planted):
    """LoRA (B = 0), adapters (zero up-projection) and IA3 (ones) do not change the model until trained."""
    _, _, _, vocab = planted
    batch = _token_batch(planted, 8)
    base = random_backbone(vocab).eval()
    adapted, _ = _model(strategy, vocab)
    adapted.eval()
    with torch.no_grad():
        torch.testing.assert_close(adapted.backbone(**batch), base(**batch), rtol=0, atol=1e-6)


@pytest.mark.parametrize("strategy", INJECTED)
def test_nonzero_injected_weights_change_eval_outputs(strategy, planted):
    _, _, _, vocab = planted
    batch = _token_batch(planted, 8)
    base = random_backbone(vocab).eval()
    adapted, _ = _model(strategy, vocab)
    with torch.no_grad():
        for param in adapted.backbone.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.2)
    adapted.eval()
    with torch.no_grad():
        assert (adapted.backbone(**batch) - base(**batch)).abs().max() > 1e-3


def test_merged_and_unmerged_lora_predict_the_same(planted):
    from peft.tuners.lora import LoraLayer

    _, _, _, vocab = planted
    batch = _token_batch(planted, 16)
    model, _ = _model("lora", vocab)
    with torch.no_grad():
        for name, param in model.backbone.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1)
    model.eval()
    with torch.no_grad():
        unmerged = model(**batch)
        layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
        assert len(layers) == LAYERS * 6
        for layer in layers:
            layer.merge()
        merged = model(**batch)
    torch.testing.assert_close(merged, unmerged, rtol=1e-5, atol=1e-5)
    assert (unmerged.argmax(1) == merged.argmax(1)).all()


def _job(path, backbone, strategy, **hparams) -> TrainJob:
    return TrainJob(data=str(path), reading=DataOptions(label_key="cell_type"), strategy=strategy, checkpoint=str(backbone),
                    hparams=hparams, progress=False, umap=False, max_seq_len=64, min_genes=10)


SHORT_TRAINING = {"epochs": 15, "batch_size": 16, "patience": 15}
LEARNING_SETTINGS = {
    "pca_logreg": {"n_components": 10},
    "frozen_probe": {},
    "head": {"epochs": 30, "batch_size": 16},
    "full": SHORT_TRAINING,
    "lora": SHORT_TRAINING,
    "dora": SHORT_TRAINING,
    "adalora": SHORT_TRAINING,
    "logreg": {},
    "mlp": {"epochs": 30, "batch_size": 16},
    "adapter": {**SHORT_TRAINING, "lr": 3e-3},
    "prefix": SHORT_TRAINING,
    "ia3": SHORT_TRAINING,
}


@pytest.mark.parametrize("strategy", NAMES)
def test_strategies_learn_a_planted_signal(strategy, planted):
    """Each strategy's whole fit (``train``: data, tokens, frozen-layer reuse, head, best epoch)
    learns the planted classes on a random backbone, and a strategy trained through the backbone
    learns through its own weights too: put back as they were built, the outputs change.
    (That those weights alone can learn it: test_injected_weights_alone_learn_the_planted_signal.)"""
    adata, path, backbone, _ = planted
    result = train(_job(path, backbone, strategy, **LEARNING_SETTINGS[strategy]))
    assert result.metrics["test_macro_f1"] > 0.8, result.metrics  # chance is 1/3
    cls = get_strategy(strategy)
    if not issubclass(cls, AdaptedStrategy):
        return
    model = result.annotator.model
    own = {name: p for name, p in model.named_parameters() if p.requires_grad and not name.startswith("head.")}
    assert own, "nothing below the head was trained"
    learnt = result.annotator.predict_proba(adata)
    built = dict(cls(result.annotator.config).build_model(load_backbone(backbone, with_decoders=False).model,
                                 K).named_parameters())
    with torch.no_grad():
        for name, param in own.items():
            param.copy_(built[name])
    change = np.abs(result.annotator.predict_proba(adata) - learnt).max()
    assert change > 0.05, change


@pytest.mark.parametrize("strategy", NAMES)
def test_saved_annotator_reproduces_predictions_and_base_stays_untouched(strategy, planted, tmp_path):
    adata, path, backbone, vocab = planted
    before = load_backbone(backbone, with_decoders=False).weights_hash
    hparams = {"epochs": 2} if "epochs" in get_strategy(strategy).config_class.__dataclass_fields__ else {}
    result = train(_job(path, backbone, strategy, **hparams))
    assert load_backbone(backbone, with_decoders=False).weights_hash == before  # never written to
    result.annotator.save(tmp_path / "annotator")
    again = read_annotator(tmp_path / "annotator")
    if get_strategy(strategy).needs_backbone:  # the strategy alone cannot rebuild it without its base checkpoint
        with pytest.raises(CheckpointError, match="pass that checkpoint's folder"):
            rebuild_annotator(tmp_path / "annotator")
    np.testing.assert_array_equal(again.predict_proba(adata), result.annotator.predict_proba(adata))
    # the served path (the request's matrix in the model's gene order, no AnnData) gives the same outputs
    for mine, served in zip(again.outputs(adata), again.matrix_outputs(adata.X, list(adata.var_names)), strict=True):
        np.testing.assert_array_equal(served, mine)
    annotated = annotate(adata, again, copy=True, unknown=None, progress=False)
    assert set(annotated.obs["scadapt_label"].cat.categories) == {"alpha", "beta", "gamma"}
    assert again.novelty is not None  # saved with its novelty scorer, calibrated on the validation cells
    np.testing.assert_allclose(annotated.obsm["X_scadapt"], again.embed(adata), rtol=1e-4, atol=1e-5)
    chunked = annotate(adata, again, copy=True, unknown=None, batch_size=7, progress=False)  # 7 at a time: the same
    assert list(chunked.obs["scadapt_label"]) == list(annotated.obs["scadapt_label"])
    np.testing.assert_allclose(chunked.obsm["X_scadapt"], annotated.obsm["X_scadapt"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("strategy", ["head", "lora", "adapter", "prefix", "ia3"])
def test_frozen_base_weights_stay_bit_identical(strategy, planted):
    adata, _, _, vocab = planted
    model, config = _model(strategy, vocab, epochs=2)
    before = {id(p): p.detach().clone() for p in model.backbone.parameters() if not p.requires_grad}
    assert before
    tokenizer = GeneTokenizer(vocab, max_seq_len=64, min_genes=10)
    cells = tokenizer.tokenize(adata)
    codes = np.repeat([0, 1, 2], 40)
    fit_classifier(TokenSource(model, tokenizer, cells, torch.device("cpu")), codes, np.arange(0, 120, 2),
                   np.arange(1, 120, 2), K, config, torch.device("cpu"), progress=False)
    after = {id(p): p for p in model.backbone.parameters() if not p.requires_grad}
    assert before.keys() == after.keys()
    assert all(torch.equal(before[i], after[i]) for i in before)


@pytest.mark.parametrize(("strategy", "hparams", "expected"),
                         [("lora", {"lora_dropout": 0.1}, 0.0), ("full", {"backbone_dropout": 0.2}, 0.2)])
def test_backbone_dropout_applies_to_the_base_only(strategy, hparams, expected, planted):
    model, _ = _model(strategy, planted[3], **hparams)
    base = [m.p for n, m in model.backbone.named_modules() if isinstance(m, torch.nn.Dropout) and "lora_" not in n]
    assert base and all(p == expected for p in base)
    assert all(layer.self_attn.dropout == expected for layer in model.backbone.transformer_encoder.layers)
    injected = [m.p for n, m in model.backbone.named_modules() if isinstance(m, torch.nn.Dropout) and "lora_" in n]
    assert all(p == 0.1 for p in injected)  # LoRA's own dropout is its own hyperparameter


@pytest.mark.parametrize(
    ("strategy", "hparams", "message"),
    [
        ("head", {"epochs": 0}, "epochs must be >= 1"),
        ("lora", {"lr": -1, "batch_size": 0}, "lr must be > 0.*batch_size must be >= 1"),
        ("lora", {"targets": "everything"}, "targets must be one of qv, attention, attention_ffn"),
        ("adapter", {"layers": "first_half"}, "layers='first_half' is refused \\(expected an integer"),
        ("lora", {"layers": -1}, "layers must be >= 0"),
        ("ia3", {"layers": "top"}, "layers='top' is refused \\(expected an integer"),
        ("pca_logreg", {"n_components": 0}, "n_components must be >= 1"),
        ("frozen_probe", {"C": "strong"}, "C='strong' is refused \\(expected a number"),
        ("full", {"depth": 3}, "Unknown hyperparameter\\(s\\) depth"),
        ("logreg", {"penalty": "l3"}, "penalty must be one of l1, l2"),
        ("mlp", {"width": 0}, "width must be >= 1"),
        ("adalora", {"init_r": 4, "target_r": 8}, "target_r <= init_r is needed"),
        ("dora", {"targets": "mlp"}, "targets must be one of"),
        ("head", {"epochs": 2.5}, "epochs=2.5 is refused \\(expected an integer"),
    ],
)
def test_bad_hyperparameters_are_refused(strategy, hparams, message, planted):
    from scadapt.infra.errors import ScadaptError

    with pytest.raises(ScadaptError, match=message):
        _model(strategy, planted[3], **hparams)


@pytest.mark.parametrize("strategy", NAMES)
def test_search_space_suggestions_make_valid_configs(strategy):
    import optuna

    from scadapt.strategies.hyperparameters import declarations, default_trial, search_space

    config_class = get_strategy(strategy).config_class
    space = search_space(config_class)
    assert space and set(space) <= set(declarations(config_class))  # every searched name is declared
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        suggested = study.ask(space).params
        config = config_class.from_params(suggested)
        assert suggested.keys() == space.keys() and all(getattr(config, k) == v for k, v in suggested.items())
    defaults = config_class().to_params()
    first = default_trial(config_class, defaults)
    assert first and all(first[name] == defaults[name] for name in first)  # the defaults, where the search holds them
    assert not set(search_space(config_class, fixed=first)) & set(first)  # a fixed name is not searched


def test_a_learning_rate_is_searched_around_its_strategy_default():
    from scadapt.strategies.hyperparameters import search_space

    head, full = (search_space(get_strategy(name).config_class)["lr"] for name in ("head", "full"))
    assert (head.low, head.high, head.log) == (pytest.approx(5e-4), pytest.approx(2.5e-2), True)  # default 5e-3
    assert (full.low, full.high) == (1e-5, 3e-4)  # full declares its own range


def _standardized_model(strategy: str, planted, **hparams):
    """A strategy's model on the planted data's random backbone, with the head's input statistics set."""
    from scadapt.backbone import embed_cells

    adata, _, _, vocab = planted
    model, config = _model(strategy, vocab, **hparams)
    tokenizer = GeneTokenizer(vocab, max_seq_len=64, min_genes=10)
    cells = tokenizer.tokenize(adata)
    model.head.set_standardization(torch.as_tensor(embed_cells(model.backbone, tokenizer, cells, progress=False)))
    return model, config, TokenSource(model, tokenizer, cells, torch.device("cpu"))


# Injected weights alone, behind a frozen random linear head: (lr, epochs, extra settings, macro-F1
# to gain over the starting point). Prefixes move the CLS embedding only through attention to
# shared vectors, the weakest route on a random backbone (measured: +0.13; the others +0.36 to +0.72).
ALONE = {"lora": (1e-2, 25, {}, 0.3), "dora": (1e-2, 25, {}, 0.3), "adalora": (1e-2, 25, {}, 0.3),
         "adapter": (1e-2, 40, {}, 0.3), "ia3": (3e-2, 40, {}, 0.3),
         "prefix": (3e-2, 80, {"n_prefix": 4, "head_dropout": 0.0, "warmup_ratio": 0.0}, 0.1)}


@pytest.mark.parametrize("strategy", INJECTED)
def test_injected_weights_alone_learn_the_planted_signal(strategy, planted):
    """The head is frozen at its random initialisation, where it cannot tell the classes apart on
    the frozen backbone: whatever is learnt goes through the strategy's injected weights (with
    them kept out of the optimiser, nothing trains and this fails)."""
    from sklearn.metrics import f1_score

    from scadapt.fitting.classifier import predict_logits

    lr, epochs, extra, gain = ALONE[strategy]
    model, config, source = _standardized_model(strategy, planted, head_layers=1, epochs=epochs, batch_size=16,
                                                patience=epochs, lr=lr, **extra)
    for param in model.head.parameters():
        param.requires_grad_(False)
    codes, train, val = np.repeat([0, 1, 2], 40), np.arange(0, 120, 2), np.arange(1, 120, 2)
    before = f1_score(codes[val], predict_logits(source, val, 64).argmax(1), average="macro")
    injected = {n: p.detach().clone() for n, p in model.backbone.named_parameters() if p.requires_grad}
    assert injected
    result = fit_classifier(source, codes, train, val, K, config, torch.device("cpu"), progress=False,
                            hooks=get_strategy(strategy).hooks(model, config, epochs * 4))
    changed = [n for n, p in model.backbone.named_parameters() if n in injected and not torch.equal(p, injected[n])]
    assert len(changed) == len(injected), sorted(set(injected) - set(changed))[:5]
    assert result.best_val_macro_f1 > before + gain, (before, result.best_val_macro_f1)


def test_adalora_shrinks_its_rank_budget_and_keeps_its_factors_orthogonal(planted):
    model, config, source = _standardized_model("adalora", planted, epochs=15, batch_size=16, patience=15,
                                                init_r=6, target_r=2, delta_t=2)
    values = [p for n, p in model.named_parameters() if "lora_E" in n]
    ranks: list[int] = []
    codes = np.repeat([0, 1, 2], 40)
    hooks = get_strategy("adalora").hooks(model, config, total_steps=4 * 15)
    penalty = hooks.extra_loss()
    assert penalty.item() > 0 and penalty.requires_grad  # A, B start random, not orthogonal
    fit_classifier(source, codes, np.arange(0, 120, 2), np.arange(1, 120, 2), K, config, torch.device("cpu"),
                   progress=False, hooks=hooks, on_epoch=lambda _: ranks.append(sum(int((e != 0).sum()) for e in values)))
    assert ranks[0] > ranks[-1] == 2 * len(values)  # from 6 per target down to the budget of 2 per target
    assert hooks.extra_loss().item() < penalty.item()


@pytest.mark.parametrize("strategy", ["head", "lora"])
def test_evaluation_scores_the_contexts_own_tokens(strategy, planted):
    """Cells longer than max_seq_len keep a gene subset seeded by their index in the dataset: the
    training run scores exactly the tokens it validated on, not a re-tokenized subset."""
    from scadapt.jobs.context import prepare
    from scadapt.jobs.fit import evaluate, fit_strategy

    _, path, backbone, _ = planted
    job = _job(path, backbone, strategy, epochs=1)
    job.max_seq_len = 16  # every planted cell has more genes: each keeps a subset
    ctx = prepare(job)
    outcome = fit_strategy(ctx, ctx.method.with_config(ctx.method.config_class.from_params({"epochs": 1})), progress=False)
    _, embedding, _ = evaluate(ctx, outcome.annotator, "validation")
    expected, _ = outcome.annotator.cell_outputs(ctx.cells, ctx.split.validation)
    np.testing.assert_allclose(embedding, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("strategy", ["full", "lora", "mlp"])
def test_the_validation_report_is_that_of_the_restored_weights(strategy, planted):
    """The validation report reuses the best epoch's validation logits: they are the outputs of the
    weights the fit restored, by the path that serves the model (here through the frozen-layer
    cache for lora), so running the validation cells again would give the same report."""
    from scadapt.jobs.context import prepare
    from scadapt.jobs.fit import evaluate, fit_strategy, validation_report

    _, path, backbone, _ = planted
    ctx = prepare(_job(path, backbone, strategy))
    config = get_strategy(strategy).config_class.from_params({"epochs": 4, "patience": 4, "batch_size": 16})
    outcome = fit_strategy(ctx, ctx.method.with_config(config), progress=False)
    logits = outcome.fit.best_val_logits
    _, proba = ctx.method.outputs(ctx, outcome.annotator, ctx.split.validation)
    np.testing.assert_allclose(torch.softmax(torch.from_numpy(logits), 1).numpy(), proba, rtol=0, atol=1e-5)
    reused, computed = validation_report(ctx, outcome), evaluate(ctx, outcome.annotator, "validation")[0]
    assert reused.prefixed("val") == computed.prefixed("val")
    assert reused.prefixed("val")["val_macro_f1"] == pytest.approx(outcome.fit.best_val_macro_f1)


def test_frozen_embeddings_are_computed_once_for_every_job_on_the_same_data(planted, monkeypatch):
    """A second job on the same data and backbone (another matrix cell, trial or process) reads the
    embeddings the first computed; other tokens per cell are another entry; a damaged entry is rebuilt."""
    from scadapt.backbone.embedding_cache import EmbeddingCache
    from scadapt.jobs import context

    _, path, backbone, _ = planted
    first = context.prepare(_job(path, backbone, "head"))
    computed = first.embeddings(first.split.train, progress=False)

    def no_backbone(*args, **kwargs):
        raise AssertionError("the backbone ran again")

    with monkeypatch.context() as patched:
        patched.setattr(context, "embed_cells", no_backbone)
        second = context.prepare(_job(path, backbone, "frozen_probe"))
        np.testing.assert_array_equal(second.embeddings(first.split.train, progress=False), computed)
        assert second.embedding_sec == 0.0
        shorter = _job(path, backbone, "head")
        shorter.max_seq_len = 16
        with pytest.raises(AssertionError, match="ran again"):
            context.prepare(shorter).embeddings(first.split.train, progress=False)
    entries = list(EmbeddingCache().root.glob("*.npz"))
    assert len(entries) == 1
    entries[0].write_bytes(b"not an archive")
    third = context.prepare(_job(path, backbone, "head"))
    np.testing.assert_allclose(third.embeddings(first.split.train, progress=False), computed, rtol=0, atol=1e-6)
    assert third.embedding_sec > 0  # rebuilt, not trusted


@pytest.mark.parametrize("strategy", INJECTED)
def test_frozen_bottom_layers_run_once_per_cell_with_the_same_results(strategy, planted, monkeypatch):
    """With the top layer adapted, the frozen layer below runs once per cell instead of once per
    epoch (a cell whose tokens change every epoch excepted). When every cell fits in the budget the
    kept outputs serve every later fit, and the test evaluation, too. Training gives the same
    results with the cache off, shared, or kept per fit for only some cells; the test evaluation
    gives the served path's outputs."""
    from scadapt.fitting.frozen_layers import BUDGET_ENV, SharedFrozenLayers
    from scadapt.jobs.context import prepare
    from scadapt.jobs.fit import fit_strategy

    SharedFrozenLayers.clear()
    _, path, backbone, _ = planted
    job = _job(path, backbone, strategy)
    job.max_seq_len = 66  # some planted cells have more genes: they get new tokens every epoch
    ctx = prepare(job)
    train, validation = ctx.split.part("train"), ctx.split.validation
    long = ctx.tokenizer.varies_by_epoch(ctx.cells, train)
    assert 0 < long.sum() < len(long)
    epochs = 3
    pristine = ctx.backbone.transformer_encoder.layers[0]
    rows: list[int] = []
    hook = pristine.register_forward_pre_hook(  # copied with the backbone into each fit
        lambda module, args: rows.append(args[0].shape[0]) if module is not pristine else None)
    results = {}
    try:
        for resample in (True, False):
            config = get_strategy(strategy).config_class.from_params(
                {"epochs": epochs, "patience": epochs, "layers": 1, "batch_size": 16, "resample_genes": resample})
            for budget in ("0", "4096", "0.02"):  # off, every cell kept for every fit, a few cells kept per fit
                monkeypatch.setenv(BUDGET_ENV, budget)
                rows.clear()
                outcome = fit_strategy(ctx, ctx.method.with_config(config), progress=False)
                trained = sum(rows)
                rows.clear()
                tested = ctx.method.outputs(ctx, outcome.annotator, ctx.split.test)
                results[resample, budget] = (trained, sum(rows), [r["train_loss"] for r in outcome.fit.history],
                                             outcome.annotator.cell_outputs(ctx.cells, ctx.split.validation)[1],
                                             tested, outcome.annotator.cell_outputs(ctx.cells, ctx.split.test))
    finally:
        hook.remove()
    seen = len(train) + len(validation)
    # the cache off: every training and validation cell in every epoch, and the longest training
    # cell once more when the memory plan measures what a step saves
    assert results[True, "0"][0] == results[False, "0"][0] == epochs * seen + 1
    # kept for every fit: the first fit runs every cell once (in fixed batches of the whole data),
    # then only the training cells that get new tokens; the next fit and the test cells run nothing
    assert results[True, "4096"][:2] == (ctx.cells.n_cells + (epochs - 1) * long.sum(), 0)
    assert results[False, "4096"][:2] == (0, 0)
    # kept per fit, for a few cells only: fewer than off, more than once per cell
    for resample in (True, False):
        assert epochs * seen > results[resample, "0.02"][0] > seen
        off = results[resample, "0"]
        for budget in ("4096", "0.02"):
            np.testing.assert_allclose(results[resample, budget][2], off[2], rtol=1e-4)
            np.testing.assert_allclose(results[resample, budget][3], off[3], rtol=0, atol=1e-4)
            for computed, served in zip(results[resample, budget][4], results[resample, budget][5], strict=True):
                np.testing.assert_allclose(computed, served, rtol=0, atol=1e-5)  # embeddings, probabilities


def test_kept_frozen_outputs_do_not_depend_on_which_cells_are_asked_first(planted):
    """A cell's kept output is computed in a fixed batch of the whole data, so the same bits come
    out whether a fit asks for it with the training cells or the validation cells first."""
    from scadapt.fitting.frozen_layers import SharedFrozenLayers, budget_bytes, frozen_depth
    from scadapt.jobs.context import prepare

    _, path, backbone, _ = planted
    ctx = prepare(_job(path, backbone, "lora"))
    model = get_strategy("lora")(get_strategy("lora").config_class(layers=1)).build_model(ctx.fresh_backbone(), 3)
    depth = frozen_depth(model.backbone)
    assert depth > 0
    kept = []
    for first, then in ((ctx.split.train, ctx.split.validation), (ctx.split.validation[::-1], ctx.split.train[::3])):
        SharedFrozenLayers.clear()
        store = SharedFrozenLayers.find(model.backbone, ctx.tokenizer, ctx.cells, depth, ctx.device, budget_bytes(),
                                        ctx.weights_hash)
        for part in (first, then, np.arange(ctx.cells.n_cells)):
            store.hidden(part, ctx.tokenizer.batch(ctx.cells, part), 0)
        kept.append(store.flat.clone())
    assert torch.equal(*kept)
    # too big for the budget: each fit keeps what it can of its own cells instead
    assert SharedFrozenLayers.find(model.backbone, ctx.tokenizer, ctx.cells, depth, ctx.device, 1,
                                   ctx.weights_hash) is None


def test_annotators_saved_before_top_layer_adaptation_load_as_they_were_trained():
    """Recorded settings without ``layers`` adapted every layer; adapters once said "all" or
    "first_half" (no longer built: a message says to retrain)."""
    from scadapt.infra.errors import ScadaptError

    assert get_strategy("lora").config_class.from_saved({"r": 4}).layers == 0
    assert get_strategy("lora").config_class.from_params({"r": 4}).layers == 2  # today's default
    assert get_strategy("lora").config_class.from_saved({"layers": 1}).layers == 1
    assert get_strategy("adapter").config_class.from_saved({"layers": "all"}).layers == 0
    with pytest.raises(ScadaptError, match="no longer builds.*Retrain it"):
        get_strategy("adapter").config_class.from_saved({"layers": "first_half"})
    assert get_strategy("full").config_class.from_saved({"lr": 1e-4}).lr == 1e-4


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("SCADAPT_PRECISION", "fp8", "SCADAPT_PRECISION='fp8' is not one of auto, fp32, bf16"),
    ("SCADAPT_FROZEN_CACHE_MB", "lots", "SCADAPT_FROZEN_CACHE_MB='lots' is not a number of megabytes"),
    ("SCADAPT_FROZEN_CACHE_MB", "-5", "is not a number of megabytes \\(>= 0; 0 turns the cache off\\)"),
])
def test_bad_precision_and_cache_settings_are_refused(variable, value, message, monkeypatch):
    from scadapt.fitting.frozen_layers import budget_bytes
    from scadapt.infra.devices import autocast
    from scadapt.infra.errors import ScadaptError

    monkeypatch.setenv(variable, value)
    with pytest.raises(ScadaptError, match=message):
        autocast(torch.device("cpu")) if variable == "SCADAPT_PRECISION" else budget_bytes()


def test_bf16_precision_autocasts_on_the_cpu(planted, monkeypatch):
    """``SCADAPT_PRECISION=bf16`` runs the backbone's matrix products in bfloat16 on the CPU; the
    default keeps float32 there."""
    from scadapt.infra.devices import autocast, compute_dtype

    batch = _token_batch(planted, 4)
    model = random_backbone(planted[3]).eval()
    cpu = torch.device("cpu")
    assert compute_dtype(cpu) == torch.float32
    with torch.no_grad(), autocast(cpu):
        exact = model(**batch)
    monkeypatch.setenv("SCADAPT_PRECISION", "bf16")
    assert compute_dtype(cpu) == torch.bfloat16
    with torch.no_grad(), autocast(cpu):
        low = model(**batch)
    assert exact.dtype == torch.float32 and not torch.equal(low.float(), exact)
    torch.testing.assert_close(low.float(), exact, rtol=0, atol=0.1)


def test_adalora_fits_in_a_single_step(planted):
    """One epoch of one batch: the rank schedule's final step comes before any importance score;
    the ranks stay as initialised instead of peft failing on the missing scores."""
    from scadapt.jobs.context import prepare
    from scadapt.jobs.fit import fit_strategy

    _, path, backbone, _ = planted
    ctx = prepare(_job(path, backbone, "adalora"))
    config = get_strategy("adalora").config_class.from_params({"epochs": 1, "batch_size": 512})
    outcome = fit_strategy(ctx, ctx.method.with_config(config), progress=False)
    assert len(outcome.fit.history) == 1 and np.isfinite(outcome.fit.history[0]["train_loss"])


def test_more_layers_than_the_backbone_has_adapt_every_layer_and_log_the_depth_used(planted):
    import mlflow

    from scadapt.backbone import load_backbone
    from scadapt.jobs.train import train

    _, path, backbone, _ = planted
    depth = load_backbone(backbone).config.nlayers
    result = train(_job(path, backbone, "lora", epochs=1, layers=99))
    params = mlflow.get_run(result.run_id).data.params
    assert params["layers"] == "99" and params["used.layers"] == str(depth)
    within = train(_job(path, backbone, "lora", epochs=1, layers=1))
    assert "used.layers" not in mlflow.get_run(within.run_id).data.params


def test_the_mlp_reads_log_normalised_genes_as_they_are_and_older_mlps_load_as_trained(planted, tmp_path):
    """Across technologies a z-scored faint gene of the training cells moves predictions, and the
    mlp was measured better without z-scoring and without LayerNorm (benchmarks/baselines.py): by
    default its inputs pass unchanged and its hidden blocks have no LayerNorm. An mlp saved before
    those options existed was z-scored with LayerNorm, and loads so."""

    from scadapt.strategies.mlp import MLPConfig

    adata, path, backbone, _ = planted
    result = train(_job(path, backbone, "mlp", epochs=2))
    network = result.annotator.network
    x = torch.rand(4, network.input_mean.numel()) * 5
    assert torch.equal(network.features(x), network.hidden(x))  # no standardisation, no clip
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in network.modules())

    assert MLPConfig.from_saved({}).standardize and MLPConfig.from_saved({}).layer_norm
    # the network an older mlp saved: LayerNorm, standardised inputs, no "layer_norm" in its shape
    annotator = result.annotator
    old = type(annotator).make_network(len(annotator.genes), len(annotator.classes), 3, 8, input_clip=10.0)
    old.set_standardization(torch.rand(6, len(annotator.genes)))
    saved = type(annotator)("mlp", MLPConfig(layer_norm=True, standardize=True), annotator.classes, annotator.genes,
                            old, {"n_layers": 3, "width": 8, "input_clip": 10.0})
    saved.save(tmp_path / "old")
    again = read_annotator(tmp_path / "old")
    assert any(isinstance(m, torch.nn.LayerNorm) for m in again.network.modules())
    np.testing.assert_allclose(again.predict_proba(adata), saved.predict_proba(adata), rtol=0, atol=1e-6)
