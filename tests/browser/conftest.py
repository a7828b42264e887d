"""The browser tests' fixtures: Debian's chromium via Playwright (popup blocker on, third-party cookies
blocked), and the service with its built-in stand-ins served on a free port."""

import contextlib
import os
import shutil

import pytest

from paygate.application import create_app
from paygate.core.db import db
from tests.helpers.apps import empty
from tests.helpers.servers import free_port, serving

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
REQUIRE_BROWSER = os.environ.get("REQUIRE_BROWSER") == "1"
USED: list[str] = []  # the browser the tests ran in, for the run's summary
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Block third-party cookies, as Safari and Chrome Incognito do inside an LMS frame.
    "--test-third-party-cookie-phaseout",
]


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
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, ignore_default_args=["--disable-popup-blocking"]
        )
        USED.append(f"chromium {browser.version} at {CHROMIUM}")
        yield browser
        browser.close()


@pytest.fixture
def start_service(database_url):
    """start(**settings) -> (app, port): the local service with its stand-ins, on 127.0.0.1."""
    stack = contextlib.ExitStack()
    apps = []

    def start(**settings):
        port = free_port()
        app = create_app(
            {
                "app_env": "local",
                "database_url": database_url,
                "public_url": f"http://127.0.0.1:{port}",
                "secret_key": "browser-test",
                "stripe_price_id": "price_local_registration",  # one offer, 49.00 USD once, unless a test sells more
                **settings,
            }
        )
        empty(app)
        from paygate.standins import reset

        reset()
        stack.enter_context(serving(app, port))
        apps.append(app)
        return app, port

    yield start
    stack.close()
    for app in apps:
        with app.app_context():
            db.engine.dispose()


@pytest.fixture
def local_service(start_service):
    """The service with its built-in stand-ins, served on a free port: (app, port)."""
    return start_service()


def pytest_terminal_summary(terminalreporter):
    """Name the browser the browser tests ran in (Debian's chromium, not Playwright's own)."""
    for used in USED:
        terminalreporter.write_line(f"browser tests ran in {used}")
