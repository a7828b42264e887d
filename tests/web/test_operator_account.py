"""The operator's own account page, for every role: e-mail, role, second factor and new recovery codes, and API tokens
made (shown once), listed, revoked; tokens act with the operator's role, expire, record their last use, and stop
working for a disabled operator."""

import re
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select, update

from paygate.core.db import db, utcnow
from paygate.core.models import Operator, OperatorAudit, OperatorToken
from paygate.web.operator.auth import token_hash
from tests.helpers.apps import make_app
from tests.helpers.factors import code as totp_code
from tests.helpers.factors import enrol, send_code, sign_in_with_code, stop_clock
from tests.helpers.operators import EMAIL, add_operator, csrf_token, sign_in

OTHER = "other@vendor.example"


@pytest.fixture
def viewer(app, client):
    add_operator(app, role="viewer")
    assert sign_in(client).status_code == 303
    return client


def make_token(client, **form):
    return client.post("/operator/account/tokens", data={**form, "csrf_token": csrf_token(client, "/operator/account")})


def shown_token(page: str) -> str:
    return re.search(r'id="new-token">(pgo_[^<]+)<', page).group(1)


def api(app, token, method="get", path="/operator/api/registrations"):
    """A bearer call from a client without the page's session cookie (which would sign it in by itself)."""
    return getattr(app.test_client(), method)(path, headers={"Authorization": f"Bearer {token}"})


def rows(app, model):
    with app.app_context():
        return db.session.scalars(select(model).order_by(model.id)).all()


def test_every_role_sees_its_own_account(app, viewer):
    page = viewer.get("/operator/account")
    assert page.status_code == 200
    assert EMAIL in page.text and 'id="account-role">viewer<' in page.text
    assert "not enrolled" in page.text and "No API tokens." in page.text
    assert 'href="/operator/account"' in viewer.get("/operator/").text


def test_a_token_is_shown_once_acts_with_the_role_and_is_listed_without_itself(app, viewer):
    answer = make_token(viewer, label="nightly export", days="30")
    assert answer.status_code == 200
    token = shown_token(answer.text)
    (stored,) = rows(app, OperatorToken)
    assert stored.token_hash == token_hash(token) and stored.label == "nightly export"
    assert stored.expires_at - stored.created_at == timedelta(days=30)
    assert api(app, token).status_code == 200
    # A viewer's token may read, not act (sending again needs support).
    assert api(app, token, "post", "/operator/api/registrations/1/vendor-messages/1/resend").status_code == 403
    listing = viewer.get("/operator/account").text
    # Its id, not 1: PostgreSQL's ids go on across the tests of a run.
    assert token not in listing and "nightly export" in listing and f'id="token-{stored.id}"' in listing
    (audit,) = rows(app, OperatorAudit)
    assert (audit.actor, audit.action, audit.subject) == (EMAIL, "token made", EMAIL) and token not in audit.detail


def test_a_token_works_ninety_days_by_default(app, viewer):
    make_token(viewer, label="")
    (stored,) = rows(app, OperatorToken)
    assert stored.expires_at - stored.created_at == timedelta(days=90) and stored.label is None


# The last: 30 in full-width digits.
@pytest.mark.parametrize("days", ["0", "366", "-1", "ninety", "1e2", "9" * 400, "\uff13\uff10"])
def test_days_outside_one_to_365_are_refused_with_one_sentence(app, viewer, days):
    answer = make_token(viewer, label="x", days=days)
    assert answer.status_code == 400 and "Days must be a whole number from 1 to 365." in answer.text
    assert rows(app, OperatorToken) == []


def test_a_revoked_token_is_refused_and_says_so_in_the_list(app, viewer):
    token = shown_token(make_token(viewer, label="ci").text)
    (stored,) = rows(app, OperatorToken)
    token_id = stored.id
    answer = viewer.post(
        f"/operator/account/tokens/{token_id}/revoke", data={"csrf_token": csrf_token(viewer, "/operator/account")}
    )
    assert answer.status_code == 303
    assert api(app, token).status_code == 401
    page = viewer.get("/operator/account").text
    assert f'id="revoke-{token_id}"' not in page and "revoked 20" in page
    assert [a.action for a in rows(app, OperatorAudit)] == ["token made", "token revoked"]


def test_another_operators_token_cannot_be_revoked(app, viewer):
    add_operator(app, email=OTHER)
    other_client = app.test_client()
    sign_in(other_client, email=OTHER)
    token = shown_token(make_token(other_client, label="theirs").text)
    (stored,) = rows(app, OperatorToken)
    answer = viewer.post(
        f"/operator/account/tokens/{stored.id}/revoke", data={"csrf_token": csrf_token(viewer, "/operator/account")}
    )
    assert answer.status_code == 404 and "You have no such API token." in answer.text
    assert api(app, token).status_code == 200
    assert "theirs" not in viewer.get("/operator/account").text


def test_expired_tokens_and_disabled_operators_tokens_are_refused(app, viewer):
    token = shown_token(make_token(viewer, label="soon", days="1").text)
    with app.app_context():
        db.session.execute(update(OperatorToken).values(expires_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()
    assert api(app, token).status_code == 401
    assert "expired" in viewer.get("/operator/account").text
    fresh = shown_token(make_token(viewer, label="fresh").text)
    assert api(app, fresh).status_code == 200
    with app.app_context():
        db.session.execute(update(Operator).values(disabled_at=datetime(2026, 1, 2)))
        db.session.commit()
    assert api(app, fresh).status_code == 401


def test_a_tokens_last_use_is_listed(app, viewer):
    token = shown_token(make_token(viewer, label="reader").text)
    assert "never" in viewer.get("/operator/account").text
    api(app, token)
    (stored,) = rows(app, OperatorToken)
    assert stored.last_used_at is not None
    assert stored.last_used_at.strftime("%Y-%m-%d %H:%M:%S") in viewer.get("/operator/account").text


def test_recovery_codes_need_a_second_factor(app, viewer):
    answer = viewer.post(
        "/operator/account/recovery-codes", data={"csrf_token": csrf_token(viewer, "/operator/account")}
    )
    assert answer.status_code == 400 and "You have no second factor yet" in answer.text


def test_new_recovery_codes_void_the_old_ones(database_url, monkeypatch):
    app = make_app(database_url, operator_2fa="required")
    stop_clock(monkeypatch)
    add_operator(app)
    old = enrol(app)
    client = app.test_client()
    assert sign_in_with_code(client, totp_code()).status_code == 303
    page = client.get("/operator/account").text
    assert "enrolled 2026-01-01" in page and "10 unused recovery codes" in page
    answer = client.post(
        "/operator/account/recovery-codes", data={"csrf_token": csrf_token(client, "/operator/account")}
    )
    assert answer.status_code == 200
    new = re.findall(r"<li>([a-z0-9]{5}-[a-z0-9]{5})</li>", answer.text)
    assert len(new) == 10 and not set(new) & set(old)
    assert [a.action for a in rows(app, OperatorAudit)] == ["recovery codes renewed"]
    client.post("/operator/sign-out", data={"csrf_token": csrf_token(client, "/operator/")})
    assert sign_in_with_code(client, old[0]).status_code == 401
    assert send_code(client, new[0]).status_code == 303
    with app.app_context():
        db.engine.dispose()


def test_the_account_needs_a_sign_in(client):
    answer = client.get("/operator/account")
    assert answer.status_code == 302 and "/operator/sign-in" in answer.headers["Location"]
