"""Connecting to a user's database server: a short timeout, one attempt, and a message that says
which problem it is.

A wrong password tried again and again can lock an account, and a host that drops packets would
otherwise hold each attempt for the TCP timeout, so :func:`probe` tries once with libpq's
``connect_timeout`` and reports what failed (who refused, why, what to do). Only genuine races
between workers creating the same tables are retried, by the callers that create tables.
"""

from __future__ import annotations

import sqlalchemy

from scadapt.infra.errors import ScadaptError
from scadapt.infra.redaction import url_password

CONNECT_TIMEOUT_SEC = 4  # libpq may try twice (with SSL, then without): reported within 10 s
# what a driver says -> what it means and what to do
_DIAGNOSES = (
    (("password authentication failed", "authentication failed", "access denied", "no password supplied",
      "role \"", "pg_hba.conf"),
     "the server refused the login", "check the user name and password in the URL (a password holding @, : or / "
                                     "must be percent-encoded: @ as %40)"),
    (("does not exist", "unknown database"), "the database does not exist",
     "create it (createdb NAME) or fix the database name at the end of the URL"),
    (("connection refused", "could not connect", "can't connect"), "nothing accepts connections there",
     "start the database server or fix the host and port in the URL"),
    (("timeout expired", "timed out"), f"no answer within {CONNECT_TIMEOUT_SEC} s",
     "check the host name, the port and that a firewall lets the connection through"),
    (("could not translate host name", "name or service not known", "nodename nor servname"),
     "the host name is unknown", "fix the host name in the URL"),
)


def engine_options(url: str) -> dict:
    """Keyword arguments for ``sqlalchemy.create_engine(url, ...)``: a connect timeout for servers."""
    if is_server_url(url):
        return {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_SEC}}
    return {}


def dialect(url: str) -> str:
    """The database of a SQLAlchemy URL without its driver: ``postgresql+psycopg://...`` -> ``postgresql``."""
    name = url.split(":", 1)[0].split("+", 1)[0]
    return "postgresql" if name == "postgres" else name


def is_server_url(url: str) -> bool:
    """Whether ``url`` is a SQLAlchemy URL of a database server (PostgreSQL, MySQL), not a SQLite file."""
    return dialect(url) in ("postgresql", "mysql")


_REACHED: set[str] = set()


def probe(url: str, what: str) -> None:
    """Connect once to the database server at ``url`` and disconnect; raise a :class:`ScadaptError`
    naming ``what`` (e.g. "the study storage"), the cause and the remedy when that fails. A server
    reached once is not asked again in this process (the command checks it before its job does)."""
    if url in _REACHED:
        return
    password = url_password(url) or ""
    if "@" in password:  # the driver would read the rest as a host and quote it, password tail included
        raise ScadaptError(f"{what.capitalize()} {url}: the password holds an unencoded @. Percent-encode it "
                           "(@ as %40, : as %3A, / as %2F) or give it in PGPASSWORD instead of the URL.")
    try:
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool, **engine_options(url))
    except (sqlalchemy.exc.ArgumentError, ValueError) as error:
        raise ScadaptError(f"{what.capitalize()} {url} is not a valid database URL: {error}.") from None
    except ImportError as error:
        raise ScadaptError(f"{what.capitalize()} {url} needs a database driver: {error}.") from None
    try:
        with engine.connect():
            _REACHED.add(url)
    except sqlalchemy.exc.DBAPIError as error:
        raise ScadaptError(describe_failure(url, what, error)) from None
    finally:
        engine.dispose()


def describe_failure(url: str, what: str, error: BaseException) -> str:
    """A message for a failed connection: what, where, the driver's own words, the likely cause and remedy."""
    detail = " ".join(str(getattr(error, "orig", None) or error).split())[:300]
    lowered = detail.lower()
    for needles, cause, remedy in _DIAGNOSES:
        if any(needle in lowered for needle in needles):
            return f"Cannot connect to {what} {url}: {cause} ({detail}). Tried once; {remedy}."
    return f"Cannot connect to {what} {url} ({detail}). Tried once; check the URL and that the server runs."
