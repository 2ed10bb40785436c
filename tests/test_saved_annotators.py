"""Annotators saved by an earlier scadapt (tests/data/saved_annotators, written by its make.py at the
commit its README names) load with today's and predict what they predicted then, one strategy of
every family and both kinds of expression model."""

from __future__ import annotations

from pathlib import Path

import anndata
import numpy as np
import pytest

from scadapt.artifacts.annotators import read_annotator

SAVED = Path(__file__).parent / "data" / "saved_annotators"
STRATEGIES = ("pca_logreg", "logreg", "mlp", "frozen_probe", "head", "lora", "prefix")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_an_annotator_saved_before_loads_and_predicts_as_it_did(strategy):
    query = anndata.read_h5ad(SAVED / "cells.h5ad")[:40].copy()
    expected = np.load(SAVED / "expected.npz")[strategy]
    annotator = read_annotator(SAVED / strategy, checkpoint=SAVED / "backbone")
    assert annotator.strategy == strategy
    np.testing.assert_allclose(annotator.predict_proba(query), expected, rtol=0, atol=1e-5)
