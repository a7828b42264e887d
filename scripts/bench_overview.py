"""Time the operators' overview at a million registrations on PostgreSQL (a script, not a test).

    .venv/bin/python scripts/bench_overview.py [--url postgresql+psycopg://...] [--rows 1000000] [--runs 5]
                                               [--refill] [--budget-ms 200]

Creates its own database (paygate_overview_bench) if missing, migrates it, and fills it by INSERT ... SELECT
generate_series over the last three years: 60 % of registrations completed, 35 % abandoned or pending, the rest
paid, refunded or needing attention; a licence for each paid one (70 % one payment, 15 % subscriptions, 10 %
invoices, 5 % pilots), a payment for each licence paid (in USD, EUR or GBP; refunds and lost disputes among
them). Then times what the page reads: the stored summary (paygate/ops/overview_summary.py, one read by
primary key) and the figures counted on every view (paygate/web/operator/overview.py), each --runs times after a
warm-up, and prints each one's median and slowest, and the total of the medians, which must stay within
--budget-ms (exit 1 otherwise). The worker's count of the summary (not part of a view) is timed apart.
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/paygate_overview_bench"
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
}

# One row a number i: b (0-999) decides the state, f (0-99) the licence's kind, c the currency; the newest row is
# now, each older one 95 seconds before (three years in all). The licence's id is the registration's.
NUMBERS = """
SELECT i, (i * 7919) % 1000 AS b, (i * 31) % 100 AS f, i % 3 AS c,
       now() AT TIME ZONE 'UTC' - (CAST(:rows AS bigint) - i) * interval '95 seconds' AS t
FROM generate_series(CAST(:start AS bigint), CAST(:stop AS bigint)) AS i
"""

FILL_REGISTRATIONS = f"""
INSERT INTO registrations (id, registration_id, flow_token, state, attention, lms_url, lms_family, price_id,
    price_interval, amount, currency, checkout_generation, amount_paid, currency_paid, paid_at, platform_id,
    completed_at, platform_active, access_wanted, licence_pk, attempt_count, attempt_uncertain, access_attempts,
    refunded_at, created_at, updated_at)
SELECT i, 'R' || md5(i::text), md5(i::text || 'f') || md5(i::text || 'g'), state,
    CASE WHEN state = 'needs_attention' THEN 'completion_refused' END,
    'https://school' || (i % 200000) || '.instructure.com', 'canvas',
    CASE WHEN f >= 70 AND f < 85 THEN 'price_year' ELSE 'price_bench' END,
    CASE WHEN f >= 70 AND f < 85 THEN 'year' END,
    4900, cur, 1,
    CASE WHEN paid THEN 4900 END, CASE WHEN paid THEN cur END, CASE WHEN paid THEN t + interval '2 minutes' END,
    CASE WHEN state IN ('completed', 'refunded') THEN 'P' || substr(md5(i::text || 'p'), 1, 18) END,
    CASE WHEN state IN ('completed', 'refunded') THEN t + interval '3 minutes' END,
    CASE WHEN state = 'completed' THEN b % 50 <> 0 WHEN state = 'refunded' THEN false END,
    CASE WHEN state = 'completed' THEN b % 50 <> 0 WHEN state = 'refunded' THEN false END,
    CASE WHEN paid THEN i END,
    CASE WHEN paid THEN 1 ELSE 0 END, false, 0,
    CASE WHEN state = 'refunded' THEN t + interval '2 days' END,
    t, t
FROM (
    SELECT i, b, f, t, (ARRAY['usd', 'eur', 'gbp'])[1 + c] AS cur,
        CASE WHEN b < 5 THEN 'needs_attention' WHEN b < 20 THEN 'paid' WHEN b < 40 THEN 'refunded'
             WHEN b < 50 THEN 'pending' WHEN b < 400 THEN 'abandoned' ELSE 'completed' END AS state,
        (b < 40 OR b >= 400) AS paid
    FROM ({NUMBERS}) numbers
) rows
"""

FILL_LICENCES = """
INSERT INTO licences (id, registration_pk, kind, status, subscription_id, invoice_id, currency, price_id, amount,
    amount_remaining, due_at, pilot_ends_at, organisation, invoicing_attempt, dispute_open, created_at, updated_at)
SELECT id, id, kind,
    CASE kind WHEN 'payment' THEN 'succeeded'
              WHEN 'subscription' THEN (CASE WHEN id % 20 < 17 THEN 'active' WHEN id % 20 < 18 THEN 'past_due'
                                             ELSE 'canceled' END)
              WHEN 'invoice' THEN (CASE WHEN id % 5 = 0 THEN 'open' ELSE 'paid' END) END,
    CASE WHEN kind = 'subscription' THEN 'sub_' || substr(md5(id::text || 's'), 1, 20) END,
    CASE WHEN kind = 'invoice' THEN 'in_' || substr(md5(id::text || 'in'), 1, 20) END,
    currency, price_id, CASE WHEN kind = 'subscription' THEN 12000 ELSE 4900 END,
    CASE WHEN kind = 'invoice' AND id % 5 = 0 THEN 4900 ELSE 0 END,
    CASE WHEN kind = 'invoice' THEN created_at + interval '30 days' END,
    CASE WHEN kind = 'pilot' THEN created_at + interval '30 days' END,
    'School ' || (id % 200000), 0, false, created_at, created_at
FROM (
    SELECT r.*, CASE WHEN (r.id * 31) % 100 < 70 THEN 'payment' WHEN (r.id * 31) % 100 < 85 THEN 'subscription'
                     WHEN (r.id * 31) % 100 < 95 THEN 'invoice' ELSE 'pilot' END AS kind
    FROM registrations r WHERE r.licence_pk IS NOT NULL AND r.id BETWEEN :start AND :stop
) paid
"""

FILL_PAYMENTS = """
INSERT INTO licence_payments (licence_pk, registration_pk, payment_intent_id, amount, currency, paid_at,
    amount_refunded, dispute_status, created_at, updated_at)
SELECT l.id, l.id, 'pi_' || substr(md5(l.id::text || 'pi'), 1, 24), l.amount, l.currency,
    l.created_at + interval '2 minutes',
    CASE WHEN r.state = 'refunded' THEN l.amount WHEN l.id % 97 = 0 THEN 1000 ELSE 0 END,
    CASE WHEN l.id % 500 = 0 THEN 'lost' END,
    l.created_at, l.created_at
FROM licences l JOIN registrations r ON r.id = l.id
WHERE l.kind <> 'pilot' AND NOT (l.kind = 'invoice' AND l.status = 'open') AND l.id BETWEEN :start AND :stop
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
            "vendor_messages, registrations RESTART IDENTITY CASCADE"
        )
    )
    db.session.commit()
    # The licences and registrations point at each other: the foreign keys' checks are off while both are written
    # (this database is the bench's own), and every pointer written is one the next statement fills.
    db.session.execute(text("SET session_replication_role = replica"))
    for start in range(1, rows + 1, BATCH):
        stop = min(start + BATCH - 1, rows)
        values = {"start": start, "stop": stop, "rows": rows}
        db.session.execute(text(FILL_REGISTRATIONS), values)
        db.session.execute(text(FILL_LICENCES), values)
        db.session.execute(text(FILL_PAYMENTS), values)
        db.session.commit()
        db.session.execute(text("SET session_replication_role = replica"))
        print(f"  {stop:>9,} rows, {time.perf_counter() - started:6.1f} s", flush=True)
    db.session.execute(text("SET session_replication_role = DEFAULT"))
    for table in ("registrations", "licences", "licence_payments"):
        db.session.execute(text(f"SELECT setval('{table}_id_seq', (SELECT coalesce(max(id), 1) FROM {table}))"))
    db.session.commit()
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE registrations, licences, licence_payments"))  # index-only scans need it
    print(f"filled in {time.perf_counter() - started:.1f} s")


def timed(db, fn, runs: int) -> tuple[float, float, object]:
    result = fn()  # warm-up
    times = []
    for _ in range(runs):
        db.session.rollback()  # nothing read before is kept in the session: every run asks the database
        started = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - started) * 1000)
    db.session.rollback()
    return statistics.median(times), max(times), result


def report(db, figures: dict, runs: int) -> float:
    total = 0.0
    print(f"{'figure':32} {'median ms':>10} {'max ms':>8}")
    for name, fn in figures.items():
        median, slowest, _ = timed(db, fn, runs)
        total += median
        print(f"{name:32} {median:10.1f} {slowest:8.1f}")
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL))
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--refill", action="store_true")
    parser.add_argument("--budget-ms", type=float, default=200.0)
    args = parser.parse_args()
    if not args.url.startswith("postgresql"):
        sys.exit("this benchmark is for PostgreSQL")

    ensure_database(args.url)
    from flask_migrate import upgrade

    from paygate.application import create_app
    from paygate.core.db import db
    from paygate.ops import overview_summary
    from paygate.web.operator import overview

    app = create_app({**CONFIG, "database_url": args.url})
    with app.app_context():
        upgrade()
        fill(db, args.rows, args.refill)
        print("The worker's count of the summary (every 5 minutes, not part of a view):")
        report(db, {name: getattr(overview_summary, fn) for name, fn in SUMMARY.items()}, args.runs)
        counted = report(db, {"refresh (count and store)": lambda: _refresh(db, overview_summary)}, args.runs)
        print()
        print("What a view of the overview reads:")
        total = report(
            db,
            {
                "summary (stored)": overview_summary.current,
                "pilots ending (14 days)": overview.pilots_ending,
                "overdue invoices": overview.overdue_invoices,
                "needs attention": overview.attention,
            },
            args.runs,
        )
        print(f"{'total (medians)':32} {total:10.1f}   budget {args.budget_ms:.0f} ms")
        print(f"{'worker refresh (median)':32} {counted:10.1f}   not part of a view")
    sys.exit(0 if total <= args.budget_ms else 1)


SUMMARY = {
    "money per month": "money_by_month",
    "active platforms and licences": "active",
    "funnel (30 days)": "funnel",
    "recurring revenue": "recurring",
}


def _refresh(db, overview_summary) -> int:
    """The worker's refresh, made due first (the stored figures aged past the interval)."""
    from sqlalchemy import update

    from paygate.core.models import OverviewSummary

    db.session.execute(update(OverviewSummary).values(computed_at=None, refreshing_since=None))
    db.session.commit()
    return overview_summary.refresh_due()


if __name__ == "__main__":
    main()
