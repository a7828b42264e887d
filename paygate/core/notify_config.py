"""SMTP_URL and NOTIFY_EMAILS (README "Notifications to operators"): parsed here, checked at start-up
(paygate/core/config.py), read by the writer (paygate/core/notifications.py) and the sender (paygate/gateways/mail.py).

A ValueError raised here never holds the value it refuses: SMTP_URL carries a password.
"""

from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from email_validator import EmailNotValidError, validate_email

DEFAULT_PORTS = {"smtp": 25, "smtps": 465}
MAX_RECIPIENTS = 50
LOOPBACK = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class SmtpServer:
    """Where notifications are sent: `tls` means smtps (TLS from the first byte); smtp upgrades with STARTTLS when
    the server offers it."""

    tls: bool
    host: str
    port: int
    user: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def loopback(self) -> bool:
        """A server on this machine (the local run's mailbox): a password may go to it without TLS."""
        return self.host.lower() in LOOPBACK


def parse_smtp_url(value: str | None) -> SmtpServer | None:
    """`smtp://user:password@host:port` or `smtps://...` (user, password and port optional; user and password
    percent-encoded), or None when unset."""
    value = (value or "").strip()
    if not value:
        return None
    if not value.isascii() or not value.isprintable() or len(value) > 2000:
        raise ValueError("must be smtp://user:password@host:port or smtps://... in printable ASCII")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ValueError("the port must be a number from 1 to 65535") from None
    if parts.scheme.lower() not in DEFAULT_PORTS:
        raise ValueError("must start with smtp:// or smtps://")
    if not parts.hostname:
        raise ValueError("names no host (smtp://user:password@host:port)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("must be only smtp://user:password@host:port (no path, query or fragment)")
    if port == 0:
        raise ValueError("the port must be a number from 1 to 65535")
    if parts.password is not None and not parts.username:
        raise ValueError("has a password but no user")
    return SmtpServer(
        tls=parts.scheme.lower() == "smtps",
        host=parts.hostname,
        port=port or DEFAULT_PORTS[parts.scheme.lower()],
        user=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )


def parse_recipients(value: str | None) -> tuple[str, ...]:
    """NOTIFY_EMAILS: e-mail addresses separated by commas, each once, normalised; () when unset."""
    found: list[str] = []
    for part in (value or "").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            address = validate_email(part, check_deliverability=False).normalized
        except EmailNotValidError:
            raise ValueError(f"{part[:100]!r} is not an e-mail address (give addresses separated by commas)") from None
        if address not in found:
            found.append(address)
    if len(found) > MAX_RECIPIENTS:
        raise ValueError(f"at most {MAX_RECIPIENTS} addresses")
    return tuple(found)


def notifying(settings) -> bool:
    """Whether notifications are written and sent: both SMTP_URL and NOTIFY_EMAILS are set."""
    return bool(settings.smtp_url and settings.notify_emails)
