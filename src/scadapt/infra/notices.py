"""Warnings about the data said once per job, however many fits and worker processes meet them.

A job (a console command, a pipeline, a benchmark) prepares the same data for every fit, and its
helper processes prepare it again: without this, a dropped class or a low gene coverage would be
reported once per fit and per process. Inside :func:`one_job` (which the helpers inherit through
``SCADAPT_SAID_DIR``: a folder where the first process to say a warning leaves a mark),
:func:`warn_once` says each distinct message once and logs repeats at debug level. Outside a
job, every call warns.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

SAID_DIR_ENV = "SCADAPT_SAID_DIR"


def warn_once(logger: logging.Logger, message: str, *args: object, key: str | None = None) -> None:
    """``logger.warning(message, *args)`` the first time in the job, debug-level after that.
    ``key`` names what the warning is about when its wording may differ between places (e.g. the
    same low coverage said before and after the backbone is pretrained); by default, the text."""
    text = message % args if args else message
    logger.log(logging.WARNING if _first_time(key or text) else logging.DEBUG, "%s", text)


def _first_time(text: str) -> bool:
    folder = os.environ.get(SAID_DIR_ENV)
    if not folder:
        return True
    mark = os.path.join(folder, hashlib.blake2b(text.encode(), digest_size=12).hexdigest())
    try:
        os.close(os.open(mark, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    except OSError:  # the folder went away: better said twice than never
        return True
    return True


@contextmanager
def one_job() -> Iterator[None]:
    """The block (and the processes it starts) is one job for :func:`warn_once`; nested jobs join the outer one."""
    if os.environ.get(SAID_DIR_ENV):
        yield
        return
    folder = tempfile.mkdtemp(prefix="scadapt-said-")
    os.environ[SAID_DIR_ENV] = folder
    try:
        yield
    finally:
        os.environ.pop(SAID_DIR_ENV, None)
        shutil.rmtree(folder, ignore_errors=True)


def steps_shown() -> bool:
    """Whether a bar over the steps of an epoch or a pass is drawn: on a terminal only. A log written
    to a file gets the per-epoch and per-cell lines instead of one line per step."""
    return sys.stderr.isatty()
