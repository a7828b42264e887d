"""Faults of the whole service: the database unavailable while a webhook is handled, and an LTIaaS that
hangs (the webhook is answered promptly all the same, and the registration completes once afterwards)."""

import contextlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from paygate.application import create_app
from paygate.core.db import db
from paygate.core.models import StripeEvent
from paygate.ops import worker
from tests.fakes import CLOSE_HTML
from tests.helpers.apps import BASE_CONFIG, make_app
from tests.helpers.flow import status
from tests.helpers.fulfilment import FINISHING, SAFE, load, snapshot
from tests.helpers.servers import free_port, serving
from tests.helpers.webhooks import deliver


def _fail_once(engine, statement_starts: str):
    """Make the first statement starting with `statement_starts` fail as a lost connection would."""
    state = {"armed": True}

    def before(conn, cursor, statement, parameters, context, executemany):
        if state["armed"] and statement.lstrip().upper().startswith(statement_starts):
            state["armed"] = False
            raise OperationalError(statement, parameters, Exception("server closed the connection unexpectedly"))

    event.listen(engine, "before_cursor_execute", before)
    return lambda: event.remove(engine, "before_cursor_execute", before)


@pytest.mark.parametrize("where", ["mid-transaction", "at-commit", "database-down"])
def test_database_unavailable_during_a_webhook_answers_5xx_and_writes_nothing(
    client, stripe_api, ltiaas_api, paid, database_url, where
):
    registration_id, token, session_id = paid
    completed_event = stripe_api.event("checkout.session.completed", session_id)
    before = snapshot(client)
    app = client.application
    if where == "database-down":
        down_url = (
            "postgresql+psycopg://postgres@127.0.0.1:9/paygate_down"
            if database_url.startswith("postgresql")
            else "sqlite:////nonexistent-directory/paygate.sqlite"
        )
        down = create_app({**BASE_CONFIG, "database_url": down_url})
        response = deliver(down.test_client(), stripe_api, completed_event)
    else:
        with app.app_context():
            engine = db.engine
        if where == "mid-transaction":  # after the event row is inserted, before the state changes
            undo = _fail_once(engine, "UPDATE REGISTRATIONS")
        else:

            def fail_commit(conn):
                event.remove(engine, "commit", fail_commit)
                raise OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly"))

            event.listen(engine, "commit", fail_commit)
            undo = lambda: None  # noqa: E731  (removed when it fires)
        try:
            response = deliver(client, stripe_api, completed_event)
        finally:
            undo()
    assert response.status_code == 500
    assert response.get_json()["error"] == "Internal Server Error"
    assert snapshot(client) == before  # no event row, no state change, no timeline entry
    assert ltiaas_api.complete_calls == []
    assert status(client, token)["state"] == "pending"

    # Stripe delivers the same event again once the database is back.
    again = deliver(client, stripe_api, completed_event)
    assert again.status_code == 200 and again.get_json()["result"] == "paid"
    assert ltiaas_api.complete_calls == [registration_id]
    assert status(client, token)["phase"] == "done"
    with app.app_context():
        assert db.session.get(StripeEvent, completed_event["id"]).deliveries == 1


class HangingLtiaas:
    """A real LTIaaS stand-in over HTTP whose first Complete call hangs (requests' timeouts apply)."""

    def __init__(self, registration_id: str, api_key: str):
        self.registrations = {registration_id}
        self.calls: list[str] = []
        self.release = threading.Event()
        self.register_when_released = True
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                with contextlib.suppress(OSError):  # the caller gave up long ago
                    self.wfile.write(data)

            def do_GET(self):
                rid = self.path.rsplit("/", 1)[1]
                if self.headers.get("Authorization") != f"Bearer {api_key}" or rid not in outer.registrations:
                    return self._send(404, {"status": 404, "error": "Not Found", "details": {}})
                self._send(
                    200,
                    {
                        "url": "https://canvas.instructure.com",
                        "familyCode": "canvas",
                        "version": "cloud",
                        "supportedScopes": [],
                        "supportedMessages": [],
                    },
                )

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                rid = self.path.split("/")[-2]
                outer.calls.append(rid)
                if len(outer.calls) == 1:
                    outer.release.wait(30)  # hangs far beyond the client's read timeout
                    if not outer.register_when_released:
                        return self._send(503, {"status": 503, "error": "Unavailable", "details": {}})
                if rid not in outer.registrations:
                    return self._send(
                        404, {"status": 404, "error": "Not Found", "details": {"message": "REGISTRATION_NOT_FOUND"}}
                    )
                outer.registrations.discard(rid)
                self._send(200, {"platformId": "PLATFORM1", "html": CLOSE_HTML})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("hung_call_took_effect", [True, False], ids=["hung-call-registered", "hung-call-lost"])
def test_the_webhook_is_answered_promptly_when_ltiaas_hangs(database_url, stripe_api, mocked, hung_call_took_effect):
    hanging = HangingLtiaas("hangs-on-complete", BASE_CONFIG["ltiaas_api_key"])
    mocked.add_passthru(hanging.url)
    try:
        app = make_app(database_url, ltiaas_url=hanging.url, ltiaas_timeout_seconds=1.0)
        client = app.test_client()
        page = client.get("/pre-approval?registrationId=hangs-on-complete")
        assert page.status_code == 200, page.text
        token = load(client).flow_token
        client.get(f"/flow/{token}/pay")
        session_id = stripe_api.only_session()["id"]
        stripe_api.pay(session_id)

        started = time.monotonic()
        response = deliver(client, stripe_api, stripe_api.event("checkout.session.completed", session_id))
        elapsed = time.monotonic() - started
        print(f"\nwebhook answered in {elapsed:.2f} s while LTIaaS hung (read timeout 1.0 s)")
        assert response.status_code == 200
        assert elapsed < 3.0  # read timeout 1 s, plus the work around it
        assert hanging.calls == ["hangs-on-complete"]
        reg = load(client)
        assert reg.state == "paid" and reg.attempt_uncertain is True and reg.next_attempt_at is not None
        assert "did not answer in time" in reg.last_error["message"]
        assert status(client, token)["message"].startswith(FINISHING)

        # Later the hung call ends at LTIaaS, having registered the platform or not.
        hanging.register_when_released = hung_call_took_effect
        hanging.release.set()
        time.sleep(0.2)
        with app.app_context():
            counts = worker.run_once(now=reg.next_attempt_at)
        assert counts["attempted"] == 1 and len(hanging.calls) == 2
        reg = load(client)
        frame = status(client, token)
        if hung_call_took_effect:
            assert reg.state == "needs_attention" and reg.attention == "completion_uncertain"
            assert SAFE in frame["message"]
        else:
            assert reg.state == "completed" and frame["phase"] == "done"
        with app.app_context():
            db.engine.dispose()
    finally:
        hanging.close()


def test_every_ltiaas_call_is_bounded_by_default():
    from paygate.core.config import Settings

    settings = Settings(_env_file=None)
    assert 0 < settings.ltiaas_timeout_seconds <= 5
    assert settings.stale_after_seconds > settings.ltiaas_timeout_seconds + 3.05


def test_the_webhook_is_answered_within_a_second_while_ltiaas_hangs_and_completes_once_after(
    database_url, stripe_api, mocked
):
    """Acknowledge first, measured over real HTTP: LTIaaS takes 3 s to complete,
    the webhook's answer does not wait for it, and the registration completes once afterwards."""

    hanging = HangingLtiaas("slow-complete", BASE_CONFIG["ltiaas_api_key"])
    mocked.add_passthru(hanging.url)
    port = free_port()
    mocked.add_passthru(f"http://127.0.0.1:{port}")
    try:
        app = make_app(database_url, ltiaas_url=hanging.url, ltiaas_timeout_seconds=5.0)
        client = app.test_client()
        assert client.get("/pre-approval?registrationId=slow-complete").status_code == 200
        token = load(client).flow_token
        client.get(f"/flow/{token}/pay")
        session_id = stripe_api.only_session()["id"]
        stripe_api.pay(session_id)
        threading.Timer(3.0, hanging.release.set).start()  # LTIaaS answers after 3 s
        body, headers = stripe_api.signed(stripe_api.event("checkout.session.completed", session_id))
        with serving(app, port):
            requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10)  # the server is up and warm
            started = time.monotonic()
            response = requests.post(f"http://127.0.0.1:{port}/webhooks/stripe", data=body, headers=headers, timeout=10)
            answered = time.monotonic() - started
            assert response.status_code == 200 and response.json()["result"] == "paid"
            while load(client).state != "completed" and time.monotonic() - started < 10:
                time.sleep(0.05)
            completed = time.monotonic() - started
        print(
            f"\nwebhook answered in {answered:.2f} s; completed {completed:.2f} s after it was sent (LTIaaS took 3 s)"
        )
        assert answered < 1.0
        assert load(client).state == "completed" and hanging.calls == ["slow-complete"]
        with app.app_context():
            db.engine.dispose()
    finally:
        hanging.release.set()
        hanging.close()
