"""A saved annotator folder rebuilt by the strategy that fitted it, as peft reads an adapter's
config class from its mapping and lets the tuner rebuild the model: the strategy's config class
reads the saved settings, and the strategy rebuilds its model around the fitted weights."""

from __future__ import annotations

from pathlib import Path

from scadapt.models.annotator import Annotator, read_saved
from scadapt.models.novelty import NoveltyScorer
from scadapt.strategies import get_strategy


def rebuild_annotator(directory: str | Path, checkpoint: str | Path | None = None, device: str = "cpu") -> Annotator:
    """The annotator saved in ``directory``, ready to predict. Backbone strategies need the base
    ``checkpoint`` folder it was trained on (its weights hash is checked); to find it where the
    annotator recorded it (its folder, else the artifact store), use
    :func:`scadapt.load_model`."""
    manifest, weights = read_saved(directory)
    strategy = get_strategy(manifest["strategy"])
    config = strategy.config_class.from_saved(manifest["config"])
    annotator = strategy.rebuild(manifest, config, weights, Path(checkpoint) if checkpoint else None, device)
    annotator.novelty = NoveltyScorer.read(Path(directory))
    annotator.trained_on = manifest.get("input", annotator.trained_on)  # saved before 2026-12-07: not recorded
    return annotator
