"""Logs an operator can follow: a request id per request (returned, on every log line of the request,
sent on to LTIaaS), the JSON format, redaction of messages and tracebacks, and quiet status polls."""

import io
import json
import logging
import os
import re
import threading
import urllib.error
import urllib.request
from datetime import timedelta
from types import SimpleNamespace

import pytest
from flask import Flask
from werkzeug.serving import make_server

from paygate.core import logs
from paygate.core.db import db
from paygate.gateways import ltiaas
from tests.helpers.apps import make_app
from tests.helpers.flow import open_frame, status
from tests.helpers.webhooks import deliver

HEX_ID = re.compile(r"^[0-9a-f]{32}$")


@pytest.fixture
def proxied_client(database_url):
    """The service behind one trusted proxy (TRUSTED_PROXIES=1)."""
    app = make_app(database_url, trusted_proxies=1)
    yield app.test_client()
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def captured():
    """A handler on the root logger that writes what it gets to a string, in the format asked for."""
    added = []

    def attach(log_format: str) -> io.StringIO:
        stream = io.StringIO()
        handler = logs.stream_handler(stream, log_format)
        logging.getLogger().addHandler(handler)
        added.append(handler)
        return stream

    yield attach
    for handler in added:
        logging.getLogger().removeHandler(handler)


def _rid(response) -> str:
    return response.headers["X-Request-ID"]


# ---------------------------------------------------------------------------------------------------
# The id


def test_every_response_has_its_own_request_id(client):
    ids = [_rid(client.get("/healthz")) for _ in range(3)]
    assert all(HEX_ID.match(i) for i in ids) and len(set(ids)) == 3
    missing = client.get("/flow/not-a-known-token-at-all-xx/status")  # errors too
    assert missing.status_code == 404 and HEX_ID.match(_rid(missing))


def test_an_id_from_an_untrusted_client_is_replaced(client):
    """Without a trusted proxy, anybody could put anything into our logs and LTIaaS's."""
    response = client.get("/healthz", headers={"X-Request-ID": "chosen-by-the-client"})
    assert _rid(response) != "chosen-by-the-client" and HEX_ID.match(_rid(response))


@pytest.mark.parametrize("incoming", ["abc-123", "req:7f3a.b_c-d", "a" * 128, "0" * 32])
def test_a_trusted_proxys_id_is_kept(proxied_client, incoming):
    assert _rid(proxied_client.get("/healthz", headers={"X-Request-ID": incoming})) == incoming


@pytest.mark.parametrize(
    "incoming", ["", "a" * 129, "has space", "semi;colon", "<script>", "a/b", 'quote"d', "caf\u00e9", "tab\there"]
)
def test_a_malformed_id_from_a_trusted_proxy_is_replaced(proxied_client, incoming):
    response = proxied_client.get("/healthz", headers={"X-Request-ID": incoming})
    assert HEX_ID.match(_rid(response)) and _rid(response) != incoming


def test_the_id_is_on_every_log_line_of_its_request(client, caplog):
    caplog.set_level(logging.INFO)
    refused = client.post("/webhooks/stripe", data=b"{}", headers={"Stripe-Signature": "t=1,v1=forged"})
    assert refused.status_code == 400
    lines = [r for r in caplog.records if r.name.startswith("paygate")]
    assert any("webhook refused" in r.getMessage() for r in lines)
    assert {r.request_id for r in lines} == {_rid(refused)}
    caplog.clear()
    logging.getLogger("paygate.test").warning("outside any request")
    assert caplog.records[-1].request_id == "-"


def test_the_id_is_sent_to_ltiaas_with_every_call_made_for_the_request(client, stripe_api, ltiaas_api, mocked, caplog):
    caplog.set_level(logging.INFO)
    registration_id, token, page = open_frame(client, ltiaas_api)
    lookups = [c for c in mocked.calls if c.request.method == "GET" and "/api/registrations/" in c.request.url]
    assert [c.request.headers["X-Request-ID"] for c in lookups] == [_rid(page)]

    client.get(f"/flow/{token}/pay")
    session = stripe_api.only_session()
    stripe_api.pay(session["id"])
    caplog.clear()
    ltiaas_api.complete_failures = [503]  # the completion after the answer fails once, and logs it
    paid = client.get(f"/flow/{token}/paid?session_id={session['id']}")
    assert paid.status_code == 200
    completes = [c for c in mocked.calls if c.request.url.endswith("/complete")]
    assert completes, "the completion ran after the answer"
    # Work done after the answer carries the id of the request that queued it.
    assert {c.request.headers["X-Request-ID"] for c in completes} == {_rid(paid)}
    after = [r for r in caplog.records if r.name.startswith("paygate")]
    assert after and {r.request_id for r in after} == {_rid(paid)}

    # Outside any request (the worker, a command): no id is made up.
    before = len(mocked.calls)
    with client.application.app_context():
        ltiaas.client().get_registration(registration_id)
    assert "X-Request-ID" not in mocked.calls[before].request.headers


def test_the_webhooks_work_after_the_answer_carries_its_id(client, stripe_api, ltiaas_api, mocked):
    _registration_id, token, _ = open_frame(client, ltiaas_api)
    client.get(f"/flow/{token}/pay")
    session = stripe_api.only_session()
    stripe_api.pay(session["id"])
    answered = deliver(client, stripe_api, stripe_api.event("checkout.session.completed", session["id"]))
    assert answered.status_code == 200 and status(client, token)["phase"] == "done"
    completes = [c for c in mocked.calls if c.request.url.endswith("/complete")]
    assert [c.request.headers["X-Request-ID"] for c in completes] == [_rid(answered)]


# ---------------------------------------------------------------------------------------------------
# Formats and redaction


def _exploding_app(database_url, **overrides):
    """The service plus a route that fails with secrets in its exception, as a careless library might."""
    app = make_app(database_url, **overrides)

    @app.get("/flow/<token>/explode")
    def explode(token):
        raise RuntimeError(f"upstream refused {URL_WITH_SECRETS.format(token=token)}")

    return app


TOKEN = "AbCdEfSECRETflowTOKENpart1234"
# Not written in the raising line itself: a traceback quotes that line's source.
URL_WITH_SECRETS = (
    "https://lms.example/flow/{token}/status?registration_token=eyJhbGciOiJSUzI1NiJ9.secret-jwt"
    "&registrationId=RegIdSecretPart123"
)


def test_json_lines_have_the_fields_and_tracebacks_keep_no_secret(database_url, captured, caplog):
    app = _exploding_app(database_url, log_format="json")
    caplog.set_level(logging.INFO)
    stream = captured("json")
    client = app.test_client()
    healthy = client.get("/healthz")
    logging.getLogger("paygate.test").info("a line about /flow/%s/status", TOKEN)
    failed = client.get(f"/flow/{TOKEN}/explode")
    assert failed.status_code == 500

    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines and all({"time", "level", "logger", "message", "request_id"} <= set(line) for line in lines)
    assert all(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", line["time"]) for line in lines)
    outside = next(line for line in lines if line["logger"] == "paygate.test")
    assert outside["request_id"] == "-" and outside["level"] == "INFO"
    error = next(line for line in lines if "exception" in line)
    assert error["level"] == "ERROR" and error["logger"] == "paygate" and error["request_id"] == _rid(failed)
    assert error["request_id"] != _rid(healthy)
    assert error["message"].startswith("unexpected error on GET /flow/AbCdEf…/explode")
    assert "Traceback (most recent call last)" in error["exception"] and "RuntimeError" in error["exception"]
    assert "registration_token=[redacted]" in error["exception"] and "/flow/AbCdEf…/status" in error["exception"]
    assert "registrationId=RegI…" in error["exception"]
    everything = stream.getvalue()
    for secret in (TOKEN, "SECRETflowTOKEN", "eyJhbGciOiJSUzI1NiJ9", "secret-jwt", "IdSecretPart123"):
        assert secret not in everything
    # Another handler formatting the same records (here pytest's) gets the redacted traceback too.
    assert TOKEN not in caplog.text and "secret-jwt" not in caplog.text


def test_text_lines_carry_the_request_id_and_redact_tracebacks(database_url, captured):
    app = _exploding_app(database_url)
    stream = captured("text")
    failed = app.test_client().get(f"/flow/{TOKEN}/explode")
    text = stream.getvalue()
    assert re.search(
        r"^\S+ \S+ ERROR paygate \[" + _rid(failed) + r"\]: unexpected error on GET /flow/AbCdEf…/explode",
        text,
        re.MULTILINE,
    )
    assert "Traceback" in text and TOKEN not in text and "secret-jwt" not in text


def test_ltiaas_registration_ids_in_urls_are_shortened_but_operator_row_numbers_are_not():
    from paygate.core.redaction import redact

    line = redact(
        "GET https://x.ltiaas.com/api/registrations/RegIdSecretPart123/complete; GET /operator/api/registrations/123456"
    )
    assert "IdSecretPart" not in line and "/api/registrations/RegI…/complete" in line
    assert "/operator/api/registrations/123456" in line


def test_json_mode_puts_gunicorns_own_lines_in_json(gunicorn_logger):
    logs.setup(Flask("json-gunicorn"), "json")
    handlers = [
        h
        for name in ("gunicorn.access", "gunicorn.error")
        for h in logging.getLogger(name).handlers
        if getattr(h, "_gunicorn", False)
    ]
    assert len(handlers) == 2 and all(isinstance(h.formatter, logs.JsonFormatter) for h in handlers)


# ---------------------------------------------------------------------------------------------------
# The status poll's access lines


def test_the_dev_servers_status_poll_line_is_debug_other_lines_stay(client, stripe_api, ltiaas_api, caplog):
    _, token, _ = open_frame(client, ltiaas_api)

    def serve(*paths):
        """One real dev server (as `make run`) answering `paths` in turn; its log lines are all written
        once it has stopped."""
        server = make_server("127.0.0.1", 0, client.application, threaded=False)
        base = f"http://127.0.0.1:{server.server_port}"
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        try:
            ids = []
            for path in paths:
                try:
                    with urllib.request.urlopen(base + path, timeout=10) as response:  # noqa: S310 - our server
                        assert response.status == 200
                        ids.append(response.headers["X-Request-ID"])
                except urllib.error.HTTPError as refused:  # a stale frame asking about an unknown token
                    assert refused.code == 404
                    ids.append(refused.headers["X-Request-ID"])
            return ids
        finally:
            server.shutdown()
            thread.join()

    caplog.set_level(logging.INFO)
    ids = serve(f"/flow/{token}/status", "/healthz", f"/flow/{token}/status", "/flow/NoSuchTokenNoSuchToken00/status")
    access = [r for r in caplog.records if r.name == "werkzeug"]
    health = [r for r in access if "/healthz" in r.getMessage()]
    assert [(r.levelno, r.request_id) for r in health] == [(logging.INFO, ids[1])]
    assert not [r for r in access if "/status" in r.getMessage()]

    caplog.clear()
    caplog.set_level(logging.DEBUG, logger="werkzeug")  # an operator who wants every line gets it, at DEBUG
    serve(f"/flow/{token}/status")
    polls = [r for r in caplog.records if r.name == "werkzeug" and "/status" in r.getMessage()]
    assert [r.levelno for r in polls] == [logging.DEBUG]
    assert token not in polls[0].getMessage()


@pytest.fixture
def gunicorn_logger():
    """gunicorn's own logger class, writing its access log (as `--access-logfile`) to nowhere."""
    from gunicorn.config import Config
    from gunicorn.glogging import Logger

    cfg = Config()
    cfg.set("accesslog", os.devnull)
    cfg.set("errorlog", os.devnull)
    glog = Logger(cfg)
    yield glog
    for name in ("gunicorn.access", "gunicorn.error"):
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if getattr(h, "_gunicorn", False)]:
            logger.removeHandler(handler)
            handler.close()
        logger.setLevel(logging.NOTSET)
        logger.propagate = True


def test_gunicorns_status_poll_access_line_is_debug_other_lines_stay(app, gunicorn_logger):
    seen: list[logging.LogRecord] = []
    catcher = logging.Handler()
    catcher.emit = seen.append
    logging.getLogger("gunicorn.access").addHandler(catcher)

    def access(path, status="200 OK", request_id="rid-1"):
        environ = {
            "REQUEST_METHOD": "GET",
            "RAW_URI": path,
            "PATH_INFO": path,
            "QUERY_STRING": "",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "10.0.0.1",
        }
        response = SimpleNamespace(
            status=status, sent=12, headers=[("Content-Type", "application/json"), ("X-Request-ID", request_id)]
        )
        gunicorn_logger.access(response, [("Host", "paygate.test")], environ, timedelta(milliseconds=2))

    try:
        access("/flow/AbCdEfGhIjKlMnOpQrStUvWx/status")
        access("/healthz", request_id="rid-health")
        access("/flow/AbCdEfGhIjKlMnOpQrStUvWx/status", "500 INTERNAL SERVER ERROR")  # a failure stays
        assert [(r.levelno, r.getMessage().split('"')[1]) for r in seen] == [
            (logging.INFO, "GET /healthz HTTP/1.1"),
            (logging.INFO, "GET /flow/AbCdEf…/status HTTP/1.1"),
        ]
        assert seen[0].request_id == "rid-health"  # from the response's X-Request-ID

        seen.clear()
        gunicorn_logger.error_log.setLevel(logging.DEBUG)  # gunicorn --log-level debug
        access("/flow/AbCdEfGhIjKlMnOpQrStUvWx/status")
        assert [r.levelno for r in seen] == [logging.DEBUG]
    finally:
        logging.getLogger("gunicorn.access").removeHandler(catcher)
