"""Fixtures: an app on SQLite and on PostgreSQL, migrated by Alembic, emptied before each test; the fakes of
Stripe and LTIaaS; and the registrations and operators that tests of several folders start from."""
import os
import shutil

import pytest
import redis
import responses

from paygate.application import create_app
from paygate.core.db import db
from tests.fakes import Ltiaas, Stripe
from tests.helpers.apps import BASE_CONFIG, empty, make_app, postgres_or_skip
from tests.helpers.flow import open_frame
from tests.helpers.operators import EMAIL, add_operator, sign_in
from tests.helpers.rates import REDIS_URL
from tests.helpers.servers import free_port, serving


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


# ---------------------------------------------------------------------------------------------
# Where many tests start: a Checkout Session open or paid, a yearly Price, an operator signed in

@pytest.fixture
def checkout(client, stripe_api, ltiaas_api):
    """A registration with an open Checkout Session: (registration_id, token, session_id)."""
    registration_id, token, _ = open_frame(client, ltiaas_api)
    client.get(f"/flow/{token}/pay")
    return registration_id, token, stripe_api.only_session()["id"]


@pytest.fixture
def paid(client, stripe_api, ltiaas_api):
    """A registration whose Checkout Session Stripe says is paid: (registration_id, token, session_id)."""
    registration_id, token, _ = open_frame(client, ltiaas_api)
    assert client.get(f"/flow/{token}/pay").status_code == 303
    session_id = stripe_api.only_session()["id"]
    stripe_api.pay(session_id)
    return registration_id, token, session_id


@pytest.fixture
def redis_url():
    """The shared rate store (Redis), or skip."""
    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=1, socket_connect_timeout=1).ping()
    except redis.RedisError:
        pytest.skip("no Redis at 127.0.0.1:6379 for the shared-store tests")
    return REDIS_URL


@pytest.fixture
def yearly(stripe_api):
    """The configured Price is a yearly one: Checkout sells a subscription."""
    stripe_api.set_price(recurring="year")


@pytest.fixture
def operator(app):
    add_operator(app)
    return EMAIL


@pytest.fixture
def ops(client, operator):
    """The test client, signed in as an operator."""
    assert sign_in(client).status_code == 303
    return client


# ---------------------------------------------------------------------------------------------
# The browser tests: Debian's chromium

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
REQUIRE_BROWSER = os.environ.get("REQUIRE_BROWSER") == "1"
USED: list[str] = []  # the browser the tests ran in, for the run's summary
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 # Block third-party cookies, as Safari and Chrome Incognito do inside an LMS frame.
                 "--test-third-party-cookie-phaseout"]


@pytest.fixture(scope="session")
def browser():
    """Debian's chromium via Playwright, popup blocker ON (Playwright turns it off by default)."""
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        message = f"no chromium at {CHROMIUM} (apt-get install chromium)"
        if REQUIRE_BROWSER:
            pytest.fail(message + " (REQUIRE_BROWSER=1)")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                             ignore_default_args=["--disable-popup-blocking"])
        USED.append(f"chromium {browser.version} at {CHROMIUM}")
        yield browser
        browser.close()


@pytest.fixture
def local_service(database_url):
    """The service with its built-in stand-ins, served on a free port: (app, port)."""
    port = free_port()
    app = create_app({"app_env": "local", "database_url": database_url,
                      "public_url": f"http://127.0.0.1:{port}", "secret_key": "browser-test"})
    empty(app)
    from paygate.standins import reset
    reset()
    with serving(app, port):
        yield app, port
    with app.app_context():
        db.engine.dispose()


def pytest_terminal_summary(terminalreporter):
    """Name the browser the browser tests ran in (Debian's chromium, not Playwright's own)."""
    for used in USED:
        terminalreporter.write_line(f"browser tests ran in {used}")
