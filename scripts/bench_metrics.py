"""Time what a Prometheus scrape reads from the database, at a million registrations on PostgreSQL (a script,
not a test).

    .venv/bin/python scripts/bench_metrics.py [--url postgresql+psycopg://...] [--rows 1000000] [--runs 15]
                                              [--refill] [--explain]

Fills the database as scripts/bench_operator_list.py does (INSERT ... SELECT generate_series; reused when it
already holds --rows registrations), gives 0.1 % of the completed platforms an access that differs from what
LTIaaS was told, then times `paygate.ops.metrics_page.database_facts` (registrations by state, needing attention, the
worker's backlog, the oldest paid registration not completed) and the whole `GET /metrics` answer through the
test client. Prints the median and the slowest of --runs runs, after one warm-up run.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_operator_list import CONFIG, ensure_database, fill, timed
from sqlalchemy import text

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/paygate_metrics_bench"
TOKEN = "bench-metrics-token"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL))
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--refill", action="store_true")
    parser.add_argument("--explain", action="store_true", help="print the PostgreSQL plan of each query")
    args = parser.parse_args()
    if not args.url.startswith("postgresql"):
        sys.exit("this benchmark is for PostgreSQL")

    ensure_database(args.url)
    from flask_migrate import upgrade

    from paygate.application import create_app
    from paygate.core.db import db, utcnow
    from paygate.ops import metrics_page
    from paygate.ops.metrics_page import database_facts, database_queries

    app = create_app({**CONFIG, "database_url": args.url, "metrics_token": TOKEN})
    with app.app_context():
        upgrade()
        fill(db, args.rows, args.refill)
        # Some platforms whose access LTIaaS has not been told yet (the reconciler's backlog).
        db.session.execute(
            text(
                "UPDATE registrations SET access_wanted = platform_active "
                "WHERE platform_id IS NOT NULL AND access_wanted IS NULL"
            )
        )
        db.session.execute(
            text(
                "UPDATE registrations SET access_wanted = NOT platform_active "
                "WHERE platform_id IS NOT NULL AND id % 1000 = 1"
            )
        )
        db.session.commit()
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE registrations"))  # as autovacuum keeps it in production
        total = db.session.scalar(text("SELECT count(*) FROM registrations"))
        settings = app.config["SETTINGS"]

        if args.explain:
            from sqlalchemy.dialects import postgresql

            for sql in database_queries(settings, utcnow()).values():
                compiled = sql.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})
                print(f"\n{compiled}")
                for (line,) in db.session.execute(text(f"EXPLAIN (ANALYZE, BUFFERS) {compiled}")):
                    print("   ", line)
            db.session.rollback()

        print(f"\n{total:,} registrations")
        now = utcnow()
        for name, sql in database_queries(settings, now).items():
            median, worst, _ = timed(lambda sql=sql: (db.session.execute(sql).all(), db.session.rollback()), args.runs)
            print(f"  {name:<15} median {median:6.1f} ms, slowest {worst:6.1f} ms")
        metrics_page.FINAL_COUNTS_TTL = 0.0
        median, worst, facts = timed(lambda: database_facts(settings), args.runs)
        print(
            f"database read of a scrape that also counts the final states (once a minute): "
            f"median {median:.1f} ms, slowest {worst:.1f} ms"
        )
        metrics_page.FINAL_COUNTS_TTL = 60.0
        median, worst, facts = timed(lambda: database_facts(settings), args.runs)
        print(f"database read of every other scrape: median {median:.1f} ms, slowest {worst:.1f} ms")
        print(f"  {facts}")

    client = app.test_client()
    headers = {"Authorization": f"Bearer {TOKEN}"}

    def scrape():
        response = client.get("/metrics", headers=headers)
        assert response.status_code == 200, response.status_code
        return response

    median, worst, _ = timed(scrape, args.runs)
    print(f"GET /metrics, whole answer: median {median:.1f} ms, slowest {worst:.1f} ms")


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"({time.perf_counter() - started:.0f} s in all)")
