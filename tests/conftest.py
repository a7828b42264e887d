"""Fixtures: an app on SQLite and on PostgreSQL, migrated by Alembic, emptied before each test."""
import os

import pytest
import responses
from flask.testing import FlaskClient
from flask_migrate import upgrade
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from paygate.application import create_app
from paygate.core.db import db

from .fakes import Ltiaas, Stripe

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
                if conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"),
                                {"n": url.database}).first() is None:
                    conn.execute(text(f'CREATE DATABASE "{url.database}"'))
            admin.dispose()
            engine = create_engine(url)
            with engine.begin() as conn:
                conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
            engine.dispose()
        except Exception as exc:  # no server, no driver, no permission
            _pg_problem.append(f"PostgreSQL not reachable at {url.render_as_string(hide_password=True)}: "
                               f"{type(exc).__name__}")
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


def _empty(app) -> None:
    with app.app_context():
        if app.config["SQLALCHEMY_DATABASE_URI"] not in _migrated:
            upgrade()
            _migrated.add(app.config["SQLALCHEMY_DATABASE_URI"])
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
    _empty(app)
    return app


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path_factory):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.getbasetemp() / 'paygate-tests.sqlite'}"
    return postgres_or_skip()


@pytest.fixture
def pg_url():
    return postgres_or_skip()


def _app_on(database_url):
    app = make_app(database_url)
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def app(database_url):
    yield from _app_on(database_url)


@pytest.fixture
def pg_app(pg_url):
    yield from _app_on(pg_url)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def mocked():
    """Every outgoing HTTP call goes through `responses`; an unexpected one fails the test."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


@pytest.fixture
def stripe_api(mocked):
    return Stripe(mocked, BASE_CONFIG)


@pytest.fixture
def ltiaas_api(mocked):
    return Ltiaas(mocked, BASE_CONFIG)


from .live import browser  # noqa: E402,F401  (a fixture for the browser tests)


def pytest_terminal_summary(terminalreporter):
    """Name the browser the browser tests ran in (Debian's chromium, not Playwright's own)."""
    from .live import USED
    for used in USED:
        terminalreporter.write_line(f"browser tests ran in {used}")
