"""Logging, set up in one place: the format, the request id, redaction, and quiet status polls.

* Every request has a request id (`g.request_id`): the `X-Request-ID` it came with when it passed a
  trusted proxy (`TRUSTED_PROXIES` > 0) and is well formed, else a new one. It is returned in the
  response's `X-Request-ID`, put on every log record made while it is handled (a LogRecord factory:
  `record.request_id`, "-" outside a request), and sent on to LTIaaS (paygate/gateways/ltiaas.py). Work run after
  the answer (paygate/web/after_answer.py) carries the id of the request that queued it.
* `LOG_FORMAT=text`: `time LEVEL logger [request id]: message`; `json`: one JSON object per line
  (time, level, logger, message, request_id, and exception/stack when there is one).
* Redaction (paygate/core/redaction.py) covers the message, the exception text and the stack alike, in both
  formats, so a registration token or a flow token never reaches a log, even inside a traceback.
* The frame's status poll (every 1.5 s per open frame) is logged by the dev server and by gunicorn's
  access log at DEBUG instead of INFO; other access lines are kept as they are.
"""

import json
import logging
import re
import sys
import threading
import uuid
from datetime import UTC, datetime

from flask import Flask, g, has_app_context, request

from paygate.core import redaction

HEADER = "X-Request-ID"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
# An id from a proxy is kept only if it is this: printable, short, and safe in any log or header.
_VALID_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
ACCESS_LOGGERS = ("werkzeug", "gunicorn.access")
# The id of the request this thread handled last: the dev server writes its access line in the
# request's thread once the request context is gone (read for werkzeug's lines only).
_thread = threading.local()


def current_request_id() -> str | None:
    """The id of the request being handled (or whose after-answer work is running), else None."""
    if has_app_context():
        return g.get("request_id")
    return None


def incoming_request_id(value: str | None, trusted: bool) -> str:
    """The id for a request that came with `X-Request-ID: value`: kept if trusted and well formed."""
    if trusted and value and _VALID_ID.fullmatch(value):
        return value
    return uuid.uuid4().hex


# ---------------------------------------------------------------------------------------------------
# Records and formats


def _install_record_factory() -> None:
    """Every record made anywhere in the process gets `request_id` (even those of other libraries)."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "_paygate_request_id", False):
        return

    def factory(*args, **kwargs):
        record = previous(*args, **kwargs)
        record.request_id = current_request_id() or "-"
        return record

    factory._paygate_request_id = True
    logging.setLogRecordFactory(factory)


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    """The record's exception text, redacted, and cached so on the record (other handlers reuse it)."""
    if record.exc_info and not record.exc_text:
        record.exc_text = formatter.formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redaction.redact(record.exc_text)
    return record.exc_text or None


class TextFormatter(logging.Formatter):
    """The classic line plus the request id; the whole output (traceback included) redacted."""

    def __init__(self):
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "request_id"):  # a record built by hand (logging.makeLogRecord)
            record.request_id = "-"
        _exception_text(self, record)
        return redaction.redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id[, exception][, stack]."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": redaction.redact(record.getMessage()),
            "request_id": getattr(record, "request_id", "-"),
        }
        exception = _exception_text(self, record)
        if exception:
            line["exception"] = exception
        if record.stack_info:
            line["stack"] = redaction.redact(self.formatStack(record.stack_info))
        return json.dumps(line, ensure_ascii=False, default=str)


def formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


def stream_handler(stream=None, log_format: str = "text") -> logging.StreamHandler:
    """A handler writing in `log_format` to `stream` (stderr), with the redaction filter."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter(log_format))
    handler.addFilter(redaction.RedactSecrets())
    handler._paygate = True
    return handler


# ---------------------------------------------------------------------------------------------------
# Access lines: the status poll at DEBUG

# The dev server's line: `"GET /flow/<token>/status HTTP/1.1" 200 -` (the request line in terminal
# colours unless the status is 200); gunicorn's default one alike, but its records carry the atoms,
# read first. The token may already be shortened by redaction.
_POLL_PATH = re.compile(r"/flow/[^/\s\"?]+/status")
_POLL_LINE = re.compile(r"\"(?:\x1b\[[\d;]*m)*[A-Z]+ /flow/[^/\s\"?]+/status(?:\?\S*)? HTTP/[\d.]+\S*\s+(\d{3})\b")


class QuietStatusPolls(logging.Filter):
    """Access lines of the frame's status poll become DEBUG: kept only where the access logger (for
    gunicorn: its `--log-level`) is at DEBUG. A failed poll (5xx) stays at INFO. Also fills in
    `request_id` of access records: gunicorn's from the response's X-Request-ID, the dev server's from
    the request its thread just handled."""

    def filter(self, record: logging.LogRecord) -> bool:
        atoms = record.args if isinstance(record.args, dict) else None
        if getattr(record, "request_id", "-") == "-":
            if atoms is not None:
                record.request_id = atoms.get("{x-request-id}o", "-")
            elif record.name == "werkzeug":
                record.request_id = getattr(_thread, "request_id", "-")
        status = self._poll_status(record, atoms)
        if status is None or status.startswith("5") or record.levelno != logging.INFO:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        names = (record.name, "gunicorn.error") if record.name.startswith("gunicorn.") else (record.name,)
        return any(logging.getLogger(name).isEnabledFor(logging.DEBUG) for name in names)

    @staticmethod
    def _poll_status(record: logging.LogRecord, atoms: dict | None) -> str | None:
        """The HTTP status of a status poll's access line, or None if the line is not one."""
        if atoms is not None and "U" in atoms:  # gunicorn: PATH_INFO and status, whatever its format
            return str(atoms.get("s", "")) if _POLL_PATH.fullmatch(str(atoms["U"])) else None
        message = record.getMessage()
        if "/status" not in message:
            return None
        match = _POLL_LINE.search(message)
        return match.group(1) if match else None


# ---------------------------------------------------------------------------------------------------
# Set-up


def setup(app: Flask, log_format: str = "text", trusted_proxies: int = 0) -> None:
    """Configure logging for the process and give `app` its request ids. Safe to call again."""
    _install_record_factory()
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, "_paygate", False)]
    if ours:
        for handler in ours:
            handler.setFormatter(formatter(log_format))
    elif not root.handlers:  # as logging.basicConfig: an application that configured logging keeps it
        root.addHandler(stream_handler(log_format=log_format))
        root.setLevel(logging.INFO)
    # The stripe library writes two INFO lines per API call (request and response URLs); our own lines
    # and metrics say what each call was for and how it went. Kept if someone set its level already.
    stripe_logger = logging.getLogger("stripe")
    if stripe_logger.level == logging.NOTSET:
        stripe_logger.setLevel(logging.WARNING)
    for name in ACCESS_LOGGERS:  # before redaction: it reads the access line as the server wrote it
        target = logging.getLogger(name)
        if not any(isinstance(f, QuietStatusPolls) for f in target.filters):
            target.filters.insert(0, QuietStatusPolls())
    redaction.install()
    if log_format == "json":  # under gunicorn, its own lines (this worker process's) in JSON too
        for name in ("gunicorn.error", "gunicorn.access"):
            for handler in logging.getLogger(name).handlers:
                if getattr(handler, "_gunicorn", False):  # the handlers gunicorn made, no one else's
                    handler.setFormatter(JsonFormatter())

    trusted = trusted_proxies > 0

    @app.before_request
    def _request_id():
        g.request_id = _thread.request_id = incoming_request_id(request.headers.get(HEADER), trusted)

    @app.after_request
    def _return_request_id(response):
        request_id = g.get("request_id")
        if request_id:
            response.headers[HEADER] = request_id
        return response
