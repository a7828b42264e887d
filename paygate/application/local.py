"""`make run`: the service with its built-in stand-ins and a worker on one port, to click through.

`PORT` (environment or `.env`) chooses the port; 5000 by default. Without `SECRET_KEY` the local run
keeps one in `instance/local-secret-key`, made on the first start and reused, so that operators stay
signed in across restarts. Ctrl+C (SIGINT) or SIGTERM stops the server and its worker.
"""

import logging
import os
import secrets
import signal
import sys
import threading
from urllib.parse import urlparse

from dotenv import dotenv_values
from flask import Flask
from werkzeug.serving import run_simple

from paygate.application import create_app
from paygate.application.cli import check_offers_soon
from paygate.core.config import LOCAL_PORT, ConfigError, load_settings
from paygate.standins import mail

log = logging.getLogger(__name__)
SECRET_KEY_FILE = "local-secret-key"  # noqa: S105 - the name of the file that keeps the key
LOCAL_NOTIFY_EMAILS = "operators@tools.example"


def configured(name: str) -> str | None:
    """A setting's value from the environment or `.env`, whatever its case (as Settings reads them)."""
    for source in (os.environ, dotenv_values(".env") if os.path.exists(".env") else {}):
        for key, value in source.items():
            if key.upper() == name and value:
                return value
    return None


def local_secret_key(instance_path: str) -> str:
    """The local run's SECRET_KEY: read from instance/, or made once and kept there (owner-only)."""
    path = os.path.join(instance_path, SECRET_KEY_FILE)
    try:
        with open(path, encoding="ascii") as f:
            key = f.read().strip()
        if len(key) >= 32:
            return key
    except FileNotFoundError:
        pass
    os.makedirs(instance_path, exist_ok=True)
    key = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(key + "\n")
    return key


def local_overrides() -> dict:
    """Settings of the local run: its port (PORT), and a SECRET_KEY kept in instance/ unless one is set."""
    overrides = {"app_env": "local"}
    port = configured("PORT")
    if port is not None:
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise SystemExit("PORT is malformed: must be a port number, e.g. 5001")
        if configured("PUBLIC_URL") is None:
            overrides["public_url"] = f"http://127.0.0.1:{int(port)}"
    if configured("SECRET_KEY") is None:
        overrides["secret_key"] = local_secret_key(instance_path())
    return overrides


def instance_path() -> str:
    """instance/ of the local run: its SECRET_KEY, SQLite database and the stand-ins' state."""
    return Flask(__package__, instance_relative_config=True).instance_path


def local_mailbox(overrides: dict) -> mail.Server | None:
    """The stand-in mail server, when the stand-ins are mounted and SMTP_URL is not set: started on a free port,
    with SMTP_URL (and NOTIFY_EMAILS, unless set) pointing at it in `overrides`. Raises ConfigError."""
    if configured("SMTP_URL") is not None or not load_settings(overrides).uses_standins:
        return None
    server = mail.Server(mail.Handler())
    overrides["smtp_url"] = server.url
    if configured("NOTIFY_EMAILS") is None:
        overrides["notify_emails"] = LOCAL_NOTIFY_EMAILS
    return server


def _stop_like_ctrl_c(signum, frame):
    """SIGTERM (`kill PID`) stops the server as Ctrl+C does; the worker is then told to stop."""
    raise KeyboardInterrupt


def main() -> None:
    overrides = local_overrides()
    try:
        mailbox = local_mailbox(overrides)
        app = create_app(overrides, standins_state_dir=instance_path())  # a restart keeps the stand-ins' payments
    except ConfigError as exc:
        # One clear line naming the variable, never its value (as wsgi.py).
        print(f"configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
    settings = app.config["SETTINGS"]
    if mailbox is not None:
        mailbox.handler.state = app.extensions["standins"].mail
    url = urlparse(settings.public_url)
    port = int(configured("PORT") or url.port or LOCAL_PORT)
    if not settings.uses_standins:
        log.info("LTIaaS and Stripe are configured: no stand-ins mounted")
    else:
        # The LMS page sits on another site (localhost vs 127.0.0.1), as a real LMS would.
        print(
            f"\n  Open the LMS stand-in:  http://localhost:{port}/_local/lms\n"
            f"  Registration URL:       {settings.public_url}/lti/register\n"
            f"  Operator pages:         {settings.public_url}/operator/\n"
            f"  The vendor's systems:   {settings.public_url}/_local/vendor\n"
            f"  E-mail to operators:    {settings.public_url}/_local/mail\n"
            f"  Stop with Ctrl+C.\n",
            flush=True,
        )
    check_offers_soon(settings, delay=1.0)  # once the stand-in it asks is listening
    # The worker retries failed completions; in production it is its own process (`flask worker`).
    stop = threading.Event()
    from paygate.ops.worker import run_forever

    threading.Thread(
        target=run_forever,
        args=(app, settings.worker_interval_seconds, settings.worker_reconcile_minutes, stop),
        name="worker",
        daemon=True,
    ).start()
    signal.signal(signal.SIGTERM, _stop_like_ctrl_c)
    try:
        run_simple(url.hostname or "127.0.0.1", port, app, threaded=True)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        print("  Stopped.", flush=True)


if __name__ == "__main__":
    main()
