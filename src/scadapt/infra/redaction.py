"""Secrets out of every message: one function, :func:`redact`, masks credentials in text.

A URI that a user gives (a tracking store, a study storage, a registry, a checkpoint) may hold a
password; scadapt's errors, log lines, MLflow params and tags all go through :func:`redact`, so
no secret is printed or stored, whatever the message quotes. Forms masked:

* ``user:password@host`` in any URL scheme, the password holding any character but a line break
  unencoded (``@``, ``:``, ``/``, spaces, quotes: everything up to the last ``@`` before a host, on
  its line and before the next URL, counts as the password: a message may lose more, never less);
* ``password=``, ``sslpassword=``, ``token=``, ``secret=``, ``api_key=`` values, in a query
  string or a libpq keyword string;
* ``Bearer``/``Basic`` credentials of an HTTP ``Authorization`` header;
* the values of the environment's secrets (``MLFLOW_TRACKING_TOKEN``, ``MLFLOW_TRACKING_PASSWORD``,
  ``PGPASSWORD``, any ``*_TOKEN``, ``*_PASSWORD``, ``*_SECRET``, ``*_API_KEY``) wherever they appear.
"""

from __future__ import annotations

import logging
import os
import re

MASK = "***"
# a URL's credentials as they appear in text: a scheme (one slash after the colon too: a URL that
# went through pathlib lost one), a user (no ':', '/', '@', space or quote), then the password up to
# the last '@' that a host follows, on its line and before the next URL
_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*:/+)([^:/@\s'\"<>`]*):((?:(?![A-Za-z][A-Za-z0-9+.-]*://)[^\n])*)@"
                          r"(?=[A-Za-z0-9\[][A-Za-z0-9\[\]._~%-]*(?::\d*)?(?:[/?#\s'\"`<>),;]|$))", re.MULTILINE)
_KEYWORDS = re.compile(r"(?i)(\b(?:ssl)?password|\bpasswd|\bpwd|\b[a-z_]*token|\bsecret|\bapi[_-]?key)=[^&\s'\"]+")
_AUTHORIZATION = re.compile(r"(?i)\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{6,}")
_SECRET_ENV = re.compile(r"(?i)(TOKEN|PASSWORD|PASSWD|SECRET|API_KEY)$")
_MIN_SECRET = 4  # shorter environment values (e.g. "true") are not masked where they appear


def redact(text: object) -> str:
    """``text`` (made a string) with every credential replaced by ``***``."""
    text = _CREDENTIALS.sub(lambda m: f"{m.group(1)}{m.group(2)}:{MASK}@", str(text))
    text = _KEYWORDS.sub(lambda m: f"{m.group(1)}={MASK}", text)
    text = _AUTHORIZATION.sub(lambda m: f"{m.group(1)} {MASK}", text)
    for secret in _environment_secrets():
        text = text.replace(secret, MASK)
    return text


def url_password(url: str) -> str | None:
    """The password in ``url``'s user information (up to its last ``@`` before the host), or None."""
    match = _CREDENTIALS.match(url.strip())
    return match.group(3) if match else None


def _environment_secrets() -> list[str]:
    """Secret values of the environment: variables named as secrets, and the passwords of URLs in
    any variable (``MLFLOW_TRACKING_URI``), which a driver may quote apart from their URL."""
    values = set()
    for name, value in os.environ.items():
        if _SECRET_ENV.search(name):
            values.add(value)
        elif "@" in value and (password := url_password(value)):
            values.add(password)
    return sorted((v for v in values if len(v) >= _MIN_SECRET), key=len, reverse=True)  # a longer one first


class RedactingFilter(logging.Filter):
    """Masks credentials in every record a handler emits (scadapt's and the libraries' alike)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def redact_logs() -> None:
    """Put :class:`RedactingFilter` on every handler of the root logger (call after configuring it)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
