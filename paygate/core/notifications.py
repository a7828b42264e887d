"""Notifications to operators (docs/architecture.md, invariant 12): written here, in the transaction of what they
report; paygate/ops/notify_outbox.py sends them after the commit.

One row per registration and reason (INSERT ... ON CONFLICT DO NOTHING on its unique index), so an event seen twice,
or by two processes at once, is one e-mail. The reasons:

- `attention:<code>`: a new reason for attention on the registration (`completion_refused`...), with its message;
- `dispute_opened:<dispute id>`: the payer's bank opened a dispute, with the evidence deadline;
- `access_untold`: LTIaaS cannot be told the platform's access (retries are running out, or it refuses);
- `vendor_webhook_failed`: a message to the vendor's systems was given up.

A reason that has its own notification is not sent again as `attention:<code>`. Nothing is written unless SMTP_URL
and NOTIFY_EMAILS are both set: a server configured later is not flooded with old news. No e-mail holds a secret:
they are built from what operator pages show, and the registration's flow token is struck out wherever it appears.
"""

from datetime import datetime

from flask import current_app, g, has_app_context
from markupsafe import Markup, escape

from paygate.core.db import insert_ignoring_duplicates, utcnow
from paygate.core.models import Notification, Registration
from paygate.core.notify_config import notifying

WRITTEN = "notifications_written"  # flask.g: this request wrote one (paygate/web/after_answer.py sends it)
# Attention codes told by a notification of their own, with more to say than the code.
TOLD_APART = {"disputed", "access_unsynced", "access_refused", "vendor_webhook_failed"}
# An operator's own action in progress: they know already.
QUIET = {"refunding"}
REASON_MAX = 100


def attention(reg: Registration, before: str | None, after: str | None, message: str) -> int:
    """One notification for each reason for attention in `after` that was not in `before`; returns how many were
    new. Called by paygate/core/registrations.py wherever a reason is set."""
    old = set((before or "").split(","))
    codes = [c for c in (after or "").split(",") if c and c not in old and c not in TOLD_APART | QUIET]
    return sum(
        _write(
            reg,
            f"attention:{code}",
            f"Registration {reg.id} needs attention: {code}",
            f"Registration {reg.id} needs an operator ({code}). {message}",
            [("Reason", code)],
        )
        for code in codes
    )


def dispute_opened(reg: Registration, dispute_id: str, status: str, due_by: datetime | None) -> bool:
    """The payer's bank opened dispute `dispute_id` on the registration's licence."""
    due = f"{due_by:%Y-%m-%d %H:%M} UTC" if due_by else "not given by Stripe"
    return _write(
        reg,
        f"dispute_opened:{dispute_id}",
        f"Dispute opened on registration {reg.id}: evidence due {due}",
        f"The payer's bank opened dispute {dispute_id} ({status}). Answer it in the Stripe dashboard before the "
        f"evidence deadline, {due}; a lost dispute ends the access.",
        [("Dispute", dispute_id), ("Status", status), ("Evidence due", due)],
    )


def access_untold(reg: Registration, active: bool, error: str | None) -> bool:
    """LTIaaS cannot be told the access the platform should have (it keeps being retried)."""
    verb = "activate" if active else "deactivate"
    return _write(
        reg,
        "access_untold",
        f"LTIaaS cannot be told the access of registration {reg.id}'s platform",
        f"LTIaaS did not {verb} platform {reg.platform_id}: {error or 'no answer'}. It is retried by itself; "
        "check the platform at LTIaaS if this lasts.",
        [("Platform", reg.platform_id or "-"), ("Should be", "active" if active else "inactive")],
    )


def vendor_webhook_failed(reg: Registration, message_id: str, kind: str, tries: int, answer: str | None) -> bool:
    """A message to the vendor's systems was given up after its last try."""
    return _write(
        reg,
        "vendor_webhook_failed",
        f"The vendor's systems did not take a message of registration {reg.id}",
        f"The {kind} message {message_id} was not taken in {tries} tries over more than 3 days (last: "
        f"{answer or 'no answer'}); it is given up. Send it again from the registration once their endpoint answers.",
        [("Message", message_id), ("Type", kind)],
    )


def _write(reg: Registration, reason: str, subject: str, summary: str, facts: list[tuple[str, str]]) -> bool:
    """The notification of `reason` on `reg`, unless there is one; flushes. True when it is new."""
    settings = current_app.config["SETTINGS"]
    if not notifying(settings):
        return False
    link = f"{settings.public_url.rstrip('/')}/operator/registrations/{reg.id}"
    facts = [
        ("Registration", str(reg.id)),
        ("School", reg.payer_name or "-"),
        ("LMS", f"{reg.lms_family or 'LMS'} at {reg.lms_url}"),
        ("State", reg.state),
        *facts,
    ]
    scrub = _scrubber(reg)
    now = utcnow()
    created = insert_ignoring_duplicates(
        Notification,
        {
            "registration_pk": reg.id,
            "reason": reason[:REASON_MAX],
            "subject": scrub(f"[paygate] {subject}")[:300],
            "body_text": scrub(_text(summary, facts, link, settings.public_url)),
            "body_html": scrub(_html(summary, facts, link, settings.public_url)),
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        },
    )
    if created and has_app_context():
        g.setdefault(WRITTEN, True)
    return created


def _scrubber(reg: Registration):
    """Strikes the registration's flow token (the key of its admin's pages) out of a text."""
    token = reg.flow_token
    return (lambda text: text.replace(token, "[hidden]")) if token else (lambda text: text)


def _footer(public_url: str) -> str:
    return (
        f"You receive this because your address is in NOTIFY_EMAILS of {public_url.rstrip('/')}. "
        "One e-mail is sent per registration and reason."
    )


def _text(summary: str, facts: list[tuple[str, str]], link: str, public_url: str) -> str:
    width = max(len(name) for name, _ in facts)
    rows = "\n".join(f"{name + ':':<{width + 1}} {value}" for name, value in facts)
    return f"{summary}\n\n{rows}\n\nOpen the registration: {link}\n\n-- \n{_footer(public_url)}\n"


def _html(summary: str, facts: list[tuple[str, str]], link: str, public_url: str) -> str:
    rows = Markup("").join(
        Markup('<tr><th style="text-align:left;padding-right:1em">{}</th><td>{}</td></tr>').format(name, value)
        for name, value in facts
    )
    return str(
        Markup(
            '<!doctype html><html><body style="font-family:sans-serif"><p>{}</p><table>{}</table>'
            '<p><a href="{}">Open registration {}</a></p><p style="color:#666;font-size:small">{}</p></body></html>'
        ).format(summary, rows, link, escape(link.rsplit("/", 1)[-1]), _footer(public_url))
    )
