"""User-facing errors.

Every error a user can cause (bad input, a broken checkpoint, a wrong key) is raised as a
:class:`ScadaptError` whose message says what is wrong and how to fix it. The console commands
print these messages without a stack trace; anything else is a bug in scadapt. Messages are
masked by :func:`scadapt.infra.redaction.redact`, so quoting a URI never prints its password.
"""

from __future__ import annotations

from scadapt.infra.redaction import redact


class ScadaptError(Exception):
    """Base class for errors caused by input that scadapt cannot use. Its message never holds a
    credential: any that it quotes (a URI with a password, a token) is masked here."""

    def __init__(self, *args: object):
        super().__init__(*(redact(arg) if isinstance(arg, str) else arg for arg in args))


class CheckpointError(ScadaptError):
    """A model directory or weights file is missing, truncated or inconsistent."""


class InputDataError(ScadaptError):
    """An AnnData object or file cannot be used as model input."""


class VocabularyError(ScadaptError):
    """The genes of a dataset and the model vocabulary do not fit together."""


class TrainingDiverged(ScadaptError):
    """The loss became NaN or infinite: the fit is worthless and must never be promoted."""

    @classmethod
    def at(cls, loss: float, epoch: int, step: int, lr: float) -> TrainingDiverged:
        return cls(
            f"Training diverged: the loss became {loss} at epoch {epoch + 1}, step {step + 1}. Lower the learning "
            f"rate (lr={lr:g}) or the gradient clipping norm; a diverged run ends FAILED and is never a candidate."
        )


class BudgetSpent(ScadaptError):
    """The job's time budget (``--time-budget``) ran out before this piece of work could finish."""
