"""User-facing errors.

Every error a user can cause (bad input, a broken checkpoint, a wrong key) is raised as a
:class:`ScadaptError` whose message says what is wrong and how to fix it. The console commands
print these messages without a stack trace; anything else is a bug in scadapt.
"""


class ScadaptError(Exception):
    """Base class for errors caused by input that scadapt cannot use."""


class CheckpointError(ScadaptError):
    """A model directory or weights file is missing, truncated or inconsistent."""


class InputDataError(ScadaptError):
    """An AnnData object or file cannot be used as model input."""


class VocabularyError(ScadaptError):
    """The genes of a dataset and the model vocabulary do not fit together."""
