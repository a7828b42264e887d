"""OPERATOR_2FA=required: the password alone does not sign in; a code of the authenticator app (RFC 6238, one step of
drift either way) or a recovery code does, each once, even when two requests carry it at the same moment; enrolment at
the first sign-in; disabled operators and operators without a password are refused."""

import logging
import re
import threading
from datetime import datetime

import pytest
from sqlalchemy import select, update

from paygate.core.db import db
from paygate.core.models import Operator, OperatorAudit, OperatorRecoveryCode
from paygate.web.operator import auth
from tests.helpers.apps import make_app
from tests.helpers.factors import (
    STEP,
    code,
    enrol,
    operator_row,
    send_code,
    sign_in_with_code,
    stop_clock,
)
from tests.helpers.operators import EMAIL, PASSWORD, add_operator, csrf_token, sign_in


@pytest.fixture
def app(database_url):
    app = make_app(database_url, operator_2fa="required")
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def clock(monkeypatch):
    stop_clock(monkeypatch)


@pytest.fixture
def enrolled(app, clock):
    add_operator(app)
    return enrol(app)


def signed_in(client) -> bool:
    return client.get("/operator/").status_code == 200


def test_the_password_alone_does_not_sign_in_the_code_does(app, client, enrolled, caplog):
    caplog.set_level(logging.INFO)
    answer = sign_in(client)
    assert answer.status_code == 303 and answer.headers["Location"].startswith("/operator/sign-in/code")
    assert not signed_in(client)
    assert not [r for r in caplog.records if "signed in" in r.getMessage()]
    assert send_code(client, code()).status_code == 303
    assert signed_in(client)
    (line,) = [r for r in caplog.records if "signed in" in r.getMessage()]
    assert EMAIL in line.getMessage()
    assert not [r for r in caplog.records if code() in r.getMessage() + repr(r.args)]
    assert operator_row(app).totp_last_step == STEP


def test_a_code_is_accepted_once(app, client, enrolled, caplog):
    assert sign_in_with_code(client, code()).status_code == 303
    client.post("/operator/sign-out", data={"csrf_token": csrf_token(client, "/operator/")})
    caplog.set_level(logging.WARNING)
    replayed = sign_in_with_code(client, code())
    assert replayed.status_code == 401 and "Wrong code, or a code already used." in replayed.text
    assert not signed_in(client)
    (line,) = [r for r in caplog.records if r.name == auth.__name__]
    assert EMAIL in line.getMessage() and code() not in line.getMessage()
    # An older code is refused too once a newer one was accepted; the next one signs in.
    assert send_code(client, code(STEP - 1)).status_code == 401


def test_the_next_code_signs_in_after_one_was_used(app, client, enrolled, monkeypatch):
    assert sign_in_with_code(client, code()).status_code == 303
    client.post("/operator/sign-out", data={"csrf_token": csrf_token(client, "/operator/")})
    stop_clock(monkeypatch, (STEP + 1) * 30 + 15)
    assert sign_in_with_code(client, code(STEP + 1)).status_code == 303
    assert signed_in(client)


@pytest.mark.parametrize(("drift", "accepted"), [(-2, False), (-1, True), (0, True), (1, True), (2, False)])
def test_one_step_of_drift_either_way(app, client, enrolled, drift, accepted):
    answer = sign_in_with_code(client, code(STEP + drift))
    assert (answer.status_code == 303) is accepted
    assert signed_in(client) is accepted


@pytest.mark.parametrize("typed", ["", "12345", "1234567", "abcdef", "x" * 5000, "١٢٣٤٥٦", "\x00" * 6])
def test_what_is_no_code_is_refused_with_one_sentence(app, client, enrolled, typed):
    answer = sign_in_with_code(client, typed)
    assert answer.status_code == 401 and "Wrong code, or a code already used." in answer.text
    assert operator_row(app).totp_last_step is None


def test_a_recovery_code_signs_in_once(app, client, enrolled):
    first = enrolled[0]
    assert sign_in_with_code(client, first.upper().replace("-", " ")).status_code == 303  # as typed from paper
    assert signed_in(client)
    client.post("/operator/sign-out", data={"csrf_token": csrf_token(client, "/operator/")})
    assert sign_in_with_code(client, first).status_code == 401
    assert not signed_in(client)
    with app.app_context():
        used = db.session.scalars(select(OperatorRecoveryCode).where(OperatorRecoveryCode.used_at.is_not(None))).all()
        assert len(used) == 1 and first not in used[0].code_hash
    assert send_code(client, enrolled[1]).status_code == 303  # the others still work


def test_the_password_step_runs_out_after_a_few_minutes(app, client, enrolled):
    sign_in(client)
    with client.session_transaction() as session:
        passed = session[auth.PASSWORD_PASSED]
        session[auth.PASSWORD_PASSED] = {**passed, "at": passed["at"] - auth.PASSWORD_PASSED_SECONDS - 1}
    answer = client.post("/operator/sign-in/code", data={"code": code(), "csrf_token": csrf_token(client)})
    assert answer.status_code == 303 and answer.headers["Location"].startswith("/operator/sign-in")
    assert not signed_in(client)
    assert "took too long" in client.get("/operator/sign-in").text
    assert operator_row(app).totp_last_step is None  # the code was not spent


def test_no_code_page_without_the_password(app, client, enrolled):
    for path in ("/operator/sign-in/code", "/operator/sign-in/enrol"):
        answer = client.get(path)
        assert answer.status_code == 303 and answer.headers["Location"].startswith("/operator/sign-in")
    answer = client.post("/operator/sign-in/code", data={"code": code(), "csrf_token": csrf_token(client)})
    assert answer.status_code == 303 and not signed_in(client)


def test_an_operator_disabled_after_the_password_is_refused_the_code(app, client, enrolled):
    sign_in(client)
    token = csrf_token(client, "/operator/sign-in/code")
    with app.app_context():
        db.session.execute(update(Operator).values(disabled_at=datetime(2026, 1, 2)))
        db.session.commit()
    answer = client.post("/operator/sign-in/code", data={"code": code(), "csrf_token": token})
    assert answer.status_code == 303 and not signed_in(client)


def test_wrong_codes_are_throttled(app, client, enrolled):
    sign_in(client)
    for n in range(5):
        assert send_code(client, code(STEP + 5 + n)).status_code == 401
    refused = send_code(client, code())
    assert refused.status_code == 429 and "Too many failed sign-ins" in refused.text
    assert not signed_in(client) and operator_row(app).totp_last_step is None


# Enrolment at the first sign-in


def secret_on(page: str) -> str:
    return re.search(r'id="secret">([A-Z2-7 ]+)<', page).group(1).replace(" ", "")


def test_enrolment_shows_a_qr_code_and_the_secret_then_ten_recovery_codes_once(app, client, clock):
    add_operator(app)
    answer = sign_in(client)
    assert answer.headers["Location"].startswith("/operator/sign-in/enrol")
    assert not signed_in(client)
    page = client.get("/operator/sign-in/enrol")
    assert page.status_code == 200 and "<svg" in page.text and "<script" not in page.text
    secret = secret_on(page.text)
    assert len(secret) == 32
    assert secret_on(client.get("/operator/sign-in/enrol").text) == secret  # the same until confirmed
    token = csrf_token(client, "/operator/sign-in/enrol")
    wrong = client.post("/operator/sign-in/enrol", data={"code": code(STEP + 3, secret), "csrf_token": token})
    assert wrong.status_code == 401 and "does not match" in wrong.text and not signed_in(client)
    done = client.post("/operator/sign-in/enrol", data={"code": code(STEP, secret), "csrf_token": token})
    assert done.status_code == 200
    codes = re.findall(r"<li>([a-z0-9]{5}-[a-z0-9]{5})</li>", done.text)
    assert len(codes) == 10 and len(set(codes)) == 10
    assert signed_in(client)
    with app.app_context():
        operator = db.session.scalars(select(Operator)).one()
        assert operator.totp_enrolled_at is not None and operator.totp_last_step == STEP
        hashes = db.session.scalars(select(OperatorRecoveryCode.code_hash)).all()
        assert len(hashes) == 10 and not set(codes) & set(hashes)
        assert db.session.scalars(select(OperatorAudit.action)).all() == ["second factor enrolled"]
    # The next sign-in asks for a code, not for enrolment; the code that confirmed is spent.
    client.post("/operator/sign-out", data={"csrf_token": csrf_token(client, "/operator/")})
    assert sign_in_with_code(client, code(STEP, secret)).status_code == 401
    assert send_code(client, codes[0]).status_code == 303


def test_an_enrolled_operator_is_never_shown_the_secret_again(app, client, enrolled):
    sign_in(client)
    answer = client.get("/operator/sign-in/enrol")
    assert answer.status_code == 303 and answer.headers["Location"].startswith("/operator/sign-in/code")


def test_without_operator_2fa_the_password_signs_in(database_url):
    app = make_app(database_url)  # the tests' settings: OPERATOR_2FA=off
    add_operator(app)
    client = app.test_client()
    assert sign_in(client).headers["Location"] == "/operator/overview"
    assert signed_in(client)


# Who may not sign in at all


@pytest.mark.parametrize("change", [{"disabled_at": datetime(2026, 1, 2)}, {"password_set_at": None}])
def test_disabled_or_passwordless_operators_are_refused_like_a_wrong_password(app, client, enrolled, change, caplog):
    with app.app_context():
        db.session.execute(update(Operator).values(**change))
        db.session.commit()
    caplog.set_level(logging.INFO)
    answer = sign_in(client)
    assert answer.status_code == 401 and "Wrong e-mail or password." in answer.text
    (line,) = [r for r in caplog.records if r.name == auth.__name__]
    assert line.levelno == logging.WARNING and EMAIL in line.getMessage() and PASSWORD not in line.getMessage()
    assert client.get("/operator/sign-in/code").status_code == 303


# Two requests with the same code at the same moment (PostgreSQL: row locks)


@pytest.mark.postgres
@pytest.mark.parametrize("kind", ["totp", "recovery code"])
def test_a_code_sent_twice_at_once_signs_in_once(pg_url, monkeypatch, kind):
    app = make_app(pg_url, operator_2fa="required")
    stop_clock(monkeypatch)
    add_operator(app)
    recovery = enrol(app)
    typed = code() if kind == "totp" else recovery[0]
    clients = [app.test_client() for _ in range(2)]
    tokens = []
    for client in clients:
        sign_in(client)
        tokens.append(csrf_token(client, "/operator/sign-in/code"))
    barrier = threading.Barrier(2)
    answers = [None, None]

    def send(i):
        barrier.wait()
        answers[i] = clients[i].post("/operator/sign-in/code", data={"code": typed, "csrf_token": tokens[i]})

    threads = [threading.Thread(target=send, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(a.status_code for a in answers) == [303, 401]
    assert sum(signed_in(c) for c in clients) == 1
    with app.app_context():
        db.engine.dispose()
