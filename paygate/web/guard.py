"""What every request passes before a view runs: a host this service answers to, and a bounded body.

* **Hosts.** `HostGuard`, WSGI middleware inside ProxyFix (so a trusted proxy's `X-Forwarded-Host` is
  checked as the Host it becomes) and outside Flask, answers a request for any other host 400 with fixed
  bytes: nothing in it can fail, whatever the host (a 64-character label once crashed the error page).
  The hosts: `PUBLIC_URL`'s, plus `localhost`/`127.0.0.1`/`::1` in local runs and tests (the local
  LMS stand-in is on localhost, the service on 127.0.0.1). `/healthz` and `/readyz` answer whatever
  the host (load balancers probe by address); no URL is built from it there either.
  It also folds a `SCRIPT_NAME` (gunicorn takes one from a request header) back into the path: the
  service is mounted at the root, and no client moves it. Absolute URLs come from `PUBLIC_URL` alone.
* **Bodies.** At most `MAX_BODY_BYTES` (64 KB: the largest form here is a few hundred bytes), the
  webhook `WEBHOOK_MAX_BYTES` (1 MB: Stripe's events are a few KB, tens with long invoices; its payloads
  are bounded, about 2 to 3 orders of magnitude under this). A declared `Content-Length` above the limit
  is refused 413 before anything is read; a chunked body is refused 413 as soon as it goes past the
  limit while it is read, and 400 in one sentence when its framing is broken (a chunk size that is no
  number, a missing line end: the server's chunked reader raises OSError or ValueError, Werkzeug's and
  gunicorn's alike). deploy/nginx.conf applies the same limits first.
"""

import io
import json
from html import escape
from urllib.parse import urlsplit

from flask import Flask, request
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge

from paygate.core import logs

MAX_BODY_BYTES = 64 * 1024
WEBHOOK_PATH = "/webhooks/stripe"
WEBHOOK_MAX_BYTES = 1024 * 1024
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
PROBE_PATHS = frozenset({"/healthz", "/readyz"})
HSTS = "max-age=63072000; includeSubDomains"  # two years; the service's own host and any below it

HOST_REFUSED = "This service does not answer to that host name."
SCHEME_REFUSED = "This service answers only http and https requests."
BROKEN_CHUNKS = "This request's body is malformed: its chunked transfer encoding is broken."


def body_limit(path: str) -> int:
    return WEBHOOK_MAX_BYTES if path == WEBHOOK_PATH else MAX_BODY_BYTES


def size_words(limit: int) -> str:
    return f"{limit // (1024 * 1024)} MB" if limit % (1024 * 1024) == 0 else f"{limit // 1024} KB"


def too_large() -> RequestEntityTooLarge:
    """The 413 of the current request, in one sentence naming its limit."""
    limit = body_limit(request.path)
    return RequestEntityTooLarge(
        description=f"This request is too large: this address accepts at most {size_words(limit)}."
    )


def served_hosts(public_url: str, app_env: str) -> frozenset[str]:
    """The host names requests may name: PUBLIC_URL's, plus loopback names in local runs and tests."""
    hosts = set(LOOPBACK_HOSTS) if app_env in ("local", "test") else set()
    name = urlsplit(public_url).hostname
    if name:
        hosts.add(name)
    return frozenset(hosts)


def host_name(host: str | None) -> str | None:
    """`name[:port]` or `[v6][:port]` -> the lower-case name; None for anything else."""
    if not host or len(host) > 300:
        return None
    if host.startswith("["):
        name, bracket, port = host[1:].partition("]")
        if not bracket or (port and not port.startswith(":")):
            return None
        port = port[1:]
    else:
        name, _, port = host.partition(":")
    if not name or (port and not (port.isascii() and port.isdigit() and len(port) <= 5)):
        return None
    return name.lower()


def wants_json(environ: dict) -> bool:
    """Machines get JSON: the webhook, the APIs (operators', licence), metrics, the frame's poll (as app.wants_json)."""
    path = environ.get("PATH_INFO") or ""
    return (
        path.startswith(("/webhooks/", "/operator/api/", "/api/", "/metrics"))
        or path.endswith("/status")
        or (
            "application/json" in (environ.get("HTTP_ACCEPT") or "")
            and "text/html" not in (environ.get("HTTP_ACCEPT") or "")
        )
    )


def fixed_response(status: int, title: str, sentence: str, as_json: bool, hsts: bool) -> tuple[str, list, bytes]:
    """A refusal built from constants only: (status line, headers, body)."""
    if as_json:
        body = json.dumps({"error": title, "message": sentence}).encode()
        content_type = "application/json"
    else:
        title, sentence = escape(title), escape(sentence)
        body = (
            f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title></head>\n'
            f'<body><h1>{title}</h1><p id="message">{sentence}</p></body></html>\n'
        ).encode()
        content_type = "text/html; charset=utf-8"
    headers = [
        ("Content-Type", content_type),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
        ("X-Content-Type-Options", "nosniff"),
        ("X-Frame-Options", "DENY"),
        ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"),
        ("Referrer-Policy", "no-referrer"),
    ]
    if hsts:
        headers.append(("Strict-Transport-Security", HSTS))
    return f"{status} {title}", headers, body


class HostGuard:
    """WSGI middleware: requests for a host not served are answered 400; SCRIPT_NAME is folded into the path."""

    def __init__(self, wsgi_app, public_url: str, app_env: str, trusted_proxies: int):
        self.wsgi_app = wsgi_app
        self.hosts = served_hosts(public_url, app_env)
        self.public_host = urlsplit(public_url).netloc
        self.hsts = public_url.startswith("https://")
        self.trusted = trusted_proxies > 0

    def __call__(self, environ, start_response):
        script_name = environ.get("SCRIPT_NAME")
        if script_name:  # the whole path is routed: a prefix a client chose moves nothing
            environ["PATH_INFO"] = script_name + (environ.get("PATH_INFO") or "")
            environ["SCRIPT_NAME"] = ""
        if environ.get("wsgi.url_scheme") not in ("http", "https"):  # a trusted proxy's X-Forwarded-Proto
            return self._refuse(environ, start_response, SCHEME_REFUSED)
        if host_name(environ.get("HTTP_HOST")) not in self.hosts:
            if environ.get("PATH_INFO") not in PROBE_PATHS:
                return self._refuse(environ, start_response, HOST_REFUSED)
            environ["HTTP_HOST"] = self.public_host  # a probe by address: answered, on our own name
        return self.wsgi_app(environ, start_response)

    def _refuse(self, environ, start_response, sentence: str):
        from paygate.core import telemetry

        status, headers, body = fixed_response(400, "Bad Request", sentence, wants_json(environ), self.hsts)
        headers.append((logs.HEADER, logs.incoming_request_id(environ.get("HTTP_X_REQUEST_ID"), self.trusted)))
        telemetry.request_refused(environ.get("REQUEST_METHOD") or "", 400)
        start_response(status, headers)
        return [body]


def init_app(app: Flask) -> None:
    """Bounded bodies: MAX_CONTENT_LENGTH for every request, more for the webhook, checked up front."""
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES

    @app.before_request
    def _bounded_body():
        limit = body_limit(request.path)
        if limit != MAX_BODY_BYTES:
            request.max_content_length = limit
        length = request.content_length
        if length is not None:
            if length > limit:  # refused before a byte of it is read
                raise RequestEntityTooLarge()
        elif "HTTP_TRANSFER_ENCODING" in request.environ:  # chunked: 413 once it goes past the limit
            request.environ["wsgi.input"] = _Capped(request.environ["wsgi.input"], limit)
            request.max_content_length = limit + 1  # Werkzeug's own cap would stop there silently


class _Capped(io.RawIOBase):
    """A chunked body that raises 413 when it goes past `limit`, and 400 when its framing is broken.
    (Werkzeug's `max_content_length` reads such a body up to the limit and stops there without an error:
    a truncated body, not a refusal.)"""

    def __init__(self, stream, limit: int):
        self._stream, self._left = stream, limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        try:
            data = self._stream.read(min(len(buffer), self._left + 1))
        except (OSError, ValueError):  # the server's chunked reader: a bad chunk size or line end
            raise BadRequest(description=BROKEN_CHUNKS) from None
        if len(data) > self._left:
            raise RequestEntityTooLarge()
        self._left -= len(data)
        buffer[: len(data)] = data
        return len(data)
