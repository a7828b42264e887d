"""The operators page: an admin adds an operator, who sets a password by the one-time link and signs in; the last
active admin is kept; a reset ends sessions and tokens; the commands; the password policy."""

import re
import threading
from datetime import timedelta

from sqlalchemy import select

from paygate.core.db import db
from paygate.core.models import Operator, OperatorAudit, OperatorToken
from paygate.web.operator.passwords import problem
from tests.helpers.operators import EMAIL, PASSWORD, add_operator, csrf_token, form_id, give_token, sign_in

NEW = "new@vendor.example"
NEW_PASSWORD = "maple kettle orbit lantern"


def _operator(app, email):
    with app.app_context():
        return db.session.scalars(select(Operator).where(Operator.email == email)).first()


def _post(client, path, data):
    return client.post(path, data={**data, "csrf_token": csrf_token(client, "/operator/operators")})


def _add(client, email=NEW, role="support"):
    page = client.get("/operator/operators").text
    data = {"email": email, "role": role, "form_id": form_id(page, "/operator/operators")}
    return _post(client, "/operator/operators", data)


def test_an_added_operator_sets_a_password_by_the_link_once_and_signs_in(app, ops):
    answer = _add(ops)
    assert answer.status_code == 200
    link = re.search(r'id="link-url" readonly value="([^"]+)"', answer.text).group(1)
    path = link.removeprefix("http://paygate.test")
    added = _operator(app, NEW)
    assert added.role == "support" and added.password_set_at is None
    assert path.split("/")[-1] not in added.invite_token_hash  # only its SHA-256 is kept
    assert "link pending" in ops.get("/operator/operators").text
    assert link not in ops.get("/operator/operators").text  # shown once
    assert sign_in(app.test_client(), NEW, "anything at all").status_code == 401

    newcomer = app.test_client()
    assert newcomer.get(path).status_code == 200
    token = csrf_token(newcomer, path)
    weak = newcomer.post(path, data={"password": "Password1234!", "repeat": "Password1234!", "csrf_token": token})
    assert weak.status_code == 400 and "most common" in weak.text
    done = newcomer.post(path, data={"password": NEW_PASSWORD, "repeat": NEW_PASSWORD, "csrf_token": token})
    assert done.status_code == 303 and done.location.endswith("/operator/sign-in")
    assert sign_in(app.test_client(), NEW, NEW_PASSWORD).status_code == 303
    assert newcomer.get(path).status_code == 404  # used
    with app.app_context():
        actions = [a.action for a in db.session.scalars(select(OperatorAudit).order_by(OperatorAudit.id))]
    assert actions == ["added", "password set"]


def test_the_same_add_form_sent_twice_adds_once(app, ops):
    page = ops.get("/operator/operators").text
    data = {"email": NEW, "role": "viewer", "form_id": form_id(page, "/operator/operators")}
    assert _post(ops, "/operator/operators", data).status_code == 200
    again = _post(ops, "/operator/operators", data)
    assert again.status_code == 303 and "Already done" in ops.get("/operator/operators").text


def test_an_expired_link_and_an_unknown_one_say_so(app, ops):
    link = re.search(r'id="link-url" readonly value="([^"]+)"', _add(ops).text).group(1)
    with app.app_context():
        op = db.session.scalars(select(Operator).where(Operator.email == NEW)).one()
        op.invite_expires_at -= timedelta(hours=25)
        db.session.commit()
    expired = app.test_client().get(link.removeprefix("http://paygate.test"))
    assert expired.status_code == 410 and "expired" in expired.text
    unknown = app.test_client().get("/operator/set-password/" + "x" * 43)
    assert unknown.status_code == 404 and "does not work" in unknown.text


def test_the_last_active_admin_is_kept(app, ops):
    me = _operator(app, EMAIL)
    for path, data in (
        (f"/operator/operators/{me.id}/role", {"role": "viewer"}),
        (f"/operator/operators/{me.id}/disable", {}),
        (f"/operator/operators/{me.id}/remove", {}),
    ):
        assert _post(ops, path, data).status_code == 303
        assert "last active admin" in ops.get("/operator/operators").text
    me = _operator(app, EMAIL)
    assert me.role == "admin" and me.disabled_at is None


def test_role_disable_and_remove_act_at_once_on_sessions_and_tokens(app, ops):
    add_operator(app, "other@vendor.example", role="support")
    other = _operator(app, "other@vendor.example")
    bearer = {"Authorization": f"Bearer {give_token(app, other.email)}"}
    client = app.test_client()
    assert client.get("/operator/api/registrations", headers=bearer).status_code == 200
    assert _post(ops, f"/operator/operators/{other.id}/role", {"role": "viewer"}).status_code == 303
    assert _operator(app, other.email).role == "viewer"
    assert _post(ops, f"/operator/operators/{other.id}/disable", {}).status_code == 303
    assert client.get("/operator/api/registrations", headers=bearer).status_code == 401
    assert _post(ops, f"/operator/operators/{other.id}/remove", {}).status_code == 303
    assert _operator(app, other.email) is None
    with app.app_context():
        assert db.session.scalars(select(OperatorToken)).all() == []
        assert "removed" in [a.action for a in db.session.scalars(select(OperatorAudit))]


def test_a_viewer_sees_no_control_it_may_not_use(app, client):
    add_operator(app, "viewer@vendor.example", role="viewer")
    assert sign_in(client, "viewer@vendor.example").status_code == 303
    page = client.get("/operator/").text
    assert "nav-operators" not in page and "Export CSV" in page
    assert client.get("/operator/operators").status_code == 403


def test_commands_create_with_a_role_disable_enable_and_delete(app):
    runner = app.test_cli_runner()
    made = runner.invoke(args=["operator", "create", NEW, "--password-stdin", "--role", "viewer"], input=PASSWORD)
    assert made.exit_code == 0, made.output
    assert _operator(app, NEW).role == "viewer"
    weak = runner.invoke(args=["operator", "create", NEW, "--password-stdin"], input="password1234\n")
    assert weak.exit_code == 1 and "most common" in weak.output
    assert runner.invoke(args=["operator", "disable", NEW]).exit_code == 0
    assert _operator(app, NEW).disabled_at is not None
    assert runner.invoke(args=["operator", "enable", NEW]).exit_code == 0
    assert _operator(app, NEW).disabled_at is None
    assert runner.invoke(args=["operator", "delete", NEW]).exit_code == 0
    assert _operator(app, NEW) is None
    runner.invoke(args=["operator", "create", EMAIL, "--password-stdin"], input=PASSWORD)
    last = runner.invoke(args=["operator", "delete", EMAIL])
    assert last.exit_code == 1 and "last active admin" in last.output
    with app.app_context():
        actors = {a.actor for a in db.session.scalars(select(OperatorAudit))}
    assert actors == {"command line"}


def test_a_password_reset_at_the_command_line_revokes_api_tokens(app):
    add_operator(app)
    bearer = {"Authorization": f"Bearer {give_token(app)}"}
    runner = app.test_cli_runner()
    assert runner.invoke(args=["operator", "create", EMAIL, "--password-stdin"], input=NEW_PASSWORD).exit_code == 0
    assert app.test_client().get("/operator/api/registrations", headers=bearer).status_code == 401
    assert _operator(app, EMAIL).role == "admin"  # kept without --role


def test_the_policy_refuses_short_and_common_passwords():
    assert "12 characters" in problem("short")
    for common in ("password1234", "Password1234!", "QWERTYUIOP123", "123456789012"):
        assert "most common" in problem(common), common
    assert problem(PASSWORD) is None and problem(NEW_PASSWORD) is None


def test_two_admins_demoting_each_other_at_once_leave_one_admin_and_no_error(pg_app):
    """Each change takes the accounts' one lock before any row: one goes first, the other is refused in a sentence."""
    from paygate.web.operator import accounts

    add_operator(pg_app, "a@vendor.example")
    add_operator(pg_app, "b@vendor.example")
    barrier, outcomes = threading.Barrier(2), {}

    def demote(actor, target):
        with pg_app.app_context():
            operator = accounts.by_email(target)
            barrier.wait()
            try:
                accounts.change_role(operator, "support", actor)
                db.session.commit()
                outcomes[actor] = "demoted"
            except accounts.Refused as exc:
                db.session.rollback()
                outcomes[actor] = str(exc)

    threads = [
        threading.Thread(target=demote, args=("a@vendor.example", "b@vendor.example")),
        threading.Thread(target=demote, args=("b@vendor.example", "a@vendor.example")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(o == "demoted" for o in outcomes.values()) == [False, True]
    assert any("last active admin" in o for o in outcomes.values())
    with pg_app.app_context():
        assert db.session.scalars(select(Operator.role).where(Operator.role == "admin")).all() == ["admin"]
