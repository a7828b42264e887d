"""Apps for the tests: the settings, an app on SQLite or PostgreSQL migrated by Alembic and emptied, and
PostgreSQL databases of a run's own."""

import os

import pytest
from flask.testing import FlaskClient
from flask_migrate import upgrade
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from paygate.application import create_app
from paygate.core.db import db

PG_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/paygate_test")
REQUIRE_POSTGRES = os.environ.get("REQUIRE_POSTGRES") == "1"

BASE_CONFIG = {
    "app_env": "test",
    "ltiaas_url": "https://ltiaas.test",
    "ltiaas_api_key": "ltiaas-secret-api-key",
    "stripe_secret_key": "sk_test_secret_key_for_tests",
    "stripe_webhook_secret": "whsec_test_secret",
    "stripe_price_id": "price_registration",
    "stripe_max_network_retries": 0,
    "public_url": "http://paygate.test",
    "secret_key": "test-secret-key",
    "ltiaas_timeout_seconds": 2.0,
    # Sign-in with a password alone, as most tests need; the tests of the second factor turn it on.
    "operator_2fa": "off",
}

_migrated: set[str] = set()
_pg_problem: list[str] = []


def postgres_or_skip() -> str:
    """The PostgreSQL test database, created on first use; skip (or fail in CI) without a server."""
    if not _pg_problem and PG_URL not in _migrated:
        url = make_url(PG_URL)
        try:
            admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                if (
                    conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": url.database}).first()
                    is None
                ):
                    conn.execute(text(f'CREATE DATABASE "{url.database}"'))
            admin.dispose()
            engine = create_engine(url)
            with engine.begin() as conn:
                conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
            engine.dispose()
        except Exception as exc:  # noqa: BLE001 - no server, no driver, no permission: skip
            _pg_problem.append(
                f"PostgreSQL not reachable at {url.render_as_string(hide_password=True)}: {type(exc).__name__}"
            )
    if _pg_problem:
        if REQUIRE_POSTGRES:
            pytest.fail(_pg_problem[0] + " (REQUIRE_POSTGRES=1)")
        pytest.skip(_pg_problem[0])
    return PG_URL


def own_database(suffix: str):
    """A PostgreSQL database of this run's own (other runs may empty the shared one meanwhile),
    migrated; dropped after. A generator for module fixtures: yields its URL."""
    base = make_url(postgres_or_skip())
    url = base.set(database=f"{base.database}_{suffix}_{os.getpid()}")
    admin = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{url.database}"'))
        conn.execute(text(f'CREATE DATABASE "{url.database}"'))
    rendered = url.render_as_string(hide_password=False)
    app = make_app(rendered)  # runs the migrations
    with app.app_context():
        db.engine.dispose()
    yield rendered
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
    admin.dispose()


def empty(app) -> None:
    """Migrate the app's database (once per run) and delete every row."""
    with app.app_context():
        if app.config["SQLALCHEMY_DATABASE_URI"] not in _migrated:
            upgrade()
            _migrated.add(app.config["SQLALCHEMY_DATABASE_URI"])
        db.session.execute(text("UPDATE registrations SET licence_pk = NULL"))  # licences and registrations: a cycle
        for table in reversed(db.metadata.sorted_tables):
            db.session.execute(table.delete())
        db.session.commit()


class ServerLikeClient(FlaskClient):
    """A test client that closes each response as a server does after sending it, so that the work a
    view leaves for after its answer (response.call_on_close) runs before the test goes on."""

    def open(self, *args, **kwargs):
        kwargs.setdefault("buffered", True)
        return super().open(*args, **kwargs)


def make_app(database_url: str, **overrides):
    app = create_app({**BASE_CONFIG, "database_url": database_url, **overrides})
    app.test_client_class = ServerLikeClient
    empty(app)
    return app
