"""The ``scadapt`` console command. Each subcommand parses arguments and calls library code.

Errors caused by input (:class:`~scadapt.infra.errors.ScadaptError`) are printed as one readable
message with exit status 2, never as a stack trace.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from scadapt.data.options import DataOptions, SplitOptions
from scadapt.infra.errors import ScadaptError
from scadapt.infra.interrupts import interrupts_at_safe_points
from scadapt.infra.notices import one_job
from scadapt.infra.options import AnnotateOptions, MemoryOptions, add_options, dashed_option_names, from_args
from scadapt.infra.parsers import boolean, optional_text
from scadapt.infra.redaction import redact, redact_logs
from scadapt.infra.storage import writable_dir


def echo(*parts: object, file=None) -> None:
    """``print``, with any credential in the text masked (a URI the user gave may hold a password)."""
    print(redact(" ".join(str(part) for part in parts)), file=file)


def _add_datasets(subparsers) -> None:
    p = subparsers.add_parser("datasets", help="list the catalogued datasets (and fetch one)")
    p.add_argument("--fetch", default=None, help="download a catalogued dataset into the cache now")
    p.set_defaults(handler=_run_datasets)


def _run_datasets(args: argparse.Namespace) -> None:
    from scadapt.data import catalog_listing, fetch_dataset

    echo(fetch_dataset(args.fetch) if args.fetch else catalog_listing())


def _add_splits(subparsers) -> None:
    from scadapt.jobs.config import DATA_HELP, TrainJob

    p = subparsers.add_parser("splits", help="make the train/validation/test splits of a regime and save them")
    p.add_argument("--data", default=TrainJob.data, help=f"{DATA_HELP} (default: %(default)s)")
    add_options(p, DataOptions)
    add_options(p, SplitOptions)
    p.add_argument("--folds", type=optional_text, default=None, help="comma-separated fold numbers (default: all)")
    p.add_argument("--output", default="splits", help="folder for splits.csv and splits.json (default: %(default)s)")
    p.set_defaults(handler=_run_splits)


def _run_splits(args: argparse.Namespace) -> None:
    from scadapt.data import load_and_split, save_splits

    writable_dir(args.output, "the splits", "--output")
    try:
        folds = [int(f) for f in args.folds.split(",")] if args.folds else None
    except ValueError:
        raise ScadaptError(f"--folds must be comma-separated fold numbers, got {args.folds!r}.") from None
    adata, splits = load_and_split(args.data, from_args(DataOptions, args), from_args(SplitOptions, args), folds)
    settings = {k: v for k, v in vars(args).items() if k not in ("handler", "command", "output")}
    paths = save_splits(splits, adata, args.output, **settings)
    for split in splits:
        echo(split.describe())
        for note in split.notes:
            echo(f"  note: {note}")
    echo(f"Saved {len(splits)} splits to {paths[0].parent}")


def _add_job(subparsers, command: str, help: str, group: type, handler) -> None:
    """A subcommand whose options are the option fields of the job dataclass ``group``."""
    p = subparsers.add_parser(command, help=help)
    add_options(p, group)
    p.set_defaults(handler=handler, group=group)


def _hparams_help(args: argparse.Namespace) -> None:
    """``--hparams help``: the strategy's hyperparameters (meaning, allowed values, search), instead of the job."""
    from scadapt.strategies import get_strategy
    from scadapt.strategies.hyperparameters import help_text

    echo(help_text(get_strategy(args.strategy).config_class, args.strategy))


def _run_train(args: argparse.Namespace) -> None:
    from scadapt.jobs.train import train
    result = train(from_args(args.group, args))
    m = result.metrics
    echo(f"{args.strategy}: validation macro-F1 {m['val_macro_f1']:.3f}, test macro-F1 {m['test_macro_f1']:.3f}, "
         f"{int(m['trainable_parameters']):,} trainable parameters, {m['runtime_sec']:.1f} s (MLflow run {result.run_id})")


def _run_tune(args: argparse.Namespace) -> None:
    from scadapt.jobs.study import tune
    result = tune(from_args(args.group, args))
    m = result.metrics
    states = ", ".join(f"{n} {state}" for state, n in result.trial_states.items())
    echo(f"Study {result.study_name} ({states}): best {args.strategy} validation macro-F1 {m['val_macro_f1']:.3f}, "
         f"test macro-F1 {m['test_macro_f1']:.3f}, settings {result.best_params} (MLflow run {result.best_run_id})")


def _add_promote(subparsers) -> None:
    p = subparsers.add_parser("promote", help="register the best runner of a dataset as @champion")
    p.add_argument("--data", required=True, help="the dataset name used for training (catalogue name or file stem)")
    p.add_argument("--policy", type=optional_text, default=None, help="promotion policy (default: registry/policy.yaml)")
    p.add_argument("--experiment", type=optional_text, default=None,
                   help="rank only this experiment's candidates (default: every experiment's)")
    p.add_argument("--force", type=boolean, nargs="?", const=True, default=False, metavar="true|false",
                   help="promote the best candidate even if it ranks below the current champion")
    p.add_argument("--storage", type=optional_text, default=None,
                   help="study storage whose locks the workers share: one promotion of a dataset at a time "
                        "(default: sqlite:///optuna.db)")
    p.set_defaults(handler=_run_promote)


def _run_promote(args: argparse.Namespace) -> None:
    from scadapt.jobs.study_storage import coordinator
    from scadapt.registry import promote
    from scadapt.serving.server import SERVE_NOTE, serve_command

    dataset = Path(args.data).stem if args.data.endswith(".h5ad") else args.data
    result = promote(dataset, args.policy, args.experiment, force=args.force, lock=coordinator(args.storage).hold)
    shown = result.ranking.drop(columns=["run_id"]).head(10)
    echo(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    echo(f"\n{result.note}")
    echo(f"Serve it: {serve_command(f'models:/{result.model_name}@champion')}  ({SERVE_NOTE})")


def _add_predict(subparsers) -> None:
    p = subparsers.add_parser("predict", help="annotate an .h5ad file with a registered model")
    p.add_argument("--model", required=True, help="model URI, e.g. models:/scadapt-pbmc68k_reduced@champion")
    p.add_argument("--data", required=True, help=".h5ad file with counts or log-normalised values")
    p.add_argument("--output", type=optional_text, default=None, help="default: <input stem>_annotated.h5ad here")
    add_options(p, AnnotateOptions)
    p.set_defaults(handler=_run_predict)


def _run_predict(args: argparse.Namespace) -> None:
    from scadapt.serving.predict import predict_h5ad

    result = predict_h5ad(args.model, args.data, args.output, from_args(AnnotateOptions, args))
    echo(result.label_counts.to_string())
    echo(f"\nWrote {result.output} (obs {args.key}_label, {args.key}_confidence; obsm X_{args.key}); "
          f"MLflow run {result.run_id}.")


def _add_pipeline(subparsers) -> None:
    from scadapt.benchmark.config import PIPELINE_DATA, StudyOptions
    from scadapt.jobs.config import DATA_HELP

    p = subparsers.add_parser("pipeline", help="the main job: demo backbone, tune every strategy, promote, summarise")
    p.add_argument("--data", default=PIPELINE_DATA, help=f"{DATA_HELP} (default: %(default)s)")
    for group in (DataOptions, StudyOptions, MemoryOptions):
        add_options(p, group)
    p.set_defaults(handler=_run_pipeline)


def _run_pipeline(args: argparse.Namespace) -> None:
    from scadapt.benchmark.config import StudyOptions
    from scadapt.pipeline import pipeline_config, run_pipeline

    settings = {k: v for group in (StudyOptions, MemoryOptions) for k, v in vars(from_args(group, args)).items()}
    echo(run_pipeline(pipeline_config(args.data, reading=from_args(DataOptions, args), **settings)).closing_text())


def _run_benchmark(args: argparse.Namespace) -> None:
    from scadapt.benchmark.runner import run_benchmark

    echo(run_benchmark(from_args(args.group, args)).closing_text())


def _run_pretrain(args: argparse.Namespace) -> None:
    from scadapt.jobs.pretrain import pretrain

    result = pretrain(from_args(args.group, args))
    echo(f"Pretrained backbone written to {result.checkpoint_dir}")
    echo(f"  weights hash {result.weights_hash[:16]}, validation loss {result.val_loss:.4f}, MLflow run {result.run_id}")


def _add_publish_backbone(subparsers) -> None:
    p = subparsers.add_parser("publish-backbone",
                              help="log a checkpoint folder to the tracking store once; print its runs:/ URI for workers")
    p.add_argument("checkpoint", help="scGPT model folder (args.json, vocab.json, best_model.pt)")
    p.set_defaults(handler=_run_publish_backbone)


def _run_publish_backbone(args: argparse.Namespace) -> None:
    from scadapt.artifacts.checkpoints import publish_checkpoint
    from scadapt.backbone import load_backbone

    folder = Path(args.checkpoint)
    uri = publish_checkpoint(folder, load_backbone(folder).weights_hash)
    echo(uri)


def build_parser() -> argparse.ArgumentParser:
    from scadapt.benchmark.config import BenchmarkConfig
    from scadapt.jobs.config import PretrainConfig, TrainJob, TuneJob

    parser = argparse.ArgumentParser(prog="scadapt", description="Adapt scGPT to cell-type annotation.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_job(subparsers, "pretrain", "masked-value pretraining of a backbone", PretrainConfig, _run_pretrain)
    _add_job(subparsers, "train", "train one strategy on one split as one MLflow run", TrainJob, _run_train)
    _add_job(subparsers, "tune", "an Optuna study of one strategy on one split (MLflow parent + child runs)", TuneJob,
             _run_tune)
    _add_promote(subparsers)
    _add_predict(subparsers)
    _add_pipeline(subparsers)
    _add_job(subparsers, "benchmark", "every strategy x regime x fold, ranked, with figures and a report",
             BenchmarkConfig, _run_benchmark)
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
        if "help" in getattr(args, "hparams", {}):
            return _hparams_help(args) or 0
        with interrupts_at_safe_points(), one_job():  # a data warning is said once, whatever the processes
            if args.command not in ("datasets", "splits"):
                from scadapt.infra.databases import is_server_url, probe
                from scadapt.tracking.runs import announce_server_retries, check_tracking_store

                check_tracking_store()
                announce_server_retries()
                if is_server_url(storage := getattr(args, "storage", None) or ""):
                    probe(storage, "the study storage")  # before the job's libraries load: seconds
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
