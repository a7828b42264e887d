"""The mail server (SMTP_URL): the one module that talks SMTP.

A try is one connection: smtps (TLS from the first byte) or smtp upgraded with STARTTLS whenever the server offers
it, certificates checked; a login when SMTP_URL names a user (its password goes only over TLS, or to a server on
this machine); one message, as plain text with an HTML alternative, under a Message-ID that is the same on every try
so that a mail client shows a retried message once. Every wait on the server is bounded by TIMEOUT. What went wrong
is told in a few words, never with the password.
"""

import smtplib
import socket
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formataddr, formatdate
from urllib.parse import urlsplit

from paygate.core.notify_config import SmtpServer
from paygate.core.text import clean

TIMEOUT = 15.0  # seconds for each wait on the server (connecting, each answer)
KEPT = 300  # characters of what went wrong kept (Notification.last_error)
SENDER_NAME = "paygate"


@dataclass(frozen=True)
class Outcome:
    """Whether the server took the message, and what it said or what went wrong, one line."""

    ok: bool
    text: str


def domain(public_url: str) -> str:
    """The host of PUBLIC_URL: the right-hand side of Message-IDs and of the default sender."""
    return urlsplit(public_url).hostname or "localhost"


def sender(server: SmtpServer, public_url: str) -> str:
    """The From address: SMTP_URL's user when it is an address (relays often insist), else noreply@ PUBLIC_URL's
    host."""
    address = server.user if server.user and "@" in server.user else f"noreply@{domain(public_url)}"
    return formataddr((SENDER_NAME, address))


def message(
    key: str, subject: str, text: str, html: str, to: tuple[str, ...], from_: str, public_url: str
) -> EmailMessage:
    """One notification as an e-mail: `key` makes its Message-ID, the same on every try."""
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = from_
    msg["To"] = ", ".join(to)
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = f"<{key}@{domain(public_url)}>"
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to a robot
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    return msg


def send(server: SmtpServer, msg: EmailMessage) -> Outcome:
    """One try: hand `msg` to the server; never raises for what the server or the network does."""
    context = ssl.create_default_context()
    try:
        if server.tls:
            smtp = smtplib.SMTP_SSL(server.host, server.port, timeout=TIMEOUT, context=context)
        else:
            smtp = smtplib.SMTP(server.host, server.port, timeout=TIMEOUT)
        with smtp:
            smtp.ehlo()
            secure = server.tls
            if not secure and smtp.has_extn("starttls"):
                smtp.starttls(context=context)
                smtp.ehlo()
                secure = True
            if server.user:
                if not secure and not server.loopback:
                    return Outcome(False, "the server offers no TLS: the password is not sent in clear")
                smtp.login(server.user, server.password or "")
            refused = smtp.send_message(msg)
    except smtplib.SMTPAuthenticationError as exc:
        return Outcome(False, clean(f"login refused: {exc.smtp_code} {_said(exc.smtp_error)}", KEPT) or "")
    except smtplib.SMTPRecipientsRefused:
        return Outcome(False, "every recipient was refused (NOTIFY_EMAILS)")
    except smtplib.SMTPResponseException as exc:
        return Outcome(False, clean(f"the server answered {exc.smtp_code} {_said(exc.smtp_error)}", KEPT) or "")
    except (smtplib.SMTPException, OSError) as exc:
        return Outcome(False, _reason(exc))
    if refused:
        return Outcome(True, clean(f"sent; refused for {', '.join(sorted(refused))}", KEPT) or "sent")
    return Outcome(True, "sent")


def _said(answer) -> str:
    return answer.decode("utf-8", "replace") if isinstance(answer, bytes) else str(answer)


def _reason(exc: BaseException) -> str:
    """What went wrong, in words that never hold the URL's credentials."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "the host name does not resolve"
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"no answer within {TIMEOUT:g} s"
    if isinstance(exc, ssl.SSLError):
        return "TLS failed"
    if isinstance(exc, smtplib.SMTPServerDisconnected | ConnectionError):
        return "the server closed the connection"
    return type(exc).__name__
