"""A study is its setup: everything that changes a trial's result names the study it joins.

Two ``tune`` calls share trials only when their data (content, not file name), split, backbone
weights, fixed hyperparameters, seed, precision and pruning agree. The default study name ends
with a digest of that setup (``{setup}`` in a given name stands for it too), so another setup
starts a study of its own; the setup is also
recorded in the study (a user attribute), so joining a study by an explicit name with another
setup is refused with the difference named.
"""

from __future__ import annotations

import hashlib
import json

import optuna

from scadapt.data.digest import data_identity
from scadapt.infra.devices import compute_dtype
from scadapt.infra.errors import ScadaptError
from scadapt.jobs.config import TuneJob
from scadapt.jobs.context import TrainingContext

SETUP_ATTR = "scadapt_setup"
SETUP_PLACEHOLDER = "{setup}"  # in a study name: the digest of the setup (the default name ends with it)


def study_setup(job: TuneJob, ctx: TrainingContext, fixed: dict[str, object]) -> dict[str, str]:
    """The setup of a study as ``{what: value}`` strings; ``fixed``: the hyperparameters the
    search does not touch, as the fit uses them."""
    info, split = ctx.info, ctx.split
    data, cells = data_identity(ctx.adata, split)
    return {
        "strategy": job.strategy,
        "data": f"{info.name}, content {data}",
        "data.options": json.dumps({"label_key": info.label_key, "batch_key": info.batch_key, "layer": info.layer,
                                    "gene_column": info.gene_column, "drop_rare_classes": job.reading.drop_rare_classes}),
        "split": f"{split.name}, cells {cells}",
        "backbone.weights_hash": ctx.weights_hash or "none (expression only)",
        "backbone.max_seq_len": str(ctx.tokenizer.max_seq_len) if ctx.tokenizer else "",
        "hparams": json.dumps(fixed, sort_keys=True, default=str),
        "seed": str(job.seed),
        "precision": str(compute_dtype(ctx.device)).removeprefix("torch."),
        "pruning": f"{job.pruning} (below {job.prune_below}, warm-up {job.pruning_warmup_epochs} epochs, "
                   f"{job.pruning_startup_trials} start-up trials)",
    }


def setup_digest(setup: dict[str, str]) -> str:
    """A short digest of a setup, for the default study name."""
    return hashlib.blake2b(json.dumps(setup, sort_keys=True).encode(), digest_size=6).hexdigest()


def claim_study(study: optuna.Study, setup: dict[str, str]) -> None:
    """Record ``setup`` in a new study, or check that an existing study has the same one.

    Raises:
        ScadaptError: the study was run with another setup (the differences are named), or by a
            version of scadapt that did not record its setup and already has trials.
    """
    recorded = study.user_attrs.get(SETUP_ATTR)
    if recorded is None:
        if study.get_trials(deepcopy=False):
            raise ScadaptError(
                f"Study {study.study_name!r} has trials but no recorded setup (an earlier scadapt made it), so its "
                "results cannot be told to come from this data, backbone and settings. Leave out --study-name (each "
                "setup gets a study of its own) or give a new one.")
        study.set_user_attr(SETUP_ATTR, setup)
        return
    if differences := [f"{key}: {recorded.get(key, 'not recorded')} in the study, {value} now"
                       for key, value in setup.items() if recorded.get(key) != value]:
        raise ScadaptError(
            f"Study {study.study_name!r} was run with another setup, so its trials are not results of this one: "
            + "; ".join(differences) + ". Leave out --study-name (each setup gets a study of its own) or give a new "
            "one.")
