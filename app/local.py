"""`make run`: the service with its built-in stand-ins and a worker on one port, to click through."""
import logging
import threading
from urllib.parse import urlparse

from werkzeug.serving import run_simple

from . import create_app

log = logging.getLogger(__name__)


def main() -> None:
    app = create_app({"app_env": "local"})
    settings = app.config["SETTINGS"]
    url = urlparse(settings.public_url)
    port = url.port or 5000
    if not settings.uses_standins:
        log.info("LTIaaS and Stripe are configured: no stand-ins mounted")
    else:
        # The LMS page sits on another site (localhost vs 127.0.0.1), as a real LMS would.
        print(f"\n  Open the LMS stand-in:  http://localhost:{port}/_local/lms\n"
              f"  Registration URL:       {settings.public_url}/lti/register\n", flush=True)
    # The worker retries failed completions; in production it is its own process (`flask worker`).
    stop = threading.Event()
    from .worker import run_forever
    threading.Thread(target=run_forever, args=(app, settings.worker_interval_seconds,
                                                settings.worker_reconcile_minutes, stop),
                     name="worker", daemon=True).start()
    try:
        run_simple(url.hostname or "127.0.0.1", port, app, threaded=True)
    finally:
        stop.set()


if __name__ == "__main__":
    main()
