"""`flask --app wsgi operator token EMAIL`: a new token printed once (with --label and --days), `--list` without the
tokens themselves, `--revoke` every live one and `--revoke-id N` one; each change in the operators' audit."""

from datetime import timedelta

from sqlalchemy import select

from paygate.core.db import db
from paygate.core.models import OperatorAudit, OperatorToken
from tests.helpers.operators import EMAIL, add_operator


def run(app, *args):
    return app.test_cli_runner().invoke(args=["operator", "token", EMAIL, *args])


def works(client, token) -> bool:
    answer = client.application.test_client().get(
        "/operator/api/registrations", headers={"Authorization": f"Bearer {token}"}
    )
    return answer.status_code == 200


def test_label_days_list_and_revoke_one(app, client, operator):
    first = run(app, "--label", "nightly\texport", "--days", "7")
    assert first.exit_code == 0, first.output
    token = first.stdout.strip().splitlines()[-1]
    second = run(app).stdout.strip().splitlines()[-1]
    with app.app_context():
        tokens = db.session.scalars(select(OperatorToken).order_by(OperatorToken.id)).all()
        assert [t.label for t in tokens] == ["nightly export", None]
        assert tokens[0].expires_at - tokens[0].created_at == timedelta(days=7)
        assert tokens[1].expires_at - tokens[1].created_at == timedelta(days=90)
        first_id = tokens[0].id
    assert works(client, token) and works(client, second)
    listing = run(app, "--list")
    assert listing.exit_code == 0
    lines = listing.stdout.strip().splitlines()
    assert lines[0] == "id\tlabel\tcreated\texpires\tlast used\trevoked"
    assert len(lines) == 3  # newest first
    (line,) = [line for line in lines if line.startswith(f"{first_id}\t")]
    assert line.startswith(f"{first_id}\tnightly export\t")
    assert token not in listing.stdout and second not in listing.stdout
    assert line.split("\t")[4] != "-"  # used once above
    assert run(app, "--revoke-id", str(first_id)).exit_code == 0
    assert not works(client, token) and works(client, second)
    (line,) = [line for line in run(app, "--list").stdout.splitlines() if line.startswith(f"{first_id}\t")]
    assert line.split("\t")[5] != "-"
    again = run(app, "--revoke-id", str(first_id))
    assert again.exit_code == 1 and "no live API token" in again.output
    assert run(app, "--revoke").exit_code == 0
    assert not works(client, second)
    with app.app_context():
        actions = db.session.scalars(select(OperatorAudit.action).order_by(OperatorAudit.id)).all()
        actors = set(db.session.scalars(select(OperatorAudit.actor)))
    assert actions == ["token made", "token made", "token revoked", "token revoked"] and actors == {"command line"}


def test_bad_arguments_change_nothing(app, operator):
    for args in (["--days", "0"], ["--days", "366"], ["--list", "--revoke"], ["--revoke", "--revoke-id", "1"]):
        assert run(app, *args).exit_code == 2, args
    assert app.test_cli_runner().invoke(args=["operator", "token", "nobody@vendor.example", "--list"]).exit_code == 1
    with app.app_context():
        assert db.session.scalars(select(OperatorToken)).all() == []


def test_a_listing_of_no_tokens_is_the_header(app):
    add_operator(app)
    assert run(app, "--list").stdout == "id\tlabel\tcreated\texpires\tlast used\trevoked\n"
