"""Real servers for the tests: the app served in a thread, gunicorn processes of `wsgi:app`, and the
fakes of LTIaaS and Stripe (tests/fakes.py) behind a real socket."""

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import requests
from requests.structures import CaseInsensitiveDict
from werkzeug.serving import make_server

from tests.fakes import STRIPE, Ltiaas, Stripe
from tests.helpers.apps import BASE_CONFIG

ROOT = Path(__file__).resolve().parents[2]  # the repository: gunicorn runs `wsgi:app` from there
PUBLIC_URL = "http://127.0.0.1"  # the host the servers are asked on (any port); builds Checkout's return URLs


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
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# LTIaaS and Stripe behind one real socket


class _Routes:
    """Stands in for responses.RequestsMock: collects the fakes' callbacks."""

    def __init__(self):
        self.routes = []

    def add_callback(self, method, url, callback):
        self.routes.append((method, url, callback))


class _Server(ThreadingHTTPServer):
    request_queue_size = 512  # a hundred callers connect at once


class Upstreams:
    """The fakes of LTIaaS and Stripe served over HTTP on 127.0.0.1, one thread per connection."""

    def __init__(self):
        routes = _Routes()
        self.server = _Server(("127.0.0.1", 0), self._handler(routes))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.config = {**BASE_CONFIG, "ltiaas_url": self.url}
        self.stripe = Stripe(routes, self.config)
        self.ltiaas = Ltiaas(routes, self.config)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _handler(self, routes: _Routes):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _dispatch(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                # Stripe's fakes answer for https://api.stripe.com, LTIaaS's for our own URL.
                base = STRIPE if self.path.startswith("/v1/") else outer.url
                full = base + self.path
                request = SimpleNamespace(
                    url=full, body=body, method=self.command, headers=CaseInsensitiveDict(dict(self.headers.items()))
                )
                for method, pattern, callback in routes.routes:
                    if method != self.command:
                        continue
                    if pattern.match(full) if isinstance(pattern, re.Pattern) else pattern == full.split("?", 1)[0]:
                        try:
                            status, headers, payload = callback(request)
                        except Exception:  # noqa: BLE001 - an injected fault: drop the connection
                            self.close_connection = True
                            return
                        data = payload.encode() if isinstance(payload, str) else payload
                        self.send_response(status)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(data)))
                        for key, value in (headers or {}).items():
                            self.send_header(key, value)
                        self.end_headers()
                        with contextlib.suppress(OSError):  # the caller has gone (a killed server)
                            self.wfile.write(data)
                        return
                self.send_error(404)

            do_GET = do_POST = do_DELETE = do_PUT = _dispatch

        return Handler

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------------------------------------
# the service's processes


def environment(database_url: str, upstreams: Upstreams, public_url: str, **extra) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LTIAAS_", "STRIPE_", "WORKER_", "DATABASE_", "APP_ENV", "PUBLIC_URL"))
    }
    c = upstreams.config
    env.update(
        APP_ENV="production",
        DATABASE_URL=database_url,
        LTIAAS_URL=upstreams.url,
        LTIAAS_API_KEY=c["ltiaas_api_key"],
        STRIPE_SECRET_KEY=c["stripe_secret_key"],
        STRIPE_WEBHOOK_SECRET=c["stripe_webhook_secret"],
        STRIPE_PRICE_ID=c["stripe_price_id"],
        STRIPE_API_BASE=upstreams.url,
        PUBLIC_URL=public_url,
        SECRET_KEY="multiprocess-secret-at-least-32-characters",
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


class Server:
    """One gunicorn instance of `wsgi:app` (its own process group, so that it can be killed whole)."""

    def __init__(self, env: dict, workers: int = 2, threads: int = 4):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(prefix="paygate-gunicorn-", suffix=".log", delete=False)  # noqa: SIM115 - open while the server runs
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                str(workers),
                "--worker-class",
                "gthread",
                "--threads",
                str(threads),
                "--timeout",
                "60",
                "--graceful-timeout",
                "5",
                "wsgi:app",
            ],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"gunicorn exited {self.proc.returncode}:\n{self.output()}")
            try:
                if requests.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise AssertionError(f"gunicorn not ready after {timeout} s:\n{self.output()}")

    def output(self, tail: int = 5000) -> str:
        text_ = Path(self.log.name).read_text(errors="replace")
        return text_[-tail:] if tail else text_

    def kill(self) -> None:
        """SIGKILL the whole instance (master and workers): nothing gets to clean up."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()
        os.unlink(self.log.name)
