"""Keeps secrets that travel in URLs out of logs: access lines (the dev server's and gunicorn's), the
service's own messages, and exception texts and stacks (a traceback may quote a URL). Database errors
lose the values they quote (every engine also hides its statement parameters: paygate/core/db.py)."""

import logging
import re

# The LMS registration token passes through /lti/register; a registrationId or a flow token opens
# a registration's flow (so does the id in LTIaaS's /api/registrations/<id>; the operator pages'
# /operator/api/registrations/<n> is our own row number, not a secret). A licence key opens its licence page.
_PATTERNS = (
    (re.compile(r"((?:registration_token|registrationtoken)=)[^&\s\"']+", re.IGNORECASE), r"\1[redacted]"),
    (re.compile(r"(registrationId=[A-Za-z0-9._~-]{4})[A-Za-z0-9._~%-]+"), r"\1…"),
    (re.compile(r"((?<!/operator)/api/registrations/[A-Za-z0-9._~-]{4})[A-Za-z0-9._~%-]+"), r"\1…"),
    (re.compile(r"(/flow/[A-Za-z0-9_-]{6})[A-Za-z0-9_-]+"), r"\1…"),
    # A licence key is the licence page's credential; its one-hour link names the licence (paygate/web/licence/).
    (re.compile(r"(/licence/)(?!m/)[^/\s?\"']+"), r"\1[redacted]"),
    (re.compile(r"(/licence/m/[A-Za-z0-9_.-]{4})[A-Za-z0-9_.-]+"), r"\1…"),
    # An operator's set-password link (paygate/web/operator/team.py) works once, for whoever holds it.
    (re.compile(r"(/operator/set-password/)[^/\s?\"']+"), r"\1[redacted]"),
)
# PostgreSQL quotes the offending values in its errors (a unique violation's key is a flow token or a
# registration id; a failing row is all of them), and SQLAlchemy lists a statement's parameters where an
# engine does not hide them. Each pattern runs only where its marker occurs: most lines have none.
_DATABASE_PATTERNS = (
    (
        "Key (",
        re.compile(r"(Key \([^=\n]*\)=\()[^\n]*?(\) (?:already exists|is not present|is still referenced))"),
        r"\1[redacted]\2",
    ),
    ("Key (", re.compile(r"(Key \([^=\n]*\)=\()(?!\[redacted\])[^\n]*"), r"\1[redacted])"),
    ("Failing row", re.compile(r"(Failing row contains \()[^\n]*"), r"\1[redacted])."),
    ("invalid input", re.compile(r"(invalid input (?:syntax|value) for [^:\n]*: )[^\n]*"), r"\1[redacted]"),
    ("[parameters: ", re.compile(r"(\[parameters: )[^\n]*"), r"\1[redacted]]"),
)
_FORMATTER = logging.Formatter()


def redact(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    for marker, pattern, replacement in _DATABASE_PATTERNS:
        if marker in text:
            text = pattern.sub(replacement, text)
    return text


class RedactSecrets(logging.Filter):
    """Redacts a record's message, and its exception text and stack, whatever formats it afterwards
    (a standard Formatter uses the exception text cached on the record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = _FORMATTER.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install() -> None:
    """Attach the filter to the loggers that write request lines, and to every root handler."""
    targets = [logging.getLogger(n) for n in ("werkzeug", "gunicorn.access", "gunicorn.error")]
    for target in targets + logging.getLogger().handlers:
        if not any(isinstance(f, RedactSecrets) for f in target.filters):
            target.addFilter(RedactSecrets())
