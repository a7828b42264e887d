"""Operators over HTTP: accounts, sign-in, CSRF-protected forms, and registrations to look at."""

import re
import secrets
from datetime import datetime, timedelta

from sqlalchemy import select

from paygate.core.db import db
from paygate.core.models import CheckoutSession, Operator, OperatorToken, Registration, TimelineEntry
from paygate.web.operator.auth import new_api_token, token_expiry
from paygate.web.operator.passwords import hash_password
from tests.helpers.flow import open_frame

EMAIL = "support@vendor.example"
PASSWORD = "correct horse battery staple"


def add_operator(app, email=EMAIL, password=PASSWORD, role="admin"):
    with app.app_context():
        db.session.add(
            Operator(email=email, password_hash=hash_password(password), role=role, password_set_at=datetime.now())
        )
        db.session.commit()


def give_token(app, email=EMAIL) -> str:
    """A new API token of the operator with that e-mail."""
    token, stored = new_api_token()
    with app.app_context():
        operator = db.session.scalars(select(Operator).where(Operator.email == email)).one()
        db.session.add(OperatorToken(operator_id=operator.id, token_hash=stored, expires_at=token_expiry()))
        db.session.commit()
    return token


def csrf_token(client, path="/operator/sign-in") -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    return re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)


def form_id(page_text: str, action: str) -> str:
    """The form_id of the form posting to `action` on a page."""
    form = re.search(r'<form method="post" action="' + re.escape(action) + r'".*?</form>', page_text, re.S).group(0)
    return re.search(r'name="form_id" value="([^"]+)"', form).group(1)


def sign_in(client, email=EMAIL, password=PASSWORD, **kwargs):
    return client.post(
        "/operator/sign-in", data={"email": email, "password": password, "csrf_token": csrf_token(client)}, **kwargs
    )


def post(client, path, data=None, page=None):
    """A form post with the CSRF token of `page` (default: the detail page the form is on)."""
    token = csrf_token(client, page or re.sub(r"/(retry|refund|access|notes|resolve)$", "", path))
    return client.post(path, data={**(data or {}), "csrf_token": token})


def paid_registration(client, stripe_api, ltiaas_api, email="admin@school.example", fail_completion=None, **lms):
    """Drive the admin's flow: open, pay, return. Returns the registration's pk."""
    _, token, _ = open_frame(client, ltiaas_api, **lms)
    client.get(f"/flow/{token}/pay")
    with client.application.app_context():
        reg = db.session.scalars(select(Registration).where(Registration.flow_token == token)).one()
        session_id = db.session.scalars(
            select(CheckoutSession.session_id).where(CheckoutSession.registration_pk == reg.id)
        ).one()
        pk = reg.id
    stripe_api.pay(session_id, email=email)
    if fail_completion is not None:
        ltiaas_api.complete_failures.append(fail_completion)
    client.get(f"/flow/{token}/paid?session_id={session_id}")
    return pk


def load(app, pk) -> Registration:
    with app.app_context():
        reg = db.session.get(Registration, pk)
        _ = reg.timeline  # loaded before the context ends
        return reg


def seed(app, n=1, **fields) -> list[int]:
    """Registrations written straight to the database (for filters, search and paging)."""
    pks = []
    with app.app_context():
        for i in range(n):
            values = {
                "registration_id": "R" + secrets.token_hex(8),
                "flow_token": secrets.token_urlsafe(32),
                "state": "completed",
                "lms_url": "https://canvas.instructure.com",
                "lms_family": "canvas",
                "lms_version": "cloud",
                "price_id": "price_registration",
                "amount": 4900,
                "currency": "usd",
                "checkout_generation": 0,
                "attempt_count": 0,
                "attempt_uncertain": False,
                "created_at": datetime(2026, 1, 1) + timedelta(hours=i),
            }
            values.update(fields)
            reg = Registration(**values)
            db.session.add(reg)
            db.session.flush()
            pks.append(reg.id)
        db.session.commit()
    return pks


def api_ids(client, **args) -> list[int]:
    response = client.get("/operator/api/registrations", query_string={"limit": 200, **args})
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.get_json()["items"]]


def entries(app, pk, kind=None) -> list[TimelineEntry]:
    with app.app_context():
        stmt = select(TimelineEntry).where(TimelineEntry.registration_pk == pk).order_by(TimelineEntry.id)
        return [e for e in db.session.scalars(stmt) if kind is None or e.kind == kind]
