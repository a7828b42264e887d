"""Time the vendor outbox's sender over 10,000 pending messages on PostgreSQL (a script, not a test).

    .venv/bin/python scripts/bench_vendor_outbox.py [--url postgresql+psycopg://...] [--db NAME]
                                                    [--messages 10000] [--licences 1000] [--latency-ms 0]

Drops and recreates its own database (default paygate_bench_vendor_outbox; --db or BENCH_OUTBOX_DB names
another, --url or BENCH_OUTBOX_DATABASE_URL the server; a name without "bench" in it is refused), migrates it
through the app (`flask_migrate.upgrade()`), and writes --licences completed registrations, each with its licence,
and --messages pending `licence.updated` messages spread over them (as paygate/licensing/vendor_events.py writes
them: one body each, its id `msg_...`). The vendor's endpoint is a threaded HTTP server in its own process (so that
it does not share the sender's GIL) that verifies every delivery with `standardwebhooks` and the secret, and
answers 200 after --latency-ms.

It calls `paygate.ops.vendor_outbox.deliver_due()` (what the worker runs each pass) until nothing is due, and
prints the elapsed seconds, messages per second, and whether every message arrived exactly once, verified, and
in order per licence. The goal: under 60 s for 10,000 messages on a 2-core machine.
"""

import argparse
import base64
import http.server
import json
import logging
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import requests
from sqlalchemy import create_engine, insert, text
from sqlalchemy.engine import make_url

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/paygate_bench_vendor_outbox"
SECRET = "whsec_" + base64.b64encode(b"the vendor's secret of the bench").decode()
# As tests/helpers/apps.py BASE_CONFIG (app_env "test"); the endpoint's URL is set below.
BASE_CONFIG = {
    "app_env": "test",
    "ltiaas_url": "http://127.0.0.1:9",
    "ltiaas_api_key": "ltiaas-secret-api-key",
    "stripe_secret_key": "sk_test_secret_key_for_tests",
    "stripe_webhook_secret": "whsec_test_secret",
    "stripe_price_id": "price_registration",
    "stripe_max_network_retries": 0,
    "public_url": "http://paygate.test",
    "secret_key": "test-secret-key",
    "vendor_webhook_secret": SECRET,
}

FILL_REGISTRATIONS = """
INSERT INTO registrations (id, registration_id, flow_token, state, lms_url, price_id, amount, currency,
    checkout_generation, platform_id, attempt_count, attempt_uncertain, access_attempts, created_at, updated_at)
SELECT i, 'R' || md5(i::text), md5(i::text || 'f') || md5(i::text || 'g'), 'completed',
    'https://school' || i || '.example', 'price_registration', 4900, 'usd', 1, 'P' || substr(md5(i::text), 1, 18),
    1, false, 0, now(), now()
FROM generate_series(1, :licences) AS i
"""
FILL_LICENCES = """
INSERT INTO licences (id, registration_pk, kind, status, dispute_open, invoicing_attempt, created_at, updated_at)
SELECT i, i, 'payment', 'succeeded', false, 0, now(), now() FROM generate_series(1, :licences) AS i
"""
LINK_LICENCES = "UPDATE registrations SET licence_pk = id"


class Endpoint(http.server.ThreadingHTTPServer):
    """POST: verified with standardwebhooks, then 200 (after the latency); GET /_received: the ids in the order
    received, and the tries whose signature failed."""

    daemon_threads = True
    request_queue_size = 256

    def __init__(self, latency: float):
        from standardwebhooks.webhooks import Webhook

        self.webhook = Webhook(SECRET)
        self.received: list[str] = []
        self.forged = 0
        self.lock = threading.Lock()
        self.latency = latency
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the sender's pooled session expects
    disable_nagle_algorithm = True  # headers and body in two writes: no delayed-ACK wait per try

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        with self.server.lock:
            body = json.dumps({"received": self.server.received, "forged": self.server.forged}).encode()
        self._answer(200, body)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            self.server.webhook.verify(body, {k.lower(): v for k, v in self.headers.items()}, json_parse=False)
        except Exception:  # noqa: BLE001 - any refusal: counted, answered 400
            with self.server.lock:
                self.server.forged += 1
            return self._answer(400, b'{"error": "signature"}')
        if self.server.latency:
            time.sleep(self.server.latency)
        with self.server.lock:
            self.server.received.append(self.headers["webhook-id"])
        self._answer(200, b"{}")

    def log_message(self, *args):
        pass


def serve_endpoint(latency_ms: float) -> None:
    server = Endpoint(latency_ms / 1000)
    print(server.server_address[1], flush=True)
    server.serve_forever()


def recreate_database(url: str) -> None:
    parsed = make_url(url)
    if "bench" not in parsed.database:
        sys.exit(f"refusing to drop database {parsed.database!r}: its name has no 'bench' in it")
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{parsed.database}"'))
    admin.dispose()


def seed(db, VendorMessage, messages: int, licences: int, now) -> dict[int, list[str]]:
    """The registrations, licences and messages (message n on licence n % licences + 1); returns each licence's
    message ids in the order written."""
    for sql in (FILL_REGISTRATIONS, FILL_LICENCES, LINK_LICENCES):
        db.session.execute(text(sql), {"licences": licences})
    for table in ("registrations", "licences"):
        db.session.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), {licences})"))
    order: dict[int, list[str]] = {}
    rows = []
    for n in range(messages):
        licence = n % licences + 1
        message_id = f"msg_{licence}_{n // licences}"
        body = {
            "type": "licence.updated",
            "timestamp": f"{now:%Y-%m-%dT%H:%M:%S}Z",
            "data": {
                "registration_id": "R" + str(licence),
                "platform_id": "P" + str(licence),
                "licence": {
                    "status": "active",
                    "kind": "payment",
                    "platforms": [{"id": "P" + str(licence), "active": True}],
                },
            },
        }
        rows.append(
            {
                "message_id": message_id,
                "type": "licence.updated",
                "registration_pk": licence,
                "licence_pk": licence,
                "payload": json.dumps(body, separators=(",", ":"), ensure_ascii=False),
                "status": "pending",
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
        )
        order.setdefault(licence, []).append(message_id)
    db.session.execute(insert(VendorMessage), rows)
    db.session.commit()
    db.session.execute(text("ANALYZE vendor_messages"))
    db.session.commit()
    return order


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("BENCH_OUTBOX_DATABASE_URL", DEFAULT_URL))
    parser.add_argument("--db", default=os.environ.get("BENCH_OUTBOX_DB"), help="database name (overrides --url's)")
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--licences", type=int, default=1_000)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="the endpoint waits this long per delivery")
    parser.add_argument("--show-log", action="store_true", help="let the app's log lines through to stderr")
    parser.add_argument("--serve-endpoint", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_endpoint:
        return serve_endpoint(args.latency_ms)
    url = make_url(args.url)
    if args.db:
        url = url.set(database=args.db)
    if url.get_backend_name() != "postgresql":
        sys.exit("this benchmark is for PostgreSQL")
    url_text = url.render_as_string(hide_password=False)

    endpoint = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--serve-endpoint", "--latency-ms", str(args.latency_ms)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        endpoint_url = f"http://127.0.0.1:{int(endpoint.stdout.readline())}"
        run(args, url, url_text, endpoint_url)
    finally:
        endpoint.terminate()
        endpoint.wait(timeout=5)


def run(args, url, url_text: str, endpoint_url: str) -> None:
    recreate_database(url_text)
    from flask_migrate import upgrade

    from paygate.application import create_app
    from paygate.core.db import db, utcnow
    from paygate.core.models import VendorMessage
    from paygate.ops import vendor_outbox

    app = create_app({**BASE_CONFIG, "database_url": url_text, "vendor_webhook_url": endpoint_url + "/events"})
    if not args.show_log:  # the sender's lines are still formatted and written, to /dev/null
        devnull = open(os.devnull, "w")  # noqa: SIM115 - open while the process logs, to its end
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(devnull)
    print(
        f"database {url.database} on {url.host}:{url.port} (dropped and recreated); endpoint at {endpoint_url} "
        f"(own process, {args.latency_ms:g} ms per delivery); {vendor_outbox.SENDS_AT_ONCE} sends at once, "
        f"{vendor_outbox.CLAIM_BATCH} claimed at once; CPUs {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}"
    )
    with app.app_context():
        upgrade()
        t = time.perf_counter()
        order = seed(db, VendorMessage, args.messages, args.licences, utcnow())
        print(f"seeded {args.messages} messages over {args.licences} licences in {time.perf_counter() - t:.1f} s")

        started, calls, totals = time.perf_counter(), 0, {"delivered": 0, "failed_tries": 0, "gave_up": 0}
        while True:
            counts = vendor_outbox.deliver_due()
            calls += 1
            for key, value in counts.items():
                totals[key] += value
            if not any(counts.values()):
                break
        elapsed = time.perf_counter() - started
        pending = db.session.scalar(text("SELECT count(*) FROM vendor_messages WHERE status <> 'delivered'"))

    answer = requests.get(endpoint_url + "/_received", timeout=30).json()
    received = answer["received"]
    once = len(received) == len(set(received)) == args.messages
    position = {message_id: index for index, message_id in enumerate(received)}
    in_order = all(
        [position.get(m, -1) for m in ids] == sorted(position.get(m, -1) for m in ids) for ids in order.values()
    )
    print(
        f"delivered {totals['delivered']} in {elapsed:.2f} s ({totals['delivered'] / elapsed:.0f} messages/s) over "
        f"{calls} call(s) of deliver_due; failed tries {totals['failed_tries']}, given up {totals['gave_up']}, "
        f"left undelivered {pending}"
    )
    print(
        f"endpoint: {len(received)} received, {len(set(received))} distinct ids, "
        f"{answer['forged']} refused signatures; "
        f"every message once: {'yes' if once else 'NO'}; in order per licence: {'yes' if in_order else 'NO'}; "
        f"under 60 s: {'yes' if elapsed < 60 else 'NO'}"
    )
    if not (once and in_order and answer["forged"] == 0 and pending == 0):
        sys.exit(1)


if __name__ == "__main__":
    main()
