"""The ``scadapt`` console command. Each subcommand parses arguments and calls library code.

Errors caused by input (:class:`~scadapt.errors.ScadaptError`) are printed as one readable
message with exit status 2, never as a stack trace.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from scadapt.errors import ScadaptError
from scadapt.interrupts import interrupts_at_safe_points
from scadapt.notices import one_job
from scadapt.options import (
    PRUNERS,
    STRATEGY_NAMES,
    TUNING_MODES,
    DataOptions,
    MemoryOptions,
    SplitOptions,
    add_options,
    boolean,
    dashed_option_names,
    from_args,
    integer,
    names,
    number,
    number_list,
    optional_text,
    strategy_names,
)
from scadapt.redaction import redact, redact_logs

DATA_HELP = "a catalogued dataset (`scadapt datasets` lists them) or the path of your own .h5ad"
PRETRAIN_DATA_HELP = ("pretrain the demo backbone on these unlabelled cells (comma-separated .h5ad paths or catalogued "
                      "names, read with --layer and --gene-column) instead of the bundled data, so its vocabulary "
                      "covers your genes")


def echo(*parts: object, file=None) -> None:
    """``print``, with any credential in the text masked (a URI the user gave may hold a password)."""
    print(redact(" ".join(str(part) for part in parts)), file=file)


def flag(p: argparse.ArgumentParser, name: str, help: str) -> None:
    """A yes/no option: ``--name`` alone or ``--name true|false`` (as ``mlflow run`` passes it)."""
    p.add_argument(f"--{name}", type=boolean, nargs="?", const=True, default=False, metavar="true|false", help=help)


def _hparams(text: str) -> dict[str, str]:
    """``name=value,name=value`` -> dict (values are converted by the strategy's config)."""
    pairs = {}
    for entry in filter(None, (e.strip() for e in text.split(","))):
        name, sep, value = entry.partition("=")
        if not sep or not name.strip():
            raise argparse.ArgumentTypeError(f"hyperparameters are written name=value,name=value (got {entry!r})")
        pairs[name.strip()] = value.strip()
    return pairs


def add_data_arguments(p: argparse.ArgumentParser, default_data: str = "pancreas_small", with_folds: bool = True,
                       with_split: bool = True) -> None:
    """``--data`` and the data options (:class:`~scadapt.options.DataOptions`), and with
    ``with_split`` the regime and its split settings."""
    p.add_argument("--data", default=default_data, help=f"{DATA_HELP} (default: %(default)s)")
    add_options(p, DataOptions)
    if with_split:
        add_options(p, SplitOptions)
        if with_folds:
            p.add_argument("--folds", type=optional_text, default=None, help="comma-separated fold numbers (default: all)")


def load_data_and_splits(args: argparse.Namespace):
    """The dataset and the splits that ``add_data_arguments`` describe."""
    from scadapt.data import load_and_split

    try:
        folds = [int(f) for f in args.folds.split(",")] if args.folds else None
    except ValueError:
        raise ScadaptError(f"--folds must be comma-separated fold numbers, got {args.folds!r}.") from None
    return load_and_split(args.data, from_args(DataOptions, args), from_args(SplitOptions, args), folds)


def _add_datasets(subparsers) -> None:
    p = subparsers.add_parser("datasets", help="list the catalogued datasets (and fetch one)")
    p.add_argument("--fetch", default=None, help="download a catalogued dataset into the cache now")
    p.set_defaults(handler=_run_datasets)


def _run_datasets(args: argparse.Namespace) -> None:
    from scadapt.data import CATALOG
    from scadapt.data.sources import RemoteFile

    if args.fetch:
        if args.fetch not in CATALOG:
            raise ScadaptError(f"{args.fetch!r} is not catalogued; choose one of {', '.join(CATALOG)}.")
        source = CATALOG[args.fetch].source
        if isinstance(source, RemoteFile):
            echo(f"{args.fetch}: {source.fetch()}")
        else:
            echo(f"{args.fetch} needs no download ({source.describe()}).")
        return
    for spec in CATALOG.values():
        where = spec.source.describe()
        if isinstance(spec.source, RemoteFile):
            path = spec.source.cached_path()
            where = f"cached at {path}" if path.is_file() else f"not downloaded yet (scadapt datasets --fetch {spec.name})"
        groups = "; ".join(f"{g}: {','.join(m)}" for g, m in (spec.study_groups or {}).items())
        echo(f"{spec.name}\n  {spec.description}\n  labels: obs[{spec.label_key!r}]"
              + (f", batches: obs[{spec.batch_key!r}]" if spec.batch_key else "")
              + (f", matrix: {spec.layer}" if spec.layer else "")
              + (f"\n  cross-study groups: {groups}" if groups else "")
              + f"\n  source: {where}")


def _add_splits(subparsers) -> None:
    p = subparsers.add_parser("splits", help="make the train/validation/test splits of a regime and save them")
    add_data_arguments(p)
    p.add_argument("--output", default="splits", help="folder for splits.csv and splits.json (default: %(default)s)")
    p.set_defaults(handler=_run_splits)


def _run_splits(args: argparse.Namespace) -> None:
    from scadapt.data import save_splits

    adata, splits = load_data_and_splits(args)
    settings = {k: v for k, v in vars(args).items() if k not in ("handler", "command", "output")}
    paths = save_splits(splits, adata, args.output, **settings)
    for split in splits:
        echo(split.describe())
        for note in split.notes:
            echo(f"  note: {note}")
    echo(f"Saved {len(splits)} splits to {paths[0].parent}")


def _add_job_arguments(p: argparse.ArgumentParser, what: str) -> None:
    """The arguments ``train`` and ``tune`` share: data, split, strategy, backbone, device."""
    from scadapt.training.config import DEVICE_HELP, TrainJob

    d = TrainJob()
    add_data_arguments(p, with_folds=False)
    p.add_argument("--split", type=optional_text, default=None,
                   help="split name, e.g. full_fold0 or low_5pct_fold0 (default: the regime's first)")
    p.add_argument("--strategy", choices=STRATEGY_NAMES, default=d.strategy)
    p.add_argument("--hparams", type=_hparams, default={}, help=f"{what} as name=value,name=value (e.g. lr=0.001,epochs=5)")
    p.add_argument("--checkpoint", type=optional_text, default=None,
                   help="scGPT model folder (default: the demo backbone from `scadapt pretrain`)")
    p.add_argument("--max-seq-len", type=integer, default=0, help="tokens per cell (default 0: the checkpoint's)")
    p.add_argument("--min-genes", type=integer, default=d.min_genes,
                   help="refuse data with fewer genes in the vocabulary (default: %(default)s)")
    p.add_argument("--device", default=d.device, help=DEVICE_HELP)
    add_options(p, MemoryOptions)
    p.add_argument("--experiment", type=optional_text, default=None, help="MLflow experiment (default: scadapt-<dataset>)")
    flag(p, "no-umap", "skip the UMAP figure of the test embeddings")


def _job_fields(args: argparse.Namespace) -> dict:
    return dict(
        data=args.data, **vars(from_args(DataOptions, args)), **vars(from_args(SplitOptions, args)), split=args.split,
        strategy=args.strategy, hparams=args.hparams, checkpoint=args.checkpoint,
        max_seq_len=args.max_seq_len or None, min_genes=args.min_genes, device=args.device,
        **vars(from_args(MemoryOptions, args)), experiment=args.experiment, umap=not args.no_umap,
    )


def _add_train(subparsers) -> None:
    p = subparsers.add_parser("train", help="train one strategy on one split as one MLflow run")
    _add_job_arguments(p, "strategy hyperparameters")
    p.add_argument("--output-dir", type=optional_text, default=None, help="also save the trained annotator here")
    p.set_defaults(handler=_run_train)


def _run_train(args: argparse.Namespace) -> None:
    from scadapt.training.config import TrainJob
    from scadapt.training.train import train

    job = TrainJob(**_job_fields(args), output_dir=args.output_dir)
    result = train(job)
    m = result.metrics
    echo(f"{job.strategy}: validation macro-F1 {m['val_macro_f1']:.3f}, test macro-F1 {m['test_macro_f1']:.3f}, "
          f"{int(m['trainable_parameters']):,} trainable parameters, {m['runtime_sec']:.1f} s (MLflow run {result.run_id})")


def _add_tune(subparsers) -> None:
    from scadapt.training.config import TuneJob

    d = TuneJob()
    p = subparsers.add_parser("tune", help="an Optuna study of one strategy on one split (MLflow parent + child runs)")
    _add_job_arguments(p, "fixed strategy hyperparameters, not searched")
    p.add_argument("--n-trials", type=integer, default=d.n_trials,
                   help="finished trials the study should reach; a second worker or a rerun continues it")
    p.add_argument("--timeout", type=number, default=0, help="seconds after which this worker starts no new trial (0: none)")
    p.add_argument("--storage", type=optional_text, default=None,
                   help="sqlite:///optuna.db (default), journal:PATH for several workers on one host, or a database URL")
    p.add_argument("--study-name", type=optional_text, default=None, help="default: <dataset>/<strategy>/<split>/{setup}, where {setup} is a digest of the data, split, "
                        "backbone and fixed settings; a study joined by name must have the same setup")
    p.add_argument("--pruning", choices=PRUNERS, default=d.pruning)
    p.add_argument("--prune-below", type=number, default=d.prune_below, help="with --pruning threshold")
    p.add_argument("--pruning-warmup-epochs", type=integer, default=d.pruning_warmup_epochs)
    p.set_defaults(handler=_run_tune)


def _run_tune(args: argparse.Namespace) -> None:
    from scadapt.training.config import TuneJob
    from scadapt.tuning.study import tune

    job = TuneJob(**_job_fields(args), n_trials=args.n_trials, timeout=args.timeout or None, storage=args.storage,
                  study_name=args.study_name, pruning=args.pruning, prune_below=args.prune_below,
                  pruning_warmup_epochs=args.pruning_warmup_epochs)
    result = tune(job)
    m = result.metrics
    states = ", ".join(f"{n} {state}" for state, n in result.trial_states.items())
    echo(f"Study {result.study_name} ({states}): best {job.strategy} validation macro-F1 {m['val_macro_f1']:.3f}, "
          f"test macro-F1 {m['test_macro_f1']:.3f}, settings {result.best_params} (MLflow run {result.best_run_id})")


def _add_promote(subparsers) -> None:
    p = subparsers.add_parser("promote", help="register the best runner of a dataset as @champion")
    p.add_argument("--data", required=True, help="the dataset name used for training (catalogue name or file stem)")
    p.add_argument("--policy", type=optional_text, default=None, help="promotion policy (default: registry/policy.yaml)")
    p.add_argument("--experiment", type=optional_text, default=None,
                   help="rank only this experiment's candidates (default: every experiment's)")
    flag(p, "force", "promote the best candidate even if it ranks below the current champion")
    p.set_defaults(handler=_run_promote)


def _run_promote(args: argparse.Namespace) -> None:
    from scadapt.registry import promote
    from scadapt.serving.server import SERVE_NOTE, serve_command

    dataset = Path(args.data).stem if args.data.endswith(".h5ad") else args.data
    result = promote(dataset, args.policy, args.experiment, force=args.force)
    shown = result.ranking.drop(columns=["run_id"]).head(10)
    echo(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    echo(f"\n{result.note}")
    echo(f"Serve it: {serve_command(f'models:/{result.model_name}@champion')}  ({SERVE_NOTE})")


def _add_predict(subparsers) -> None:
    p = subparsers.add_parser("predict", help="annotate an .h5ad file with a registered model")
    p.add_argument("--model", required=True, help="model URI, e.g. models:/scadapt-pbmc68k_reduced@champion")
    p.add_argument("--data", required=True, help=".h5ad file with counts or log-normalised values")
    p.add_argument("--output", type=optional_text, default=None, help="default: <input stem>_annotated.h5ad here")
    p.add_argument("--layer", type=optional_text, default=None, help="AnnData layer to read ('raw' for .raw; default: X)")
    p.add_argument("--gene-column", type=optional_text, default=None, help="var column with gene symbols")
    p.add_argument("--key", default="scadapt", help="obs/obsm key prefix (default: %(default)s)")
    p.set_defaults(handler=_run_predict)


def _run_predict(args: argparse.Namespace) -> None:
    from scadapt.serving.predict import predict_h5ad

    result = predict_h5ad(args.model, args.data, args.output, args.layer, args.gene_column, args.key)
    echo(result.label_counts.to_string())
    echo(f"\nWrote {result.output} (obs {args.key}_label, {args.key}_confidence; obsm X_{args.key}); "
          f"MLflow run {result.run_id}.")


def _add_pipeline(subparsers) -> None:
    from scadapt.training.config import PipelineConfig

    d = PipelineConfig()
    p = subparsers.add_parser("pipeline", help="the main job: demo backbone, tune every strategy, promote, summarise")
    add_data_arguments(p, default_data=d.data, with_split=False)
    p.add_argument("--strategies", type=strategy_names, default=d.strategies, help="comma-separated (default: all)")
    _add_study_arguments(p, d, per="strategy")
    p.add_argument("--pretrain-data", type=names, default=d.pretrain_data, help=PRETRAIN_DATA_HELP)
    p.add_argument("--min-genes", type=integer, default=d.min_genes,
                   help="refuse data with fewer genes in the backbone's vocabulary (default: %(default)s)")
    flag(p, "force", "promote the best runner even if it ranks below the current champion")
    p.set_defaults(handler=_run_pipeline)


def _add_study_arguments(p: argparse.ArgumentParser, d, per: str) -> None:
    """Budget, backbone, storages and device: what ``pipeline`` and ``benchmark`` share."""
    from scadapt.training.config import DEVICE_HELP

    p.add_argument("--n-trials", type=integer, default=d.n_trials, help=f"trials per {per} (default: %(default)s)")
    p.add_argument("--epochs", type=integer, default=d.epochs, help="epochs per fit (default: %(default)s)")
    p.add_argument("--checkpoint", type=optional_text, default=None, help="scGPT model folder (default: the demo backbone)")
    p.add_argument("--pretrain-epochs", type=integer, default=d.pretrain_epochs)
    p.add_argument("--storage", type=optional_text, default=None, help="Optuna storage (default: sqlite:///optuna.db)")
    p.add_argument("--policy", type=optional_text, default=None,
                   help="ranking and promotion rule (default: registry/policy.yaml)")
    p.add_argument("--seed", type=integer, default=d.seed)
    p.add_argument("--device", default=d.device, help=DEVICE_HELP)
    add_options(p, MemoryOptions)
    p.add_argument("--workers", type=integer, default=d.workers,
                   help="processes on this machine sharing the work (0: one per CPU core, up to 4 and 4 GB of "
                        "memory each; 1 on a GPU; default: %(default)s)")


def _run_pipeline(args: argparse.Namespace) -> None:
    from scadapt.pipeline import run_pipeline
    from scadapt.serving.server import SERVE_NOTE, serve_command
    from scadapt.tracking.contract import REPORT_ARTIFACT
    from scadapt.training.config import PipelineConfig

    result = run_pipeline(PipelineConfig(
        data=args.data, **vars(from_args(DataOptions, args)), strategies=args.strategies, n_trials=args.n_trials,
        epochs=args.epochs, checkpoint=args.checkpoint, pretrain_epochs=args.pretrain_epochs,
        pretrain_data=args.pretrain_data, min_genes=args.min_genes, storage=args.storage, policy=args.policy,
        force=args.force, seed=args.seed, device=args.device, workers=args.workers,
        **vars(from_args(MemoryOptions, args)),
    ))
    echo(result.summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    promotion = result.promotion
    for warning in result.warnings:
        echo(f"\nWARNING: {warning}")
    if promotion is not None:
        echo(f"\nChampion: {promotion.model_name} version {promotion.version} ({promotion.strategy}). {promotion.note}")
        echo(f"Serve it: {serve_command(f'models:/{promotion.model_name}@champion')}  ({SERVE_NOTE})")
    run = result.benchmark.parent_run_id
    echo(f"Report: {REPORT_ARTIFACT}/report.md on MLflow run {run} "
         f"(mlflow artifacts download -r {run} -a {REPORT_ARTIFACT} -d .)")
    echo("Compare the runs: mlflow ui")


def _add_benchmark(subparsers) -> None:
    from scadapt.benchmark.config import BenchmarkConfig

    d = BenchmarkConfig()
    p = subparsers.add_parser("benchmark", help="every strategy x regime x fold, ranked, with figures and a report")
    p.add_argument("--datasets", type=names, default=d.datasets,
                   help="comma-separated catalogued names or .h5ad paths (default: %(default)s)")
    add_options(p, DataOptions)
    p.add_argument("--strategies", type=strategy_names, default=d.strategies, help="comma-separated (default: all)")
    p.add_argument("--regimes", type=names, default=d.regimes,
                   help="comma-separated from full, low, cross_study (default: all; cross_study where there are batches)")
    p.add_argument("--label-fractions", type=number_list, default=d.label_fractions)
    p.add_argument("--n-folds", type=integer, default=d.n_folds, help="K of the stratified folds (default: %(default)s)")
    p.add_argument("--folds", type=integer, default=d.folds, help="run the first F of the K folds (0: all K; default: %(default)s)")
    p.add_argument("--tuning", choices=TUNING_MODES, default=d.tuning,
                   help="reuse: one study per dataset and strategy, its settings reused on every split; "
                        "per_fold: one study per split (default: %(default)s)")
    _add_study_arguments(p, d, per="study")
    flag(p, "no-promote", "do not register champions at the end")
    flag(p, "force", "promote each dataset's best runner even if it ranks below the current champion")
    p.add_argument("--experiment", default=d.experiment, help="MLflow experiment of all its runs (default: %(default)s)")
    p.add_argument("--output-dir", default=d.output_dir, help="report, tables and figures (default: %(default)s)")
    p.add_argument("--name", default=d.name, help="shown in run names and the report (default: %(default)s)")
    p.add_argument("--pretrain-data", type=names, default=d.pretrain_data, help=PRETRAIN_DATA_HELP)
    p.set_defaults(handler=_run_benchmark)


def _run_benchmark(args: argparse.Namespace) -> None:
    from scadapt.benchmark.config import BenchmarkConfig
    from scadapt.benchmark.runner import run_benchmark
    from scadapt.tracking.contract import REPORT_ARTIFACT

    options = from_args(DataOptions, args).given()
    result = run_benchmark(BenchmarkConfig(
        datasets=args.datasets, strategies=args.strategies, regimes=args.regimes, label_fractions=args.label_fractions,
        n_folds=args.n_folds, folds=args.folds or None, tuning=args.tuning, n_trials=args.n_trials, epochs=args.epochs,
        checkpoint=args.checkpoint, pretrain_epochs=args.pretrain_epochs, pretrain_data=args.pretrain_data,
        storage=args.storage, policy=args.policy, promote=not args.no_promote, force=args.force, experiment=args.experiment, output_dir=args.output_dir, name=args.name,
        seed=args.seed, device=args.device, workers=args.workers, data_options=options,
        **vars(from_args(MemoryOptions, args)),
    ))
    ranking = result.tables.ranking
    shown = ranking[ranking["regime"] == "full"] if (ranking["regime"] == "full").any() else ranking
    echo(shown.drop(columns=["regime", "label_fraction"]).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    for dataset, champion in result.tables.champions.items():
        if champion["model"]:
            echo(f"{dataset}: champion {champion['strategy']} ({champion['model']}, run {champion['run_id']})")
    echo(f"\n{result.cells_run} cells run now, {len(result.tables.runs) - result.cells_run} found finished. "
         f"Report: {result.output_dir.resolve() / 'report.md'} (also {REPORT_ARTIFACT}/report.md on MLflow run "
         f"{result.parent_run_id}).")


def _add_pretrain(subparsers) -> None:
    from scadapt.training.config import PretrainConfig

    d = PretrainConfig()
    p = subparsers.add_parser("pretrain", help="masked-value pretraining of a backbone")
    p.add_argument("--data", default=",".join(d.data),
                   help="comma-separated bundled dataset names or .h5ad paths (default: %(default)s)")
    p.add_argument("--layer", type=optional_text, default=None, help="AnnData layer with counts or log-normalised values (default: X)")
    p.add_argument("--gene-column", type=optional_text, default=None, help="var column with gene symbols")
    p.add_argument("--checkpoint", type=optional_text, default=None,
                   help="scGPT model directory to continue pretraining; omit for a new small model")
    p.add_argument("--output-dir", type=optional_text, default=None,
                   help="where to write the checkpoint (default: the demo backbone folder in the scadapt cache)")
    for name in ("d_model", "nlayers", "nhead", "d_hid", "max_seq_len", "n_bins", "epochs", "batch_size",
                 "warmup_steps", "min_genes", "seed"):
        p.add_argument(f"--{name.replace('_', '-')}", type=integer, default=getattr(d, name))
    for name in ("dropout", "lr", "weight_decay", "val_fraction"):
        p.add_argument(f"--{name.replace('_', '-')}", type=number, default=getattr(d, name))
    p.add_argument("--mask-ratios", default=",".join(map(str, d.mask_ratios)))
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda or cuda:N")
    p.add_argument("--experiment", default=d.experiment)
    p.set_defaults(handler=_run_pretrain)


def _run_pretrain(args: argparse.Namespace) -> None:
    from scadapt.training.config import PretrainConfig
    from scadapt.training.pretrain import pretrain

    fields = {k: v for k, v in vars(args).items() if k not in ("handler", "command")}
    fields["data"] = tuple(s.strip() for s in args.data.split(",") if s.strip())
    try:
        fields["mask_ratios"] = tuple(float(r) for r in args.mask_ratios.split(","))
    except ValueError:
        raise ScadaptError(f"--mask-ratios must be comma-separated numbers, got {args.mask_ratios!r}.") from None
    result = pretrain(PretrainConfig(**fields))
    echo(f"Pretrained backbone written to {result.checkpoint_dir}")
    echo(f"  weights hash {result.weights_hash[:16]}, validation loss {result.val_loss:.4f}, MLflow run {result.run_id}")


def _add_publish_backbone(subparsers) -> None:
    p = subparsers.add_parser("publish-backbone",
                              help="log a checkpoint folder to the tracking store once; print its runs:/ URI for workers")
    p.add_argument("checkpoint", help="scGPT model folder (args.json, vocab.json, best_model.pt)")
    p.set_defaults(handler=_run_publish_backbone)


def _run_publish_backbone(args: argparse.Namespace) -> None:
    from scadapt.backbone import load_backbone
    from scadapt.tracking.checkpoints import publish_checkpoint

    folder = Path(args.checkpoint)
    uri = publish_checkpoint(folder, load_backbone(folder).weights_hash)
    echo(uri)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scadapt", description="Adapt scGPT to cell-type annotation.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_pretrain(subparsers)
    _add_train(subparsers)
    _add_tune(subparsers)
    _add_promote(subparsers)
    _add_predict(subparsers)
    _add_pipeline(subparsers)
    _add_benchmark(subparsers)
    _add_datasets(subparsers)
    _add_splits(subparsers)
    _add_publish_backbone(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a subcommand. Input errors print one message (exit 2), Ctrl-C one line (exit 130);
    anything else is a bug, shown as one line unless ``SCADAPT_DEBUG=1`` asks for the traceback."""
    args = build_parser().parse_args(dashed_option_names(list(sys.argv[1:] if argv is None else argv)))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    redact_logs()
    try:
        with interrupts_at_safe_points(), one_job():  # a data warning is said once, whatever the processes
            if args.command not in ("datasets", "splits"):
                from scadapt.tracking.runs import announce_server_retries, check_tracking_store

                check_tracking_store()
                announce_server_retries()
            args.handler(args)
    except ScadaptError as error:
        echo(f"scadapt: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        echo("\nscadapt: interrupted. Finished work is kept (MLflow runs, Optuna trials, checkpoints); "
              "run the same command again to continue.", file=sys.stderr)
        return 130
    except Exception as error:
        if os.environ.get("SCADAPT_DEBUG"):
            raise
        echo(f"scadapt: unexpected error: {type(error).__name__}: {str(error)[:500]}\n"
              "This is a bug in scadapt, or a failure it does not explain yet. Set SCADAPT_DEBUG=1 to see the "
              "traceback, and please report it.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
