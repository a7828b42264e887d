"""Time the operator list and search at a million registrations on PostgreSQL (a script, not a test).

    .venv/bin/python scripts/bench_operator_list.py [--url postgresql+psycopg://...] [--rows 1000000]
                                                    [--runs 7] [--refill] [--explain]

Creates the database if missing, migrates it (`flask db upgrade`), fills it with fake registrations
(and one Checkout Session per paid one) by INSERT ... SELECT generate_series unless it already holds
--rows of them, then times, through the same query functions the operator views use, the first
page, a deep keyset page, each filter and each kind of search, and the rendered HTML pages through
the test client. Prints the median and the slowest of --runs runs, after one warm-up run.
"""

import argparse
import os
import re
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/paygate_bench"
BATCH = 100_000
CONFIG = {
    "app_env": "test",
    "ltiaas_url": "https://ltiaas.bench",
    "ltiaas_api_key": "bench-key",
    "stripe_secret_key": "sk_test_bench",
    "stripe_webhook_secret": "whsec_bench",
    "stripe_price_id": "price_bench",
    "public_url": "http://paygate.bench",
    "secret_key": "bench-secret",
    "operator_2fa": "off",  # the bench times the list pages, signed in with the password alone
}

FILL_REGISTRATIONS = """
INSERT INTO registrations (registration_id, flow_token, state, attention, lms_url, lms_family, lms_version,
    price_id, amount, currency, checkout_generation, payment_session_id, payment_intent_id, amount_paid,
    currency_paid, payer_email, paid_at, platform_id, completed_at, platform_active, attempt_count,
    attempt_uncertain, refund_id, refunded_at, created_at, updated_at)
SELECT 'R' || md5(i::text), md5(i::text || 'f') || md5(i::text || 'g'), state,
    CASE WHEN b < 5 THEN (ARRAY['completion_refused', 'completion_uncertain', 'completion_expired'])[1 + i % 3]
         WHEN b >= 140 AND i % 5000 = 0 THEN 'duplicate_payment' END,
    CASE WHEN f < 45 THEN 'https://school' || (i % 200000) || '.instructure.com'
         WHEN f < 75 THEN 'https://moodle.school' || (i % 200000) || '.edu'
         WHEN f < 85 THEN 'https://school' || (i % 200000) || '.brightspace.com'
         ELSE 'https://lms.school' || (i % 200000) || '.edu' END,
    family, CASE WHEN f < 45 THEN 'cloud' ELSE '4.' || (i % 5) END,
    'price_bench', 4900, 'usd', 1,
    CASE WHEN paid THEN 'cs_live_' || md5(i::text || 'cs') END,
    CASE WHEN paid THEN 'pi_' || substr(md5(i::text || 'pi'), 1, 24) END,
    CASE WHEN paid THEN 4900 END, CASE WHEN paid THEN 'usd' END,
    CASE WHEN paid THEN 'Admin' || (i % 300000) || '@School' || (i % 50000) || '.example' END,
    CASE WHEN paid THEN t + interval '2 minutes' END,
    CASE WHEN state IN ('completed', 'refunded') THEN 'P' || substr(md5(i::text || 'p'), 1, 18) END,
    CASE WHEN state IN ('completed', 'refunded') THEN t + interval '3 minutes' END,
    CASE WHEN state = 'completed' THEN true WHEN state = 'refunded' THEN false END,
    CASE WHEN paid THEN 1 ELSE 0 END, false,
    CASE WHEN state = 'refunded' THEN 're_' || substr(md5(i::text || 're'), 1, 24) END,
    CASE WHEN state = 'refunded' THEN t + interval '2 days' END,
    t, t
FROM (
    SELECT i, b, f, t,
        CASE WHEN b < 5 THEN 'needs_attention' WHEN b < 20 THEN 'paid' WHEN b < 40 THEN 'refunded'
             WHEN b < 50 THEN 'pending' WHEN b < 140 THEN 'abandoned' ELSE 'completed' END AS state,
        (b < 40 OR b >= 140) AS paid,
        CASE WHEN f < 45 THEN 'canvas' WHEN f < 75 THEN 'moodle' WHEN f < 85 THEN 'desire2learn'
             WHEN f < 93 THEN 'blackboard' WHEN f < 98 THEN 'sakai' ELSE 'schoology' END AS family
    FROM (SELECT i, (i * 7919) % 1000 AS b, i % 100 AS f,
                 timestamp '2023-06-01' + i * interval '90 seconds' AS t
          FROM generate_series(CAST(:start AS bigint), CAST(:stop AS bigint)) AS i) numbers
) rows
"""

FILL_SESSIONS = """
INSERT INTO checkout_sessions (session_id, registration_pk, generation, status, payment_status, url,
    expires_at, amount_total, currency, payment_intent_id, payer_email, created_at, updated_at)
SELECT payment_session_id, id, 1, 'complete', 'paid', NULL, created_at + interval '1 hour', 4900, 'usd',
       payment_intent_id, payer_email, created_at, created_at
FROM registrations WHERE payment_session_id IS NOT NULL AND id BETWEEN :start AND :stop
"""


def ensure_database(url: str) -> None:
    parsed = make_url(url)
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": parsed.database}).first() is None:
            conn.execute(text(f'CREATE DATABASE "{parsed.database}"'))
            print(f"created database {parsed.database}")
    admin.dispose()


def fill(db, rows: int, refill: bool) -> None:
    have = db.session.scalar(text("SELECT count(*) FROM registrations"))
    if have == rows and not refill:
        print(f"{have:,} registrations already there; not refilling (--refill to redo)")
        return
    print(f"filling {rows:,} registrations (had {have:,}) ...", flush=True)
    started = time.perf_counter()
    db.session.execute(
        text(
            "TRUNCATE timeline_entries, stripe_events, checkout_sessions, licence_payments, licences, "
            "registrations, operator_sessions, operators "
            "RESTART IDENTITY"
        )
    )
    db.session.commit()
    for start in range(1, rows + 1, BATCH):
        stop = min(start + BATCH - 1, rows)
        db.session.execute(text(FILL_REGISTRATIONS), {"start": start, "stop": stop})
        db.session.execute(text(FILL_SESSIONS), {"start": start, "stop": stop})
        db.session.commit()
        print(f"  {stop:>9,} rows, {time.perf_counter() - started:6.1f} s", flush=True)
    db.session.execute(text("ANALYZE registrations"))
    db.session.execute(text("ANALYZE checkout_sessions"))
    db.session.commit()
    print(f"filled in {time.perf_counter() - started:.1f} s")


def timed(fn, runs: int) -> tuple[float, float, object]:
    result = fn()  # warm-up
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), max(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL))
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--refill", action="store_true")
    parser.add_argument("--explain", action="store_true", help="print the PostgreSQL plan of each list query")
    args = parser.parse_args()
    if not args.url.startswith("postgresql"):
        sys.exit("this benchmark is for PostgreSQL")

    ensure_database(args.url)
    from flask_migrate import upgrade

    from paygate.application import create_app
    from paygate.core.db import db
    from paygate.core.models import Operator, Registration
    from paygate.web.operator import queries
    from paygate.web.operator.passwords import hash_password

    app = create_app({**CONFIG, "database_url": args.url})
    with app.app_context():
        upgrade()
        fill(db, args.rows, args.refill)

        # Real values to look for, picked once (not timed).
        def one(sql):
            return db.session.execute(text(sql)).first()

        paid = one(
            "SELECT id, registration_id, platform_id, payment_session_id, payment_intent_id, payer_email, "
            "lms_url FROM registrations WHERE state = 'completed' ORDER BY id LIMIT 1 OFFSET 654321"
        )
        deep = one("SELECT id FROM registrations ORDER BY created_at DESC, id DESC LIMIT 1 OFFSET 900000")
        deep_cursor = queries.encode_cursor(db.session.get(Registration, deep.id))
        month = ("2024-06-01", "2024-06-30")
        host = re.sub(r"^https://", "", paid.lms_url)
        db.session.rollback()

        cases = [
            ("list: first page", {}, None),
            ("list: deep keyset page (row 900,000)", {}, deep_cursor),
            ("filter: state=paid (1.5 %)", {"state": "paid"}, None),
            ("filter: state=needs_attention (0.5 %)", {"state": "needs_attention"}, None),
            ("filter: state=completed, deep page", {"state": "completed"}, deep_cursor),
            ("filter: family=canvas (45 %)", {"family": "canvas"}, None),
            ("filter: family=schoology (2 %)", {"family": "schoology"}, None),
            ("filter: family=schoology, deep page", {"family": "schoology"}, deep_cursor),
            ("filter: needs attention (0.5 %)", {"attention": "1"}, None),
            ("filter: created in June 2024", {"since": month[0], "until": month[1]}, None),
            (
                "filter: moodle + completed + June 2024",
                {"family": "moodle", "state": "completed", "since": month[0], "until": month[1]},
                None,
            ),
            ("search: payer e-mail (other case)", {"q": paid.payer_email.upper()}, None),
            ("search: LMS URL, full", {"q": paid.lms_url}, None),
            ("search: LMS URL, host prefix no scheme", {"q": host[:-4]}, None),
            ("search: LMS URL, broad prefix (30 %)", {"q": "https://moodle."}, None),
            ("search: platform id", {"q": paid.platform_id}, None),
            ("search: registration number", {"q": str(paid.id)}, None),
            ("search: LTIaaS registration id", {"q": paid.registration_id}, None),
            ("search: Checkout Session id", {"q": paid.payment_session_id}, None),
            ("search: payment intent id", {"q": paid.payment_intent_id}, None),
            ("search: no match", {"q": "nobody@nowhere.example"}, None),
        ]
        print(
            f"\n{args.rows:,} registrations; median and slowest of {args.runs} runs (after one warm-up), page size 50\n"
        )
        print(f"{'query':<44} {'rows':>5} {'median ms':>10} {'max ms':>8}")
        print("-" * 70)
        for name, filters_args, after in cases:
            filters = queries.Filters.from_args(filters_args)

            def run(filters=filters, after=after):
                page = queries.list_page(filters, after=after)
                db.session.rollback()
                return page

            median, worst, page = timed(run, args.runs)
            print(f"{name:<44} {len(page.items):>5} {median:>10.1f} {worst:>8.1f}", flush=True)
            if args.explain:
                explain(db, filters, after)

        median, worst, (rows, _count) = timed(lambda: queries.attention_preview(), args.runs)
        print(f"{'attention section (20 rows + capped count)':<44} {len(rows):>5} {median:>10.1f} {worst:>8.1f}")

        # The same through HTTP, rendered, as an operator's browser gets it.
        db.session.execute(text("DELETE FROM operators WHERE email = 'bench@vendor.example'"))
        db.session.add(
            Operator(
                email="bench@vendor.example",
                password_hash=hash_password("bench password 123"),
                password_set_at=db.func.current_timestamp(),
            )
        )
        db.session.commit()
    client = app.test_client()
    page = client.get("/operator/sign-in")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    assert (
        client.post(
            "/operator/sign-in",
            data={"email": "bench@vendor.example", "password": "bench password 123", "csrf_token": token},
        ).status_code
        == 303
    )
    for name, path in [
        ("HTTP GET /operator/ (rendered)", "/operator/"),
        ("HTTP GET /operator/?q=<payer e-mail>", f"/operator/?q={paid.payer_email}"),
        ("HTTP GET /operator/?family=sakai&state=paid", "/operator/?family=sakai&state=paid"),
        ("HTTP GET /operator/api/registrations", "/operator/api/registrations"),
        ("HTTP GET /operator/registrations/<id>", f"/operator/registrations/{paid.id}"),
    ]:

        def get(path=path):
            response = client.get(path)
            assert response.status_code == 200, response.status_code
            return response

        median, worst, _ = timed(get, args.runs)
        print(f"{name:<44} {'':>5} {median:>10.1f} {worst:>8.1f}")
    with app.app_context():
        db.session.execute(text("DELETE FROM operators WHERE email = 'bench@vendor.example'"))
        db.session.commit()
        db.engine.dispose()


def explain(db, filters, after) -> None:
    from sqlalchemy import select, tuple_
    from sqlalchemy.dialects import postgresql

    from paygate.core.models import Registration
    from paygate.web.operator import queries

    key = queries.decode_cursor(after)
    stmt = select(Registration.id).where(*queries.conditions(filters))
    if key:
        stmt = stmt.where(tuple_(Registration.created_at, Registration.id) < tuple_(*key))
    stmt = stmt.order_by(Registration.created_at.desc(), Registration.id.desc()).limit(51)
    sql = str(stmt.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
    for (line,) in db.session.execute(text("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) " + sql)):
        print("      " + line)
    db.session.rollback()


if __name__ == "__main__":
    main()
