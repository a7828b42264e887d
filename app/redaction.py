"""Keeps secrets that travel in URLs out of access logs (the dev server's and gunicorn's)."""
import logging
import re

# The LMS registration token passes through /lti/register; a registrationId or a flow token opens
# a registration's flow.
_PATTERNS = (
    (re.compile(r"((?:registration_token|registrationtoken)=)[^&\s\"']+", re.IGNORECASE), r"\1[redacted]"),
    (re.compile(r"(registrationId=[A-Za-z0-9._~-]{4})[A-Za-z0-9._~%-]+"), r"\1…"),
    (re.compile(r"(/flow/[A-Za-z0-9_-]{6})[A-Za-z0-9_-]+"), r"\1…"),
)


def redact(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


def install() -> None:
    """Attach the filter to the loggers that write request lines, and to every root handler."""
    targets = [logging.getLogger(n) for n in ("werkzeug", "gunicorn.access", "gunicorn.error")]
    for target in targets + logging.getLogger().handlers:
        if not any(isinstance(f, RedactSecrets) for f in target.filters):
            target.addFilter(RedactSecrets())
