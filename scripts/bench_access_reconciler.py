"""Time one access-reconciler pass at 100,000 licensed platforms on PostgreSQL (a script, not a test).

    .venv/bin/python scripts/bench_access_reconciler.py [--url postgresql+psycopg://...] [--db NAME]
                                                        [--rows 100000] [--changes 1000] [--runs 5]

Drops and recreates its own database (default paygate_bench_access; --db or BENCH_ACCESS_DB names
another, --url or BENCH_ACCESS_DATABASE_URL the server; a name without "bench" in it is refused),
migrates it through the app (`flask_migrate.upgrade()`), and fills it by INSERT ... SELECT
generate_series with --rows completed registrations, each with a licence (60 % payment succeeded,
30 % subscription active/past_due, 10 % invoice paid/open due in the future) and one licence
payment, its platform active at LTIaaS and its access wanted. Then --changes of them (1 %) need a
change: half have their payment refunded in full (access_wanted recomputed by paygate.licensing.access.refresh,
as the webhook would), half have an open invoice whose due date + grace has passed (only the
reconciler's clock review finds those). A fake LTIaaS on 127.0.0.1 answers activate/deactivate
with 200 at once.

It times ONE `paygate.licensing.reconciler.sync_pending(now)` (what the worker runs each pass), then, if differences
are left (reconciler.BATCH caps a pass), further passes until none is, and prints the numbers, whether
anything still differs, whether any registration that needed no change was touched, and the two
queries of a pass alone (EXPLAIN ANALYZE execution time, with work waiting and when idle).
"""

import argparse
import cProfile
import http.server
import io
import json
import logging
import os
import pstats
import re
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import requests
from sqlalchemy import create_engine, event, or_, select, text
from sqlalchemy.engine import make_url

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/paygate_bench_access"
# As tests/helpers/apps.py BASE_CONFIG (app_env "test"); ltiaas_url is the fake's, set below.
BASE_CONFIG = {
    "app_env": "test",
    "ltiaas_api_key": "ltiaas-secret-api-key",
    "stripe_secret_key": "sk_test_secret_key_for_tests",
    "stripe_webhook_secret": "whsec_test_secret",
    "stripe_price_id": "price_registration",
    "stripe_max_network_retries": 0,
    "public_url": "http://paygate.test",
    "secret_key": "test-secret-key",
    "ltiaas_timeout_seconds": 2.0,
}
# Every row's updated_at before the pass: a row the pass touched has another one.
UNTOUCHED = "2024-01-01 00:00:00"
FILL_CHUNK = 50_000

# One row per i. k (0..99, scrambled) picks the licence kind; i % step = 0 marks the rows that will
# need a change: refunded when (i / step) is even, an overdue invoice when odd.
ROWS = """
SELECT i, k, t,
    (i % :step = 0 AND (i / :step) % 2 = 0) AS refund,
    (i % :step = 0 AND (i / :step) % 2 = 1) AS overdue,
    CASE WHEN i % :step = 0 AND (i / :step) % 2 = 1 THEN 'invoice'
         WHEN k < 60 THEN 'payment' WHEN k < 90 THEN 'subscription' ELSE 'invoice' END AS kind,
    CASE WHEN i % :step = 0 AND (i / :step) % 2 = 1 THEN 'open'
         WHEN k < 60 THEN 'succeeded' WHEN k < 85 THEN 'active' WHEN k < 90 THEN 'past_due'
         WHEN k < 95 OR (i % :step = 0) THEN 'paid' ELSE 'open' END AS status,
    CASE WHEN i % :step = 0 AND (i / :step) % 2 = 1 THEN CAST(:now AS timestamp) - interval '30 days'
         WHEN k >= 95 AND i % :step <> 0 THEN date_trunc('second', CAST(:now AS timestamp))
              + (1 + i % 60) * interval '1 day'
    END AS due_at
FROM (SELECT i, ((hashint4(i::int)::bigint % 100) + 100) % 100 AS k,
             timestamp '2023-01-01' + i * interval '5 minutes' AS t
      FROM generate_series(CAST(:start AS bigint), CAST(:stop AS bigint)) AS i) numbers
"""

FILL_REGISTRATIONS = f"""
INSERT INTO registrations (id, registration_id, flow_token, state, lms_url, lms_family, lms_version,
    price_id, amount, currency, checkout_generation, payment_session_id, payment_intent_id, amount_paid,
    currency_paid, payer_email, paid_at, platform_id, completed_at, platform_active, attempt_count,
    attempt_uncertain, access_wanted, access_reason, access_review_at, access_attempts, created_at, updated_at)
SELECT i, 'R' || md5(i::text), md5(i::text || 'f') || md5(i::text || 'g'), 'completed',
    'https://school' || i || '.instructure.com', 'canvas', 'cloud',
    'price_registration', 4900, 'usd', 1, 'cs_live_' || md5(i::text || 'cs'),
    'pi_' || substr(md5(i::text || 'pi'), 1, 24), 4900, 'usd', 'admin' || i || '@school.example',
    t + interval '2 minutes', 'P' || substr(md5(i::text || 'p'), 1, 18), t + interval '3 minutes', true, 1,
    false, true,
    CASE kind WHEN 'payment' THEN 'paid'
              WHEN 'subscription' THEN 'subscription ' || status
              ELSE CASE status WHEN 'paid' THEN 'invoice INV-' || i || ' paid'
                               ELSE 'invoice INV-' || i || ' open, due ' || to_char(due_at, 'YYYY-MM-DD') END END,
    due_at + CAST(:grace AS integer) * interval '1 day', 0, t, TIMESTAMP '{UNTOUCHED}'
FROM ({ROWS}) rows
"""

FILL_LICENCES = f"""
INSERT INTO licences (id, registration_pk, kind, status, customer_id, subscription_id, invoice_id, period_end,
    due_at, first_paid_at, currency, invoice_number, amount_due, amount_remaining, invoice_sent_at,
    dispute_open, checked_at, created_at, updated_at)
SELECT i, i, kind, status, 'cus_' || substr(md5(i::text || 'c'), 1, 14),
    CASE WHEN kind = 'subscription' THEN 'sub_' || substr(md5(i::text || 's'), 1, 24) END,
    CASE WHEN kind = 'invoice' THEN 'in_' || substr(md5(i::text || 'in'), 1, 24) END,
    CASE WHEN kind = 'subscription' THEN CAST(:now AS timestamp) + (1 + i % 300) * interval '1 day' END,
    due_at, CASE WHEN status <> 'open' THEN t + interval '2 minutes' END, 'usd',
    CASE WHEN kind = 'invoice' THEN 'INV-' || i END,
    CASE WHEN kind = 'invoice' THEN 4900 END,
    CASE WHEN kind = 'invoice' THEN CASE WHEN status = 'open' THEN 4900 ELSE 0 END END,
    CASE WHEN kind = 'invoice' THEN t END, false, t, t, TIMESTAMP '{UNTOUCHED}'
FROM ({ROWS}) rows
"""
# Each licence holds the platform of the registration that opened it (same ids).
LINK_LICENCES = "UPDATE registrations SET licence_pk = id WHERE id BETWEEN :start AND :stop"

FILL_PAYMENTS = f"""
INSERT INTO licence_payments (id, licence_pk, registration_pk, payment_intent_id, charge_id, invoice_id, amount,
    currency, paid_at, amount_refunded, created_at, updated_at)
SELECT i, i, i, 'pi_' || substr(md5(i::text || 'pi'), 1, 24), 'ch_' || substr(md5(i::text || 'ch'), 1, 24),
    CASE WHEN kind = 'invoice' THEN 'in_' || substr(md5(i::text || 'in'), 1, 24) END, 4900, 'usd',
    CASE WHEN status <> 'open' THEN t + interval '2 minutes' END, 0, t, TIMESTAMP '{UNTOUCHED}'
FROM ({ROWS}) rows
"""


class FakeLtiaas(http.server.ThreadingHTTPServer):
    """POST {platforms}/{id}/activate|deactivate -> 200 (after --latency-ms); GET /_calls -> counts per path.

    Runs in its own process (`--serve-fake-ltiaas`), so that it does not share the pass's GIL.
    """

    daemon_threads = True

    def __init__(self, latency: float):
        self.calls: Counter = Counter()
        self.lock = threading.Lock()
        self.latency = latency
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: requests.Session reuses the connection, as with LTIaaS
    # Headers and body leave in two writes; with Nagle on, the body waits for the client's delayed ACK
    # (~40 ms a call on Linux), which would time this fake, not the app.
    disable_nagle_algorithm = True

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        with self.server.lock:
            body = json.dumps(dict(self.server.calls)).encode()
        self._answer(200 if self.path == "/_calls" else 404, body)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        with self.server.lock:
            self.server.calls[self.path] += 1
        if self.server.latency:
            time.sleep(self.server.latency)
        ok = re.fullmatch(r"/admin/platforms/[^/]+/(activate|deactivate)", self.path) is not None
        self._answer(200 if ok else 404, b"{}" if ok else b'{"error": "not found"}')

    def log_message(self, *args):
        pass


def serve_fake_ltiaas(latency_ms: float) -> None:
    server = FakeLtiaas(latency_ms / 1000)
    print(server.server_address[1], flush=True)
    server.serve_forever()


class FakeLtiaasProcess:
    def __init__(self, latency_ms: float):
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--serve-fake-ltiaas", "--latency-ms", str(latency_ms)],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.url = f"http://127.0.0.1:{int(self.proc.stdout.readline())}"
        self._http = requests.Session()

    def calls(self) -> Counter:
        return Counter(self._http.get(self.url + "/_calls", timeout=5).json())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=5)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a local process has used so far (Linux /proc), or NaN."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def recreate_database(url: str) -> None:
    parsed = make_url(url)
    if "bench" not in parsed.database:
        sys.exit(f"refusing to drop database {parsed.database!r}: its name has no 'bench' in it")
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{parsed.database}"'))
    admin.dispose()


def fill(db, rows: int, step: int, now, grace: int) -> None:
    for start in range(1, rows + 1, FILL_CHUNK):
        params = {"start": start, "stop": min(start + FILL_CHUNK - 1, rows), "step": step, "now": now, "grace": grace}
        for sql in (FILL_REGISTRATIONS, FILL_LICENCES, LINK_LICENCES, FILL_PAYMENTS):
            db.session.execute(text(sql), params)
        db.session.commit()
    for table in ("registrations", "licences", "licence_payments"):
        db.session.execute(
            text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
        )
    db.session.commit()


def vacuum_analyze(db) -> None:
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in ("registrations", "licences", "licence_payments", "timeline_entries"):
            conn.execute(text(f"VACUUM ANALYZE {table}"))


def check_decide_agrees(db, app, now, step: int, sample: int = 400) -> int:
    """The stored access of a sample of rows (every kind, and every changed one) is what decide says."""
    from paygate.core.models import Licence, Registration
    from paygate.licensing import access

    settings = app.config["SETTINGS"]
    ids = db.session.scalars(
        select(Registration.id).where(text(f"id % {max(1, 100_000 // sample)} = 7 OR id % {step} = 0"))
    ).all()
    wrong = 0
    for pk in ids:
        reg = db.session.get(Registration, pk)
        licence = db.session.scalars(select(Licence).where(Licence.registration_pk == pk)).first()
        d = access.decide(licence, reg.access_override, now, settings)
        if (d.active, d.reason, d.review_at) != (reg.access_wanted, reg.access_reason, reg.access_review_at):
            wrong += 1
            if wrong <= 3:
                print(
                    f"  MISMATCH id {pk}: stored {(reg.access_wanted, reg.access_reason, reg.access_review_at)} "
                    f"decide {(d.active, d.reason, d.review_at)}"
                )
    db.session.rollback()
    return wrong


def pass_queries(now, limit):
    """The pass's two queries, built as paygate/licensing/access.py review_due() and pending() build them."""
    from paygate.core.models import ACCESS_DIFFERS, Registration
    from paygate.licensing import reconciler

    review = (
        select(Registration.id)
        .where(Registration.access_review_at <= now)
        .order_by(Registration.access_review_at)
        .limit(limit)
    )
    stale = now - reconciler._stale_bound()
    pending = (
        select(Registration.id)
        .where(
            text(ACCESS_DIFFERS),
            or_(Registration.access_next_at.is_(None), Registration.access_next_at <= now),
            or_(Registration.access_claimed_at.is_(None), Registration.access_claimed_at < stale),
        )
        .order_by(Registration.id)
        .limit(limit)
    )
    return {"review query": review, "pending query": pending}


def explain_times(db, stmt, runs: int) -> tuple[float, float, int, str]:
    """Median EXPLAIN ANALYZE execution and planning time (ms) of `runs` runs after one warm-up; rows; plan."""
    from sqlalchemy.dialects import postgresql

    sql = str(stmt.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
    execs, plans, rows, plan = [], [], 0, ""
    for n in range(runs + 1):
        lines = [line for (line,) in db.session.execute(text("EXPLAIN (ANALYZE, BUFFERS) " + sql))]
        db.session.rollback()
        if n == 0:
            plan = "\n".join(
                "      " + line for line in lines if not line.startswith(("Planning Time", "Execution Time"))
            )
            top = re.search(r"actual time=[\d.]+\.\.[\d.]+ rows=(\d+)", lines[0])
            rows = int(top.group(1)) if top else -1
            continue
        for line in lines:
            if m := re.match(r"Execution Time: ([\d.]+) ms", line):
                execs.append(float(m.group(1)))
            if m := re.match(r"Planning Time: ([\d.]+) ms", line):
                plans.append(float(m.group(1)))
    return statistics.median(execs), statistics.median(plans), rows, plan


class SqlMeter:
    """Counts and times the statements and commits of the engine while on (Python-side wall time)."""

    def __init__(self, engine):
        self.on = False
        self.count = 0
        self.seconds = 0.0
        self.commits = 0
        self.commit_seconds = 0.0
        self._commit_started = None
        self.named: dict[str, list[float]] = {"review query": [], "pending query": []}
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)
        event.listen(engine, "commit", self._commit)

    def watch(self, session_factory):
        event.listen(session_factory, "after_commit", self._committed)

    def _before(self, conn, cursor, statement, params, context, executemany):
        conn.info["bench_started"] = time.perf_counter()

    def _after(self, conn, cursor, statement, params, context, executemany):
        if not self.on:
            return
        took = time.perf_counter() - conn.info.pop("bench_started", time.perf_counter())
        self.count += 1
        self.seconds += took
        flat = " ".join(statement.split())
        if flat.startswith("SELECT registrations.id FROM registrations"):
            if "access_review_at <=" in flat:
                self.named["review query"].append(took)
            elif "platform_active <> access_wanted" in flat:
                self.named["pending query"].append(took)

    def _commit(self, conn):
        if self.on:
            self.commits += 1
            self._commit_started = time.perf_counter()

    def _committed(self, session):
        if self.on and self._commit_started is not None:
            self.commit_seconds += time.perf_counter() - self._commit_started
        self._commit_started = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("BENCH_ACCESS_DATABASE_URL", DEFAULT_URL))
    parser.add_argument("--db", default=os.environ.get("BENCH_ACCESS_DB"), help="database name (overrides --url's)")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--changes", type=int, default=1_000, help="rows needing a change (even, divides --rows)")
    parser.add_argument("--runs", type=int, default=5, help="EXPLAIN ANALYZE runs per query (median)")
    parser.add_argument("--max-passes", type=int, default=20)
    parser.add_argument("--show-log", action="store_true", help="let the app's log lines through to stderr")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="the fake LTIaaS waits this long per call")
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="profile pass 1 (cProfile) and print its N costliest functions",
    )
    parser.add_argument("--serve-fake-ltiaas", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_fake_ltiaas:
        return serve_fake_ltiaas(args.latency_ms)
    url = make_url(args.url)
    if args.db:
        url = url.set(database=args.db)
    if url.get_backend_name() != "postgresql":
        sys.exit("this benchmark is for PostgreSQL")
    if args.changes <= 0 or args.rows % args.changes or args.changes % 2:
        sys.exit("--changes must be even and divide --rows")
    step = args.rows // args.changes
    url_text = url.render_as_string(hide_password=False)
    started_all = time.perf_counter()

    server = FakeLtiaasProcess(args.latency_ms)

    recreate_database(url_text)
    from flask_migrate import upgrade

    from paygate.application import create_app
    from paygate.core.db import db, utcnow
    from paygate.core.models import ACCESS_DIFFERS, Registration
    from paygate.licensing import access, reconciler

    app = create_app({**BASE_CONFIG, "database_url": url_text, "ltiaas_url": server.url})
    if not args.show_log:  # the worker's lines are still formatted and written, to /dev/null
        devnull = open(os.devnull, "w")  # noqa: SIM115 - open while the process logs, to its end
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(devnull)
    settings = app.config["SETTINGS"]
    print(
        f"database {url.database} on {url.host}:{url.port} (dropped and recreated); "
        f"fake LTIaaS at {server.url} (own process, {args.latency_ms:g} ms per call); "
        f"reconciler.BATCH = {reconciler.BATCH}; CPUs {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}"
    )

    with app.app_context():
        t = time.perf_counter()
        upgrade()
        print(f"migrated in {time.perf_counter() - t:.1f} s", flush=True)

        now = utcnow()
        t = time.perf_counter()
        fill(db, args.rows, step, now, settings.licence_grace_days)
        print(
            f"filled {args.rows:,} registrations + licences + licence payments in {time.perf_counter() - t:.1f} s",
            flush=True,
        )

        # Half the changes: a payment refunded in full, the access decided again as the webhook does.
        t = time.perf_counter()
        db.session.execute(
            text(
                "UPDATE licence_payments SET amount_refunded = amount, refund_id = 're_' || substr(md5(id::text), 1, "
                "24), refund_status = 'succeeded', updated_at = :now WHERE registration_pk % :step = 0 AND "
                "(registration_pk / :step) % 2 = 0"
            ),
            {"now": now, "step": step},
        )
        refunded = db.session.scalars(
            select(Registration.id).where(text("id % :step = 0 AND (id / :step) % 2 = 0")).order_by(Registration.id),
            {"step": step},
        ).all()
        flipped = 0
        for pk in refunded:
            flipped += access.refresh(db.session.get(Registration, pk), "bench: charge.refunded", now)
        db.session.commit()
        print(
            f"refunded {len(refunded)} payments in full; access.refresh turned {flipped} to inactive in "
            f"{time.perf_counter() - t:.1f} s",
            flush=True,
        )

        t = time.perf_counter()
        vacuum_analyze(db)
        print(f"VACUUM ANALYZE in {time.perf_counter() - t:.1f} s", flush=True)

        check_now = utcnow()
        wrong = check_decide_agrees(db, app, check_now, step)
        # The overdue invoices are the rows decide now disagrees with (by design: only the clock review
        # can find them), so "wrong" counts exactly those among the sample.
        overdue_expected = args.changes // 2
        print(
            f"stored access vs access.decide on a sample incl. every changed row: "
            f"{wrong} differ (expected {overdue_expected}: the overdue invoices, for the clock review)"
        )

        def scalar(sql, **params):
            value = db.session.scalar(text(sql), params)
            db.session.rollback()
            return value

        differs_before = scalar(f"SELECT count(*) FROM registrations WHERE {ACCESS_DIFFERS}")
        due_before = scalar("SELECT count(*) FROM registrations WHERE access_review_at <= :now", now=check_now)
        timeline_before = scalar("SELECT count(*) FROM timeline_entries")
        changed_sql = "id % :step = 0"

        # The pass's two queries alone, with its work waiting.
        before_q = {}
        for name, stmt in pass_queries(check_now, reconciler.BATCH).items():
            before_q[name] = explain_times(db, stmt, args.runs)

        meter = SqlMeter(db.engine)
        meter.watch(db.session)
        passes, named, cpus, profile_text = [], [], [], ""
        for n in range(args.max_passes):
            pass_now = utcnow()
            calls_before = sum(server.calls().values())
            backends = db.session.scalars(
                text(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                    "AND backend_type = 'client backend'"
                )
            ).all()
            db.session.rollback()
            cpu_before = (time.process_time(), sum(cpu_seconds(b) for b in backends), cpu_seconds(server.proc.pid))
            profiler = cProfile.Profile() if args.profile and n == 0 else None
            meter.on = True
            t = time.perf_counter()
            if profiler:
                profiler.enable()
            counts = reconciler.sync_pending(pass_now)
            if profiler:
                profiler.disable()
            took = time.perf_counter() - t
            meter.on = False
            cpu = (
                time.process_time() - cpu_before[0],
                sum(cpu_seconds(b) for b in backends) - cpu_before[1],
                cpu_seconds(server.proc.pid) - cpu_before[2],
            )
            cpus.append((cpu, len(backends), os.getloadavg()[0]))
            if profiler:
                out = io.StringIO()
                pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(args.profile)
                profile_text = out.getvalue()
            passes.append(
                (
                    took,
                    sum(server.calls().values()) - calls_before,
                    counts,
                    meter.count,
                    meter.commits,
                    meter.seconds,
                    meter.commit_seconds,
                )
            )
            named.append({k: list(v) for k, v in meter.named.items()})
            left = scalar(f"SELECT count(*) FROM registrations WHERE {ACCESS_DIFFERS}") + scalar(
                "SELECT count(*) FROM registrations WHERE access_review_at <= :now", now=utcnow()
            )
            if not left:
                break
            meter.count = meter.commits = 0
            meter.seconds = meter.commit_seconds = 0.0
            for v in meter.named.values():
                v.clear()

        # The same two queries when nothing is left: what every idle worker pass pays.
        after_q = {}
        idle_now = utcnow()
        for name, stmt in pass_queries(idle_now, reconciler.BATCH).items():
            after_q[name] = explain_times(db, stmt, args.runs)

        differs_after = scalar(f"SELECT count(*) FROM registrations WHERE {ACCESS_DIFFERS}")
        due_after = scalar("SELECT count(*) FROM registrations WHERE access_review_at <= :now", now=idle_now)
        changed_ok = scalar(
            f"SELECT count(*) FROM registrations WHERE {changed_sql} AND platform_active = false "
            "AND access_wanted = false AND access_claimed_at IS NULL AND access_attempts = 0",
            step=step,
        )
        touched = scalar(
            f"SELECT count(*) FROM registrations WHERE NOT ({changed_sql}) AND "
            f"(updated_at <> TIMESTAMP '{UNTOUCHED}' OR platform_active IS DISTINCT FROM true "
            "OR access_wanted IS DISTINCT FROM true OR access_claimed_at IS NOT NULL "
            "OR access_attempts <> 0)",
            step=step,
        )
        touched_licences = scalar(f"SELECT count(*) FROM licences WHERE updated_at <> TIMESTAMP '{UNTOUCHED}'")
        timeline_foreign = scalar(
            "SELECT count(*) FROM timeline_entries WHERE NOT (registration_pk % :step = 0)", step=step
        )
        timeline_after = scalar("SELECT count(*) FROM timeline_entries")
        changed_platforms = set(
            db.session.scalars(select(Registration.platform_id).where(text(changed_sql)), {"step": step}).all()
        )
        db.session.rollback()
        db.engine.dispose()
    all_calls = server.calls()
    server.stop()

    called = {re.match(r"/admin/platforms/([^/]+)/", p).group(1): n for p, n in all_calls.items()}
    deactivations = sum(n for p, n in all_calls.items() if p.endswith("/deactivate"))
    foreign_calls = sum(n for pid, n in called.items() if pid not in changed_platforms)
    repeated = sum(1 for n in called.values() if n > 1)
    first, total_calls = passes[0], sum(p[1] for p in passes)
    total_time = sum(p[0] for p in passes)

    print()
    print(f"rows (completed registrations with a licence)       {args.rows:>10,}")
    print(
        f"rows needing a change                                {args.changes:>10,}"
        f"   ({args.changes // 2} refunded: differ already; {args.changes // 2} invoices overdue: "
        "for the clock review)"
    )
    print(f"  before the pass: ACCESS_DIFFERS rows {differs_before}, access_review_at <= now rows {due_before}")
    print()
    print("ONE pass: reconciler.sync_pending(now)")
    print(f"  duration                                           {first[0]:>10.3f} s")
    print(f"  LTIaaS calls made                                  {first[1]:>10,}")
    print(f"  calls per second                                   {first[1] / first[0]:>10.1f}")
    print(f"  returned                                           {first[2]}")
    print(f"  SQL statements, their time (Python round trips)    {first[3]:>10,}   {first[5]:.3f} s")
    print(f"  commits, their time                                {first[4]:>10,}   {first[6]:.3f} s")
    print(f"  the rest (LTIaaS HTTP, ORM, Python)                {first[0] - first[5] - first[6]:>10.3f} s")
    (py_cpu, pg_cpu, fake_cpu), n_backends, load_after = cpus[0]
    print(
        f"  CPU used: this process {py_cpu:.2f} s, PostgreSQL backend(s) ({n_backends}) {pg_cpu:.2f} s, "
        f"fake LTIaaS {fake_cpu:.2f} s; sum {py_cpu + pg_cpu + fake_cpu:.2f} s "
        f"(load average after the pass {load_after:.2f})"
    )
    if len(passes) > 1:
        print()
        print(f"passes needed until nothing differs: {len(passes)}")
        for n, (took, calls, counts, stmts, commits, sql_s, commit_s) in enumerate(passes, 1):
            print(
                f"  pass {n}: {took:7.3f} s, {calls:5,} calls, {stmts:6,} statements ({sql_s:.3f} s), "
                f"{commits:5,} commits ({commit_s:.3f} s)  {counts}"
            )
        print(f"  all passes: {total_time:.3f} s, {total_calls:,} calls, {total_calls / total_time:.1f} calls/s")
    print()
    print(
        f"after: ACCESS_DIFFERS rows                           {differs_after:>10}   "
        f"({'OK: nothing differs' if differs_after == 0 else 'NOT OK'})"
    )
    print(f"after: access_review_at <= now rows                  {due_after:>10}")
    print(f"after: changed rows now inactive at LTIaaS, settled  {changed_ok:>10,} of {args.changes:,}")
    print(
        f"after: rows needing no change that were touched      {touched:>10}   "
        f"({'OK' if touched == 0 else 'NOT OK'}; updated_at, platform_active, access_*, claim)"
    )
    print(f"after: licences touched                              {touched_licences:>10}")
    print(
        f"after: timeline entries (before -> after)            {timeline_before:>5,} -> {timeline_after:,}"
        f"   ({timeline_foreign} on rows needing no change)"
    )
    print(
        f"LTIaaS: deactivate calls {deactivations:,}, activate calls {total_calls - deactivations:,}, "
        f"platforms called {len(called):,}, called more than once {repeated}, "
        f"calls for platforms needing no change {foreign_calls}"
    )
    print()
    print(
        f"the pass's two queries alone (EXPLAIN ANALYZE, median of {args.runs} after a warm-up; "
        "and as timed from Python inside the pass):"
    )
    for name in ("review query", "pending query"):
        inside = ", ".join(f"{s * 1000:.2f}" for s in named[0][name]) or "-"
        b_exec, b_plan, b_rows, _ = before_q[name]
        a_exec, a_plan, a_rows, _ = after_q[name]
        print(
            f"  {name:<14} with work waiting: {b_exec:7.3f} ms execution ({b_plan:.3f} ms planning), "
            f"{b_rows} rows | idle: {a_exec:7.3f} ms ({a_plan:.3f} ms planning), {a_rows} rows"
        )
        print(f"  {'':<14} inside pass 1 (round trip, ms): {inside}")
    for name in ("review query", "pending query"):
        print(f"  plan of the {name} with work waiting:")
        print(before_q[name][3])
    if profile_text:
        print()
        print("pass 1 under cProfile (so slower than timed above; the profiled pass is the one timed):")
        print(profile_text.rstrip())
    print()
    print(
        f"target one pass < 5 s: {'MET' if first[0] < 5 else 'MISSED'} ({first[0]:.3f} s); "
        f"whole script {time.perf_counter() - started_all:.0f} s"
    )


if __name__ == "__main__":
    main()
