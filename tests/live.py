"""A real server in a thread and Debian's chromium, for the tests a person's browser would run."""
import contextlib
import os
import shutil
import threading

import pytest
from werkzeug.serving import make_server

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
REQUIRE_BROWSER = os.environ.get("REQUIRE_BROWSER") == "1"
USED: list[str] = []  # the browser the tests ran in, for the run's summary
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 # Block third-party cookies, as Safari and Chrome Incognito do inside an LMS frame.
                 "--test-third-party-cookie-phaseout"]


@contextlib.contextmanager
def serving(app, port: int = 0):
    """Serve `app` on 127.0.0.1 (threaded) until the block ends; yields the port."""
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        thread.join(5)


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
