"""Honest sign-in logs: signing in, failing to and signing out each write one line naming the operator's e-mail,
on the operator sign-in module's logger, and never the password or a session id."""

import logging

import pytest

from paygate.web.operator import auth
from tests.helpers.operators import EMAIL, PASSWORD, csrf_token, sign_in

LOGGER = auth.__name__


@pytest.fixture
def logs(caplog):
    caplog.set_level(logging.DEBUG)
    return caplog


def lines(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER]


def nothing_secret(caplog, *secrets):
    for record in caplog.records:
        text = record.getMessage() + repr(record.args)
        for secret in secrets:
            assert secret not in text, (record.name, text)


def test_a_sign_in_writes_one_info_line_with_the_email(client, operator, logs):
    csrf_token(client)
    logs.clear()
    assert sign_in(client).status_code == 303
    (line,) = lines(logs)
    assert line.levelno == logging.INFO and EMAIL in line.getMessage() and "signed in" in line.getMessage()
    nothing_secret(logs, PASSWORD)
    with client.session_transaction() as session:
        nothing_secret(logs, session[auth.SESSION_ID])


@pytest.mark.parametrize(
    ("email", "named"),
    [(EMAIL, EMAIL), ("nobody@vendor.example", "nobody@vendor.example"), ("hunter2 is my password", None)],
)
def test_a_failed_sign_in_writes_one_warning_naming_what_was_typed(client, operator, logs, email, named):
    csrf_token(client)
    logs.clear()
    assert sign_in(client, email=email, password="a wrong guess " + PASSWORD).status_code == 401
    (line,) = lines(logs)
    assert line.levelno == logging.WARNING and "sign-in failed" in line.getMessage()
    if named:
        assert named in line.getMessage()
    else:  # a password typed into the e-mail field is not written down either
        assert "hunter2" not in line.getMessage()
    nothing_secret(logs, PASSWORD, "hunter2")


def test_a_sign_out_writes_one_info_line_with_the_email(ops, logs):
    token = csrf_token(ops, "/operator/")
    logs.clear()
    assert ops.post("/operator/sign-out", data={"csrf_token": token}).status_code == 303
    (line,) = lines(logs)
    assert line.levelno == logging.INFO and EMAIL in line.getMessage() and "signed out" in line.getMessage()
    nothing_secret(logs, PASSWORD)
