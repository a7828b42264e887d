"""A database error never puts a flow token or a registration id into the logs: not in the message, not
in the traceback, not in PostgreSQL's DETAIL line, in the web process and in the worker alike."""

import io
import json
import logging
import secrets
import threading

import pytest
from sqlalchemy import select

from paygate.core import logs
from paygate.core.db import db, utcnow
from paygate.core.models import Registration
from paygate.ops import worker
from tests.helpers.apps import make_app
from tests.helpers.flow import open_frame


@pytest.fixture
def captured():
    """What our handler writes, in text and in JSON, traceback included."""
    streams = {"text": io.StringIO(), "json": io.StringIO()}
    handlers = [logs.stream_handler(stream, name) for name, stream in streams.items()]
    for handler in handlers:
        logging.getLogger().addHandler(handler)
    yield streams
    for handler in handlers:
        logging.getLogger().removeHandler(handler)


def _failing_insert(existing: Registration, problem: str, seen: list) -> None:
    """An INSERT whose parameters carry a flow token and a registration id (added to `seen`), failing
    as `problem` says: a unique violation (on the existing row's token), a NOT NULL violation (PostgreSQL
    quotes the whole failing row), or a value too long for its column (PostgreSQL: SQLite stores it)."""
    duplicate = problem == "duplicate"
    token = existing.flow_token if duplicate else secrets.token_urlsafe(32)
    registration_id = existing.registration_id if duplicate else secrets.token_urlsafe(12)
    seen += [token, registration_id, existing.flow_token, existing.registration_id]
    lms_url = {"missing": None, "too long": "https://lms.example/" + "x" * 600}.get(problem, "https://lms.example/")
    now = utcnow()
    db.session.add(
        Registration(
            registration_id=registration_id,
            flow_token=token,
            lms_url=lms_url,
            state="pending",
            price_id="price_registration",
            amount=4900,
            currency="usd",
            created_at=now,
            updated_at=now,
        )
    )
    db.session.flush()


def _service(database_url):
    app = make_app(database_url)
    problem = {"seen": []}

    def explode():  # a view that meets a database error halfway, as a bug would
        _failing_insert(db.session.scalars(select(Registration)).one(), problem["kind"], problem["seen"])
        return "unreachable"

    app.add_url_rule("/_test/database-error", view_func=explode)
    yield app, problem
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def service(database_url):
    yield from _service(database_url)


@pytest.fixture
def pg_service(pg_url):
    yield from _service(pg_url)


def _request_fails_without_a_secret_in_the_logs(service, ltiaas_api, captured, kind) -> str:
    app, problem = service
    client = app.test_client()
    open_frame(client, ltiaas_api)
    problem["kind"] = kind
    response = client.get("/_test/database-error")
    assert response.status_code == 500 and "Something went wrong" in response.text

    text, lines = captured["text"].getvalue(), captured["json"].getvalue().splitlines()
    assert "Traceback" in text and ("IntegrityError" in text or "DataError" in text)
    assert "[SQL parameters hidden" in text
    error = next(json.loads(line) for line in lines if "unexpected error" in line)
    assert "[SQL parameters hidden" in error["exception"]
    assert problem["seen"]
    for secret in problem["seen"]:
        assert secret not in text and secret not in "\n".join(lines) and secret not in response.text
    return text


@pytest.mark.parametrize("kind", ["duplicate", "missing"])
def test_a_database_error_in_a_request_logs_no_token(service, stripe_api, ltiaas_api, captured, kind):
    text = _request_fails_without_a_secret_in_the_logs(service, ltiaas_api, captured, kind)
    if "postgresql" in service[0].config["SQLALCHEMY_DATABASE_URI"]:  # PostgreSQL quotes the values itself
        quoted = "=([redacted]) already exists" if kind == "duplicate" else "Failing row contains ([redacted])"
        assert quoted in text


def test_a_value_too_long_logs_no_token(pg_service, stripe_api, ltiaas_api, captured):
    text = _request_fails_without_a_secret_in_the_logs(pg_service, ltiaas_api, captured, "too long")
    assert "value too long for type character varying(500)" in text


def test_a_database_error_in_the_worker_logs_no_token(service, stripe_api, ltiaas_api, captured, monkeypatch):
    """The worker builds its engine with the same options: its failed pass's traceback is as clean."""
    app, _ = service
    open_frame(app.test_client(), ltiaas_api)
    stop, seen = threading.Event(), []

    def failing_step(clock, counts):
        stop.set()  # one pass
        _failing_insert(db.session.scalars(select(Registration)).one(), "missing", seen)

    monkeypatch.setattr(worker, "abandon_expired", failing_step)
    worker.run_forever(app, 0.01, 0, stop)

    text = captured["text"].getvalue()
    assert "worker pass failed" in text and "Traceback" in text and "[SQL parameters hidden" in text
    assert seen
    for secret in seen:
        assert secret not in text and secret not in captured["json"].getvalue()
