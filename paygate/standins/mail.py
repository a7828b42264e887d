"""Local stand-in mailbox: a real SMTP server (aiosmtpd) on a free port of 127.0.0.1, which the local run's SMTP_URL
points at, storing what it receives; and the page /_local/mail that lists it (subject, recipients, the text and the
HTML part shown as text)."""

import asyncio
import threading
from datetime import UTC, datetime
from email import message_from_bytes, policy
from html.parser import HTMLParser

from aiosmtpd.smtp import SMTP
from flask import Response, render_template_string

KEPT = 200  # the newest messages kept
BODY_MAX = 200_000  # characters of a part kept

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Local mailbox — notifications to operators</title>
<style>body{font-family:system-ui,sans-serif;margin:1rem 2rem}.banner{background:#fff3cd;border:1px solid #d6b656;
padding:.5rem 1rem}article{border:1px solid #ccc;margin:1rem 0;padding:.5rem 1rem}pre{white-space:pre-wrap;
font-size:.85rem;max-width:60rem}h3{margin:.2rem 0}dl{display:grid;grid-template-columns:max-content 1fr;gap:0 1rem}
dt{font-weight:bold}dd{margin:0}</style></head><body>
<p class="banner"><strong>Local mailbox</strong>: the notifications this service e-mailed to operators
  (SMTP_URL = <code>{{ smtp_url or "(not set)" }}</code>, NOTIFY_EMAILS = <code>{{ to or "(not set)" }}</code>) ·
  <a href="{{ public_url }}/_local/lms">LMS stand-in</a> · <a href="{{ public_url }}/operator/">Operator pages</a></p>
{% for m in messages %}<article class="mail">
<h3 class="subject">{{ m.subject }}</h3>
<dl><dt>To</dt><dd class="to">{{ m.to }}</dd><dt>From</dt><dd>{{ m.from }}</dd><dt>Received</dt>
<dd>{{ m.received_at }}</dd><dt>Message-ID</dt><dd><code>{{ m.message_id }}</code></dd></dl>
<h4>Text</h4><pre class="text">{{ m.text }}</pre>
<h4>HTML, as text</h4><pre class="html">{{ m.html }}</pre>
</article>{% else %}<p id="no-mail">No e-mail yet: a registration that needs attention sends one.</p>{% endfor %}
</body></html>"""


class State:
    """The messages received (newest last). `on_change` is called (lock held) after each change."""

    def __init__(self):
        self.lock = threading.RLock()
        self.messages: list[dict] = []
        self.on_change = None

    def changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self)

    def reset(self) -> None:
        with self.lock:
            self.messages.clear()
            self.changed()

    def dump(self) -> dict:
        with self.lock:
            return {"messages": self.messages}

    def load(self, saved: dict) -> None:
        with self.lock:
            self.messages[:] = [m for m in saved.get("messages") or [] if isinstance(m, dict)][-KEPT:]

    def receive(self, raw: bytes, recipients: list[str]) -> None:
        """Store one message as received over SMTP."""
        msg = message_from_bytes(raw, policy=policy.default)
        text = msg.get_body(("plain",))
        html = msg.get_body(("html",))
        with self.lock:
            self.messages.append(
                {
                    "subject": str(msg["Subject"] or ""),
                    "from": str(msg["From"] or ""),
                    "to": ", ".join(recipients),
                    "message_id": str(msg["Message-ID"] or ""),
                    "received_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
                    "text": text.get_content()[:BODY_MAX] if text is not None else "",
                    "html": as_text(html.get_content())[:BODY_MAX] if html is not None else "",
                }
            )
            del self.messages[:-KEPT]
            self.changed()


class _Text(HTMLParser):
    def __init__(self):
        super().__init__()
        self.parts: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in ("p", "tr", "br", "table"):
            self.parts.append("\n")
        href = dict(attrs).get("href") if tag == "a" else None
        if href:
            self.parts.append(f"[{href}] ")

    def handle_data(self, data):
        self.parts.append(data)


def as_text(html: str) -> str:
    """An HTML part's text, its links' targets in brackets: what it says, without rendering it."""
    parser = _Text()
    parser.feed(html)
    return "\n".join(line.strip() for line in "".join(parser.parts).splitlines() if line.strip())


class Handler:
    """aiosmtpd's handler: each message goes to `state` (set once the app, and so the stand-ins, exist)."""

    def __init__(self, state: State | None = None):
        self.state = state

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd calls it by this name
        if self.state is None:
            return "451 the mailbox is not ready yet"
        self.state.receive(envelope.original_content or envelope.content, list(envelope.rcpt_tos))
        return "250 OK"


class Server:
    """An SMTP server on 127.0.0.1 (`port` 0: a free one) in a thread of its own, until `stop()`."""

    def __init__(self, handler, port: int = 0, **smtp_options):
        self.handler = handler
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="local-smtp", daemon=True)
        self.thread.start()
        # Made on the server's own loop in its own thread: the calling thread may run an event loop of its own (a
        # browser driven by Playwright in the tests), where run_until_complete would refuse to start a second one.
        made = self.loop.create_server(lambda: SMTP(handler, **smtp_options), "127.0.0.1", port)
        self.server = asyncio.run_coroutine_threadsafe(made, self.loop).result(10)
        self.port = self.server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def stop(self) -> None:
        async def close():
            self.server.close()
            await self.server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def register(bp, settings, state: State) -> None:
    """Add the mailbox's page (/_local/mail) to `bp`."""
    public_url = settings.public_url.rstrip("/")

    @bp.get("/mail")
    def mail_page():
        with state.lock:
            html = render_template_string(
                PAGE,
                public_url=public_url,
                smtp_url=settings.smtp_url,
                to=settings.notify_emails,
                messages=list(reversed(state.messages)),
            )
        return Response(html, mimetype="text/html", headers={"Cache-Control": "no-store"})
