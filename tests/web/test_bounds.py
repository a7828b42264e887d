"""Bounded bodies: 64 KB everywhere, 1 MB for the webhook (paygate/web/guard.py). A declared Content-Length
above the limit is refused 413 before a byte is read; a chunked body is cut off at the limit while it is
read. JSON for the webhook, a page for people; nothing is recorded. Under gunicorn, a 5 MB webhook
leaves the worker's peak memory where it was."""

import io
import re
import time
import tracemalloc
from pathlib import Path

import pytest
import requests

from paygate.core.db import db
from paygate.core.models import StripeEvent
from paygate.web import guard
from tests.helpers.apps import make_app
from tests.helpers.flow import open_frame

MB = 1024 * 1024


class Trickle(io.RawIOBase):
    """A request body of `size` bytes (None: endless) made while it is read; counts what was read."""

    def __init__(self, size: int | None):
        self.left, self.read_bytes = size, 0

    def readable(self):
        return True

    def readinto(self, buffer):
        n = len(buffer) if self.left is None else min(len(buffer), self.left)
        buffer[:n] = b" " * n
        self.read_bytes += n
        if self.left is not None:
            self.left -= n
        return n


def send(client, method: str, path: str, body: Trickle, length: int | None, **headers):
    """A request whose body is `body` as the server hands it over (length None: chunked, as gunicorn)."""
    environ = {"wsgi.input": body}
    if length is None:
        headers["Transfer-Encoding"] = "chunked"
        environ["wsgi.input_terminated"] = True
    else:
        environ["CONTENT_LENGTH"] = str(length)
    return client.open(path, method=method, headers=headers, environ_overrides=environ)


def test_a_5_mb_webhook_is_refused_before_its_body_is_read(app, client):
    body = Trickle(5 * MB)
    tracemalloc.start()
    try:
        response = send(
            client,
            "POST",
            "/webhooks/stripe",
            body,
            5 * MB,
            **{"Content-Type": "application/json", "Stripe-Signature": "t=1,v1=x"},
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 413
    assert response.get_json() == {
        "error": "Request Entity Too Large",
        "message": "This request is too large: this address accepts at most 1 MB.",
    }
    assert body.read_bytes == 0
    assert peak < 512 * 1024, f"{peak} bytes allocated while refusing"
    with app.app_context():
        assert db.session.query(StripeEvent).count() == 0


def test_a_chunked_webhook_is_cut_off_at_the_limit(client):
    body = Trickle(None)  # no Content-Length, and no end: only the limit stops the reading
    response = send(
        client,
        "POST",
        "/webhooks/stripe",
        body,
        None,
        **{"Content-Type": "application/json", "Stripe-Signature": "t=1,v1=x"},
    )
    assert response.status_code == 413 and "at most 1 MB" in response.get_json()["message"]
    assert body.read_bytes <= guard.WEBHOOK_MAX_BYTES + 64 * 1024


def test_a_large_real_event_is_still_accepted(client, stripe_api):
    """900 KB, far above any event Stripe sends: still under the webhook's limit."""
    event = stripe_api.object_event(
        "customer.created", {"id": "cus_big", "object": "customer", "metadata": {"padding": "x" * 900_000}}
    )
    body, headers = stripe_api.signed(event)
    assert 900_000 < len(body) < guard.WEBHOOK_MAX_BYTES
    response = client.post("/webhooks/stripe", data=body, headers=headers)
    assert response.status_code == 200 and response.get_json()["result"] == "ignored"


def test_people_get_a_page_and_forms_64_kb(client, stripe_api, ltiaas_api):
    _, token, _ = open_frame(client, ltiaas_api)
    body = Trickle(65 * 1024)
    response = send(
        client,
        "POST",
        f"/flow/{token}/invoice",
        body,
        65 * 1024,
        **{"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 413 and response.mimetype == "text/html"
    assert "This request is too large: this address accepts at most 64 KB." in response.text
    assert body.read_bytes == 0
    # Up front for every request, even one whose view never reads a body.
    assert send(client, "GET", "/healthz", Trickle(MB), MB).status_code == 413
    chunked = send(
        client,
        "POST",
        "/operator/sign-in",
        Trickle(None),
        None,
        **{"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert chunked.status_code == 413 and "at most 64 KB" in chunked.text


def test_the_limits_are_what_the_readme_says():
    assert guard.MAX_BODY_BYTES == 64 * 1024 and guard.WEBHOOK_MAX_BYTES == MB
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "64 KB" in readme and "1 MB" in readme


# ---------------------------------------------------------------------------------------------
# Under gunicorn: the worker's peak memory (VmHWM) before and after a 5 MB webhook


def _peak_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))


def _worker_pid(master: int) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.1)
    raise AssertionError("gunicorn started no worker")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the worker's peak memory from /proc")
def test_a_5_mb_webhook_leaves_a_gunicorn_workers_peak_memory_flat(tmp_path):
    from tests.helpers.servers import Server, Upstreams, environment

    database = f"sqlite:///{tmp_path / 'bounds.sqlite'}"
    app = make_app(database)  # migrated
    with app.app_context():
        db.engine.dispose()
    upstreams = Upstreams()
    server = Server(environment(database, upstreams, "http://127.0.0.1"), workers=1, threads=2)
    try:
        server.wait_ready()
        worker = _worker_pid(server.proc.pid)
        url = server.url + "/webhooks/stripe"
        headers = {"Content-Type": "application/json", "Stripe-Signature": "t=1,v1=x"}
        for _ in range(3):  # warm: every module and code path of a refused webhook loaded
            assert requests.post(url, data=b"{}", headers=headers, timeout=10).status_code == 400
        Path(f"/proc/{worker}/clear_refs").write_text("5")  # VmHWM: the peak from here on
        before = _peak_kb(worker)
        try:
            answer = requests.post(url, data=b" " * (5 * MB), headers=headers, timeout=30)
            status = answer.status_code
        except requests.ConnectionError:  # the server may close before the client has sent it all
            status = 413
        time.sleep(0.2)
        after = _peak_kb(worker)
        print(f"\ngunicorn worker VmHWM around a 5 MB webhook: {before} kB -> {after} kB")
        assert status == 413
        assert after - before < 2048, f"peak grew by {after - before} kB"
        assert requests.get(server.url + "/healthz", timeout=10).status_code == 200
    finally:
        server.stop()
        upstreams.close()
