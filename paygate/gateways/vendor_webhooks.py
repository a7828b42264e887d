"""The vendor's webhook endpoint (VENDOR_WEBHOOK_URL): the one module that sends to it, signed as Standard Webhooks.

A try is one POST of the message's body, byte for byte as stored, with the message's id and this try's
timestamp and signature. It succeeds on a 2xx answer only: redirects are never followed, and an endpoint that
does not answer within TIMEOUT seconds (the whole answer included) has failed. At most MAX_ANSWER bytes of an
answer are read. The secret never leaves this module except as a signature.
"""

import contextlib
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from standardwebhooks.webhooks import Webhook
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from paygate.core.text import clean

TIMEOUT = 10.0  # seconds for a whole try: connecting, the answer's headers and as much of its body as is read
CONNECT_TIMEOUT = 3.0
MAX_ANSWER = 64 * 1024  # bytes of an answer read at most; the connection is closed after
KEPT = 300  # characters of an answer kept (VendorMessage.last_answer)
USER_AGENT = "paygate-vendor-webhooks/1 (payment-gated LTI registration)"

_running = threading.local()  # the try this thread is making: its Deadline


class Deadline:
    """Ends a try at TIMEOUT, whatever the endpoint does: requests' timeouts bound each wait for a byte, so an
    endpoint sending its headers a byte at a time would hold a try (and the sender's lease) for ever. When time is
    up, the try's socket is shut down, which ends any read blocked on it."""

    def __init__(self, seconds: float):
        self.lock = threading.Lock()
        self.sock = None
        self.expired = False
        self.timer = threading.Timer(seconds, self._expire)
        self.timer.daemon = True

    def watch(self, sock) -> None:
        with self.lock:
            self.sock = sock
            if self.expired:
                _shut(sock)

    def _expire(self) -> None:
        with self.lock:
            if self.timer is None:  # the try is over: its connection may already serve another
                return
            self.expired = True
            if self.sock is not None:
                _shut(self.sock)

    def finish(self) -> None:
        with self.lock:
            self.timer.cancel()
            self.timer = None


def _shut(sock) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _Watched:
    """A connection that hands its socket to the running try's Deadline before waiting for the answer (new
    connections and reused ones alike)."""

    def getresponse(self, *args, **kwargs):
        deadline = getattr(_running, "deadline", None)
        if deadline is not None and self.sock is not None:
            deadline.watch(self.sock)
        return super().getresponse(*args, **kwargs)


class _Connection(_Watched, HTTPConnection):
    pass


class _TlsConnection(_Watched, HTTPSConnection):
    pass


class _Pool(HTTPConnectionPool):
    ConnectionCls = _Connection


class _TlsPool(HTTPSConnectionPool):
    ConnectionCls = _TlsConnection


def _adapter() -> HTTPAdapter:
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=32)
    adapter.poolmanager.pool_classes_by_scheme = {"http": _Pool, "https": _TlsPool}
    return adapter


# One pooled session for every sender thread; `trust_env` off, so that no proxy or .netrc from the
# environment sees the messages, and no credentials of the machine are added to them.
_session = requests.Session()
_session.trust_env = False
_session.mount("https://", _adapter())
_session.mount("http://", _adapter())


@dataclass(frozen=True)
class Answer:
    """What the endpoint answered: its HTTP status (None: no answer) and the start of its answer or what went
    wrong, one line."""

    status: int | None
    text: str

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def headers(secret: str, message_id: str, body: str, at: datetime) -> dict[str, str]:
    """The Standard Webhooks headers of one try at `at`: the same id every try, this try's time and signature."""
    at = datetime.fromtimestamp(int(at.timestamp()), UTC)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(message_id, at, body),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "accept-encoding": "identity",  # the answer's bytes are counted as sent, never inflated
    }


def send(url: str, secret: str, message_id: str, body: str) -> Answer:
    """One try: POST `body` to `url`, signed, over in TIMEOUT seconds at most; never raises for what the endpoint
    or the network does."""
    deadline = _running.deadline = Deadline(TIMEOUT)
    deadline.timer.start()
    try:
        answer = _send(url, secret, message_id, body)
    finally:
        deadline.finish()
        _running.deadline = None
    if deadline.expired and not answer.ok:
        return Answer(None, f"no answer within {_seconds(TIMEOUT)}")
    return answer


def _send(url: str, secret: str, message_id: str, body: str) -> Answer:
    data = body.encode()
    started = time.monotonic()
    limit = TIMEOUT
    try:
        response = _session.post(
            url,
            data=data,
            headers=headers(secret, message_id, body, datetime.now(UTC)),
            timeout=(min(CONNECT_TIMEOUT, limit), limit),
            allow_redirects=False,
            stream=True,
        )
    except requests.ConnectTimeout:
        return Answer(None, f"no connection within {_seconds(min(CONNECT_TIMEOUT, limit))}")
    except requests.Timeout:
        return Answer(None, f"no answer within {_seconds(limit)}")
    except requests.RequestException as exc:  # its text names the URL, which may hold a credential: not kept
        return Answer(None, f"could not reach the endpoint: {_reason(exc)}")
    try:
        start, complete, ended = _read(response, started + limit)
        if complete and ended:  # read to its end: the connection goes back to the pool for the next try
            response.raw.release_conn()
    finally:
        response.close()  # otherwise it is closed: an answer left unread must not be read by the next try
    status = response.status_code
    if not complete:
        return Answer(None, f"answered {status} but not all of it within {_seconds(limit)}")
    if 300 <= status < 400:
        return Answer(status, clean(f"redirect to {_where(response.headers.get('location'))} not followed", KEPT))
    text = start.decode("utf-8", errors="replace")
    return Answer(status, clean(text, KEPT) or "")


def _read(response: requests.Response, deadline: float) -> tuple[bytes, bool, bool]:
    """Up to MAX_ANSWER bytes of the answer before `deadline`; (them, whether the deadline was kept, whether the
    answer was read to its end)."""
    raw, chunks, size = response.raw, [], 0
    while size < MAX_ANSWER:
        left = deadline - time.monotonic()
        if left <= 0:
            return b"".join(chunks), False, False
        _limit_wait(raw, left)  # a slow trickle cannot hold a try past its deadline
        try:
            chunk = raw.read1(min(16384, MAX_ANSWER - size), decode_content=False)
        except Exception as exc:  # noqa: BLE001 - socket's, urllib3's or http.client's: the answer ends here
            if _timed_out(exc):
                return b"".join(chunks), False, False
            return b"".join(chunks), time.monotonic() <= deadline, False  # closed or cut: what arrived is its answer
        if not chunk:
            return b"".join(chunks), time.monotonic() <= deadline, True
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks), time.monotonic() <= deadline, False


def _limit_wait(raw, seconds: float) -> None:
    """Each read of the answer waits at most `seconds` (the time left before the deadline)."""
    sock = getattr(getattr(raw, "connection", None), "sock", None)
    if sock is not None:
        sock.settimeout(max(seconds, 0.001))


def _seconds(value: float) -> str:
    return f"{value:g} s"


def _where(location: str | None) -> str:
    """A redirect's target without its query or fragment (which may carry a credential)."""
    if not location:
        return "nowhere"
    parts = urlsplit(location)
    return f"{parts.scheme}://{parts.netloc}{parts.path}" if parts.netloc else parts.path or "nowhere"


def _timed_out(exc: BaseException) -> bool:
    return any(isinstance(e, (TimeoutError, socket.timeout)) or "timed out" in str(e).lower() for e in _chain(exc))


def _chain(exc: BaseException):
    """`exc` and what caused it, as requests and urllib3 nest them (cause, context, `reason`, first argument)."""
    seen, depth = exc, 0
    while isinstance(seen, BaseException) and depth < 8:
        yield seen
        first = seen.args[0] if seen.args else None
        seen = seen.__cause__ or seen.__context__ or getattr(seen, "reason", None) or first
        depth += 1


def _reason(exc: BaseException) -> str:
    """A connection error's cause in words, from the exception chain (never the exception's text, which
    names the URL)."""
    for seen in _chain(exc):
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        if isinstance(seen, socket.gaierror):
            return "the host name does not resolve"
        if isinstance(seen, (ConnectionResetError, ConnectionAbortedError)):
            return "the connection was closed"
        if isinstance(seen, requests.exceptions.SSLError) or type(seen).__name__.startswith("SSL"):
            return "TLS failed"
        if isinstance(seen, requests.exceptions.ChunkedEncodingError):
            return "the answer was cut off"
    text = str(exc).lower()
    if "refused" in text:
        return "connection refused"
    if "reset" in text or "aborted" in text or "remote end closed" in text:
        return "the connection was closed"
    return type(exc).__name__
