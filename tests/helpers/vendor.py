"""The vendor's webhook endpoint for the tests: a real HTTP server on 127.0.0.1 that verifies every delivery
with `standardwebhooks` and can be told to fail, be slow, redirect or answer too much; and outbox messages
written as the writers write them (rows committed, nobody delivered them yet)."""

import base64
import contextlib
import json
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from paygate.core.db import db, utcnow
from paygate.core.models import Licence, Registration, VendorMessage
from paygate.licensing.vendor_view import iso

SECRET = "whsec_" + base64.b64encode(b"the vendor's secret in the tests").decode()


@dataclass
class Delivery:
    """One try as the endpoint received it."""

    id: str
    timestamp: int
    headers: dict
    body: bytes
    answer: object  # what the endpoint was told to do with it


class Receiver:
    """The vendor's endpoint. `plan[message_id]` lists how its next tries are answered (200 when empty):
    an HTTP status, ("slow", seconds), ("trickle", seconds), ("redirect", url) or ("big", bytes)."""

    def __init__(self, secret: str = SECRET, port: int = 0):
        self.secret = secret
        self.deliveries: list[Delivery] = []
        self.forged: list[dict] = []  # tries whose signature did not verify
        self.plan: dict[str, list] = defaultdict(list)
        self.written: list[int] = []  # bytes written of big answers before the sender closed the connection
        self.lock = threading.Lock()
        self._start(port)

    def _start(self, port: int) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Down: connections to its port are refused."""
        self.server.shutdown()
        self.server.server_close()

    def start_again(self) -> None:
        self._start(self.port)

    def ids(self) -> list[str]:
        """The webhook-id of every try received, in the order received."""
        with self.lock:
            return [d.id for d in self.deliveries]

    def accepted(self) -> list[str]:
        """The ids of the tries answered 200."""
        with self.lock:
            return [d.id for d in self.deliveries if d.answer == 200]

    def _handler(self):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keeps connections open, as a real endpoint would

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    Webhook(outer.secret).verify(body, headers)
                except WebhookVerificationError as exc:
                    with outer.lock:
                        outer.forged.append({"headers": headers, "error": str(exc)})
                    return self._answer(400, b"bad signature")
                message_id = headers["webhook-id"]
                with outer.lock:
                    planned = outer.plan[message_id]
                    answer = planned.pop(0) if planned else 200
                    outer.deliveries.append(
                        Delivery(message_id, int(headers["webhook-timestamp"]), headers, body, answer)
                    )
                if isinstance(answer, int):
                    return self._answer(answer, b"ok" if answer == 200 else b"try again later")
                kind, value = answer
                if kind == "slow":
                    time.sleep(value)
                    return self._answer(200, b"ok, late")
                if kind == "redirect":
                    return self._answer(302, b"", {"Location": value})
                if kind == "trickle":
                    return self._trickle(value)
                return self._big(value)

            def _answer(self, status, data, headers=None):
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                with contextlib.suppress(OSError):
                    self.wfile.write(data)

            def _trickle(self, seconds):
                self.send_response(200)
                self.send_header("Content-Length", str(int(seconds * 10)))
                self.end_headers()
                with contextlib.suppress(OSError):
                    for _ in range(int(seconds * 10)):
                        self.wfile.write(b"x")
                        self.wfile.flush()
                        time.sleep(0.1)

            def _big(self, size):
                self.send_response(200)
                self.send_header("Content-Length", str(size))
                self.end_headers()
                written, chunk = 0, b"x" * 65536
                try:
                    while written < size:
                        self.wfile.write(chunk)
                        written += len(chunk)
                except OSError:
                    pass
                with outer.lock:
                    outer.written.append(written)
                self.close_connection = True

        return Handler


_made = [0]


def messages(app, licences: int = 1, per_licence: int = 1, without_licence: int = 0, kind="licence.updated"):
    """Commit `per_licence` messages for each of `licences` new licences (each opened by a new registration) and
    `without_licence` messages of no licence, as their writers would; returns {licence pk or None: [message ids]}."""
    written: dict = {}
    with app.app_context():
        now = utcnow()
        for number in range(licences + (1 if without_licence else 0)):
            _made[0] += 1
            n = _made[0]
            reg = Registration(
                registration_id=f"reg-{n}",
                flow_token=f"flow-{n}",
                state="completed",
                lms_url="https://lms.school.example",
                price_id="price_registration",
                amount=4900,
                currency="eur",
                platform_id=f"platform-{n}",
            )
            db.session.add(reg)
            db.session.flush()
            licence_pk = None
            if number < licences:
                licence = Licence(registration_pk=reg.id, kind="payment", status="succeeded")
                db.session.add(licence)
                db.session.flush()
                reg.licence_pk = licence_pk = licence.id
            count = per_licence if number < licences else without_licence
            for seq in range(count):
                body = {
                    "type": kind,
                    "timestamp": iso(now),
                    "data": {
                        "registration_id": reg.registration_id,
                        "platform_id": reg.platform_id,
                        "licence": {
                            "status": "active",
                            "seq": seq,
                            "platforms": [{"id": reg.platform_id, "active": True}],
                        },
                    },
                }
                message_id = f"msg_{n}_{seq}"
                db.session.add(
                    VendorMessage(
                        message_id=message_id,
                        type=kind,
                        registration_pk=reg.id,
                        licence_pk=licence_pk,
                        payload=json.dumps(body, separators=(",", ":"), ensure_ascii=False),
                        status="pending",
                        attempts=0,
                        next_attempt_at=now,
                    )
                )
                db.session.flush()  # ids in the order written
                written.setdefault(licence_pk, []).append(message_id)
        db.session.commit()
    return written


def row(app, message_id: str) -> VendorMessage:
    with app.app_context():
        found = db.session.query(VendorMessage).filter_by(message_id=message_id).one()
        db.session.expunge(found)
        return found
