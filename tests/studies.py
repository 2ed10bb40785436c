"""Finding a study that a ``tune`` process made: its name ends with a digest of its setup."""

from __future__ import annotations

import optuna


def load_study(storage, prefix: str = "pancreas_small/head/full_fold0/") -> optuna.Study:
    """The one study in ``storage`` whose name starts with ``prefix``; KeyError while there is none."""
    names = [name for name in optuna.get_all_study_names(storage) if name.startswith(prefix)]
    if not names:
        raise KeyError(f"no study named {prefix}... yet")
    assert len(names) == 1, names
    return optuna.load_study(study_name=names[0], storage=storage)
