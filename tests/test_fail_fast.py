"""Servers that are down or refuse us are reported in seconds, with the remedy and after one try;
no credential is ever printed, logged or stored in MLflow, whatever form it takes and whichever
URI holds it (study storage, tracking store, model registry, checkpoint). Real servers: a
PostgreSQL cluster that wants a password, and ports where nothing listens."""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from urllib.parse import quote

import pytest
from servers import postgres_bin, postgres_server

from scadapt.cli import main
from scadapt.infra.redaction import redact
from scadapt.serving.server import free_port

pytestmark = pytest.mark.skipif(postgres_bin() is None and not os.environ.get("CI"),
                                reason="PostgreSQL is not installed (apt-get install postgresql)")

PASSWORD = "Pa@ss:w/rd-31"  # @, : and / unencoded in the URL forms below


@pytest.fixture(scope="module")
def guarded():
    """A cluster whose logins need PASSWORD: (``postgresql://scadapt:<encoded>@host:port``, server log)."""
    with postgres_server(PASSWORD) as (url, log):
        import sqlalchemy

        engine = sqlalchemy.create_engine(f"{url}/postgres", isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text('CREATE DATABASE "studies"'))
        engine.dispose()
        yield url, log


def _host(url: str) -> str:
    return url.rsplit("@", 1)[1]


def _run(argv: list[str], capsys, caplog) -> tuple[int, str, float]:
    started = time.monotonic()
    with caplog.at_level(logging.DEBUG):
        code = main(argv)
    out = capsys.readouterr()
    return code, out.out + out.err + caplog.text, time.monotonic() - started


def _failed_logins(log) -> int:
    return log.read_text().count("password authentication failed")


def _tune(storage: str, checkpoint: str = "") -> list[str]:
    return ["tune", "--data", "pancreas_small", "--strategy", "logreg", "--n-trials", "1", "--storage", storage,
            *(["--checkpoint", checkpoint] if checkpoint else [])]


def test_redact_masks_every_credential_form(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "tok-9f8e7d6c")
    cases = {
        "postgresql://me:simple@db.example/x": "simple",
        "postgresql://me:p%40ss%3Aw%2Frd@db/x": "p%40ss%3Aw%2Frd",
        f"postgresql://me:{PASSWORD}@db:5432/x?sslmode=require": PASSWORD,
        "http://me:hunter2@tracking:5000": "hunter2",
        "mlflow-artifacts://me:zz-top-secret@host/path": "zz-top-secret",
        "postgresql://me@db/x?password=qs-secret&sslmode=require": "qs-secret",
        "host=db user=me password=kw-secret dbname=x": "kw-secret",
        "Authorization: Bearer abcdef123456": "abcdef123456",
        "token in a message: tok-9f8e7d6c": "tok-9f8e7d6c",
        "a path that lost a slash: https:/me:lost-slash@host/x": "lost-slash",
    }
    for text, secret in cases.items():
        masked = redact(f"Cannot use '{text}' (see {text}).")
        assert secret not in masked and "***" in masked, (text, masked)
    assert redact("sqlite:///optuna.db and http://127.0.0.1:5000/path") == \
        "sqlite:///optuna.db and http://127.0.0.1:5000/path"  # nothing secret, nothing changed


# passwords a URL parser takes unencoded: spaces and quotes ended the mask before and were printed whole
ODD_PASSWORDS = ["Spa cePW", "Quo'tePW", 'Dou"ble', "a@b c", "p#?/%:@x", "tab\there", "semi;co,lon", "<ang>le`"]


@pytest.mark.parametrize("password", ODD_PASSWORDS)
def test_a_password_of_any_characters_is_masked_on_the_real_error_path(password, capsys, caplog):
    """A study storage where nothing listens: the error the command prints quotes the URL."""
    url = f"postgresql://scadapt:{password}@127.0.0.1:{free_port()}/studies"
    assert redact(f"Cannot use '{url}' ({url}).").count("***") == 2
    code, output, seconds = _run(_tune(url), capsys, caplog)
    assert code == 2 and "study storage postgresql://scadapt:***@" in output, output
    assert password not in output, output


@pytest.mark.integration
@pytest.mark.parametrize("form", ["encoded", "unencoded", "query"])
def test_a_refused_study_storage_is_reported_at_once_after_one_login_and_no_secret(guarded, form, capsys, caplog):
    url, log = guarded
    wrong = "Wr@ng:pa/ss-77"
    storage = {"encoded": f"postgresql://scadapt:{quote(wrong, safe='')}@{_host(url)}/studies",
               "unencoded": f"postgresql://scadapt:{wrong}@{_host(url)}/studies",
               "query": f"postgresql://scadapt@{_host(url)}/studies?password={quote(wrong, safe='')}"}[form]
    before = _failed_logins(log)
    code, output, seconds = _run(_tune(storage), capsys, caplog)
    assert code == 2 and seconds < 10, (seconds, output)
    assert _failed_logins(log) - before <= 1
    assert "study storage" in output and ("password" in output or "@" in output)
    for secret in (wrong, quote(wrong, safe=""), "pa/ss-77", "ss-77"):
        assert secret not in output, (secret, output)


@pytest.mark.integration
def test_a_wrong_database_name_and_a_refused_tracking_store_say_what_to_do(guarded, capsys, caplog, monkeypatch):
    url, log = guarded
    code, output, seconds = _run(_tune(f"{url}/no_such_db"), capsys, caplog)
    assert code == 2 and seconds < 10 and "database does not exist" in output and "createdb" in output
    assert PASSWORD not in output and quote(PASSWORD, safe="") not in output

    before = _failed_logins(log)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"postgresql://scadapt:wrong-pw-42@{_host(url)}/studies")
    code, output, seconds = _run(_tune("sqlite:///optuna.db"), capsys, caplog)
    assert code == 2 and seconds < 10 and "tracking store" in output and "refused the login" in output
    assert _failed_logins(log) - before == 1 and "wrong-pw-42" not in output


@pytest.mark.integration
def test_a_tracking_server_that_is_down_is_reported_in_seconds_without_its_password(capsys, caplog, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://me:http-secret-1@127.0.0.1:{free_port()}")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "token-secret-2")
    code, output, seconds = _run(_tune("sqlite:///optuna.db"), capsys, caplog)
    assert code == 2 and seconds < 10, (seconds, output)
    assert "tracking server runs" in output
    assert "http-secret-1" not in output and "token-secret-2" not in output


@pytest.mark.integration
def test_a_refused_model_registry_and_a_checkpoint_uri_print_no_secret(guarded, capsys, caplog, monkeypatch):
    url, log = guarded
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", f"postgresql://scadapt:reg-secret-3@{_host(url)}/studies")
    code, output, seconds = _run(["promote", "--data", "pancreas_small"], capsys, caplog)
    assert code == 2 and seconds < 10 and "model registry" in output and "reg-secret-3" not in output
    monkeypatch.delenv("MLFLOW_REGISTRY_URI")
    for checkpoint in (f"mlflow-artifacts://me:ckpt-secret-4@127.0.0.1:{free_port()}/backbone",
                       "https://me:ckpt-secret-4@127.0.0.1/backbone"):
        code, output, seconds = _run(["train", "--strategy", "head", "--checkpoint", checkpoint], capsys, caplog)
        assert code == 2 and seconds < 30 and "ckpt-secret-4" not in output, output


@pytest.mark.integration
def test_a_study_storage_with_a_password_leaves_no_secret_in_the_output_or_the_mlflow_store(guarded, tmp_path, capsys,
                                                                                             caplog):
    url, _ = guarded
    unencoded = f"postgresql://scadapt:{PASSWORD}@{_host(url)}/studies"
    code, output, _ = _run(_tune(unencoded), capsys, caplog)
    assert code == 2 and "unencoded @" in output and PASSWORD not in output and "w/rd" not in output

    code, output, _ = _run(_tune(f"{url}/studies"), capsys, caplog)
    assert code == 0, output
    stored = sqlite3.connect(tmp_path / "mlflow.db")
    values = [v for table in ("params", "tags", "experiment_tags")
              for (v,) in stored.execute(f"select value from {table}")]  # noqa: S608 (fixed table names)
    assert any("postgresql://scadapt:***@" in v for v in values)  # the storage is logged, masked
    for secret in (PASSWORD, quote(PASSWORD, safe=""), "w/rd-31", "w%2Frd-31"):
        assert secret not in output and not any(secret in v for v in values), secret


@pytest.mark.integration
def test_a_server_lost_mid_run_is_reported_once_a_minute_while_mlflow_retries(monkeypatch):
    from scadapt.tracking import runs

    clock = [1000.0]
    monkeypatch.setattr(runs.time, "monotonic", lambda: clock[0])
    notice = runs.RetryNotice()

    def retried() -> logging.LogRecord:
        return logging.LogRecord("urllib3.connectionpool", logging.WARNING, __file__, 1,
                                 "Retrying (%r) after connection broken by '%r': %s",
                                 ("Retry(total=5)", "NewConnectionError('refused')", "/api/2.0/mlflow/runs/log-batch"),
                                 None)

    said = []
    for seconds in (0, 2, 30, 59, 61, 100, 125):
        clock[0] = 1000.0 + seconds
        record = retried()
        if notice.filter(record):
            said.append((seconds, record.getMessage()))
    assert [s for s, _ in said] == [0, 61, 125]
    assert all("retries with back-off" in message and "log-batch" in message for _, message in said)
    other = logging.LogRecord("urllib3.connectionpool", logging.WARNING, __file__, 1, "Connection pool is full", (),
                              None)
    assert notice.filter(other)  # other warnings pass unchanged


@pytest.fixture
def silent_port():
    """A port that accepts connections and never answers (as a host behind a firewall that drops packets)."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield server.getsockname()[1]
    server.close()


@pytest.mark.integration
def test_a_server_that_never_answers_is_given_up_after_the_connect_timeout(silent_port, capsys, caplog, monkeypatch):
    code, output, seconds = _run(_tune(f"postgresql://me:silent-secret@127.0.0.1:{silent_port}/studies"), capsys,
                                 caplog)
    assert code == 2 and seconds < 10 and "no answer within 4 s" in output and "silent-secret" not in output, output
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{silent_port}")
    code, output, seconds = _run(_tune("sqlite:///optuna.db"), capsys, caplog)
    assert code == 2 and seconds < 10 and "tracking server runs" in output, (seconds, output)
