"""Every operator endpoint against every role (docs/architecture.md, invariant 13): below the least role the contract
gives it, 403 with one sentence (JSON under /operator/api/, a page elsewhere) and nothing changed, in the database or
at Stripe and LTIaaS; at or above it, not 403. Endpoints are read from the app's URL map, their arguments filled by
name or converter, so a route added later is tried too; its least role must be pinned in CONTRACT below."""

import secrets
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from paygate.application import create_app
from paygate.core.db import db
from paygate.core.models import ROLES, Operator, OperatorSession, VendorMessage
from paygate.web.operator import roles
from paygate.web.operator.auth import SESSION_ID, password_stamp, token_hash
from tests.helpers.apps import BASE_CONFIG
from tests.helpers.operators import give_token, seed

# The contract's least role of each operator endpoint, read from it, not from roles.py: lowering an entry there fails.
CONTRACT = {
    "operator.sign_in": "viewer",
    "operator.sign_out": "viewer",
    "operator.set_password": "viewer",
    "operator.sign_in_code": "viewer",
    "operator.sign_in_enrol": "viewer",
    "operator.account": "viewer",
    "operator.account_recovery_codes": "viewer",
    "operator.account_token": "viewer",
    "operator.account_token_revoke": "viewer",
    "operator.registrations": "viewer",
    "operator.export_csv": "viewer",
    "operator.detail": "viewer",
    "operator.api_registrations": "viewer",
    "operator.api_registration": "viewer",
    "operator.overview": "viewer",
    "operator.overview_money_chart": "viewer",
    "operator.overview_funnel_chart": "viewer",
    "operator.note": "support",
    "operator.retry": "support",
    "operator.resolve": "support",
    "operator.check_access": "support",
    "operator.resend_vendor_message": "support",
    "operator.api_resend_vendor_message": "support",
    "operator.refund": "admin",
    "operator.access_override": "admin",
    "operator.cancel_at_period_end": "admin",
    "operator.replace_licence_key": "admin",
    "operator.operators": "admin",
    "operator.add_operator": "admin",
    "operator.operator_link": "admin",
    "operator.operator_role": "admin",
    "operator.disable_operator": "admin",
    "operator.enable_operator": "admin",
    "operator.remove_operator": "admin",
    "operator.reset_operator_factor": "admin",
}
PUBLIC = {"operator.sign_in", "operator.sign_in_code", "operator.sign_in_enrol", "operator.set_password"}
MESSAGE_ID = "msg_" + "a" * 20
# Made once: hashing a password per test would be most of the matrix's time.
_HASH = None


def _endpoints():
    app = create_app({**BASE_CONFIG, "database_url": "sqlite://"})  # its routes only: no database is used
    return sorted(
        (rule.endpoint, method, rule.rule, tuple(rule.arguments), dict(rule._converters))
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith("operator.")
        for method in sorted(rule.methods & {"GET", "POST"})
    )


ENDPOINTS = _endpoints()


def test_every_operator_endpoint_has_its_least_role_in_roles_and_in_the_contract():
    names = {endpoint for endpoint, *_ in ENDPOINTS}
    assert names - set(roles.NEEDS) == set()
    assert names - set(CONTRACT) == set()
    assert {name: roles.NEEDS[name] for name in names} == {name: CONTRACT[name] for name in names}


def _seed(app) -> dict:
    """A registration with a vendor message, an operator of each role (the actors) and one to act on."""
    global _HASH
    if _HASH is None:
        from paygate.web.operator.passwords import hash_password

        _HASH = hash_password("correct horse battery staple")
    (pk,) = seed(app, platform_id="platform-1", payment_intent_id="pi_1", amount_paid=4900, currency_paid="usd")
    with app.app_context():
        db.session.add(
            VendorMessage(
                message_id=MESSAGE_ID, type="registration.completed", registration_pk=pk, payload="{}", status="failed"
            )
        )
        actors = {}
        for role in ROLES:
            op = Operator(
                email=f"{role}@vendor.example", role=role, password_hash=_HASH, password_set_at=datetime.now()
            )
            db.session.add(op)
            db.session.flush()
            actors[role] = op.id
        target = Operator(
            email="target@vendor.example",
            role="support",
            password_hash=_HASH,
            password_set_at=datetime.now(),
            invite_expires_at=datetime.now() + timedelta(hours=1),
        )
        link = secrets.token_urlsafe(32)
        target.invite_token_hash = token_hash(link)  # SHA-256, as accounts.py keeps a link
        db.session.add(target)
        db.session.commit()
        return {"pk": pk, "operator_id": target.id, "message_id": MESSAGE_ID, "token": link, "actors": actors}


def _signed_in(app, operator_id):
    """A client with a server-side session of the operator, as auth.sign_in makes one (without the password's cost)."""
    client = app.test_client()
    session_id = secrets.token_urlsafe(32)
    with app.app_context():
        operator = db.session.get(Operator, operator_id)
        db.session.add(
            OperatorSession(
                operator_id=operator_id,
                token_hash=token_hash(session_id),
                expires_at=datetime.now() + timedelta(hours=1),
            )
        )
        db.session.commit()
        user_id = f"{operator_id}.{password_stamp(operator)}"
    with client.session_transaction() as session:
        session[SESSION_ID] = session_id
        session["_user_id"] = user_id
        session["_fresh"] = True
    return client


def _url(rule: str, arguments, converters, seeded) -> str:
    url = rule
    for name in arguments:
        converter = converters.get(name)
        kind = type(converter).__name__ if converter is not None else "UnicodeConverter"
        if name in seeded:
            value = seeded[name]
        elif kind == "IntegerConverter":
            value = seeded["pk"]
        else:
            value = seeded["message_id"]
        for pattern in (f"<{name}>", f"<int:{name}>", f"<string:{name}>", f"<path:{name}>"):
            url = url.replace(pattern, str(value))
    assert "<" not in url, url
    return url


def _snapshot(app, calls) -> dict:
    """Every row of every table (a token's last use aside, which a bearer call records), and the calls made out."""
    state = {}
    with app.app_context():
        for table in db.metadata.sorted_tables:
            if table.name == "operator_sessions":
                continue  # the actors' own sign-ins
            columns = [c for c in table.columns if c.name != "last_used_at"]
            state[table.name] = sorted(map(repr, db.session.execute(select(*columns)).all()))
    state["outgoing"] = len(calls)
    return state


def _request(client, method, url, headers=None):
    if method == "GET":
        return client.get(url, headers=headers)
    data = {
        "form_id": secrets.token_urlsafe(16),
        "text": "why",
        "role": "viewer",
        "override": "grant",
    }
    return client.post(url, data=data, headers=headers)


@pytest.mark.parametrize(
    ("endpoint", "method", "rule", "arguments", "converters"), ENDPOINTS, ids=[f"{e[1]} {e[0]}" for e in ENDPOINTS]
)
def test_each_role_is_refused_below_the_endpoints_role_and_let_through_at_it(
    app, mocked, stripe_api, ltiaas_api, endpoint, method, rule, arguments, converters
):
    app.config["WTF_CSRF_ENABLED"] = False  # what is tried here is the role; tests of each form send its token
    seeded = _seed(app)
    url = _url(rule, arguments, converters, seeded)
    needed = ROLES.index(CONTRACT.get(endpoint, "admin"))
    for role in ROLES:  # the lower roles first: a change let through at the end affects no refusal
        client = _signed_in(app, seeded["actors"][role])
        refused = ROLES.index(role) < needed and endpoint not in PUBLIC
        before = _snapshot(app, mocked.calls) if refused else None
        response = _request(client, method, url)
        if refused:
            assert response.status_code == 403, (role, response.status_code, response.text[:300])
            if url.startswith("/operator/api/"):
                assert response.is_json and response.get_json()["error"] == "Forbidden"
                assert f"Your role ({role}) may not do this" in response.get_json()["message"]
            else:
                assert response.mimetype == "text/html" and f"Your role ({role}) may not do this" in response.text
            assert _snapshot(app, mocked.calls) == before
        else:
            assert response.status_code != 403, (role, response.text[:300])


@pytest.mark.parametrize("role", ROLES)
def test_an_api_token_acts_with_its_operators_role(app, mocked, stripe_api, ltiaas_api, role):
    seeded = _seed(app)
    with app.app_context():
        email = db.session.get(Operator, seeded["actors"][role]).email
    bearer = {"Authorization": f"Bearer {give_token(app, email)}"}
    client = app.test_client()
    api = [e for e in ENDPOINTS if e[2].startswith("/operator/api/")]
    assert api
    for endpoint, method, rule, arguments, converters in api:
        url = _url(rule, arguments, converters, seeded)
        before = _snapshot(app, mocked.calls)
        response = _request(client, method, url, headers=bearer)
        if ROLES.index(role) < ROLES.index(CONTRACT.get(endpoint, "admin")):
            assert response.status_code == 403 and response.is_json, (endpoint, response.text[:300])
            assert _snapshot(app, mocked.calls) == before
        else:
            assert response.status_code not in (401, 403), (endpoint, response.text[:300])
