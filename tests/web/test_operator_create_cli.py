"""`flask --app wsgi operator create EMAIL --password-stdin`: a piped line as before; at a terminal, the password
asked twice without echo."""

import io

from sqlalchemy import select

from paygate.core.db import db
from paygate.core.models import Operator
from paygate.web.operator.passwords import check_password
from tests.helpers.operators import EMAIL, PASSWORD, sign_in

COMMAND = ["operator", "create", EMAIL, "--password-stdin"]


def stored_hash(app) -> str:
    with app.app_context():
        return db.session.scalars(select(Operator.password_hash).where(Operator.email == EMAIL)).one()


def terminal(text: str) -> io.BytesIO:
    """Standard input that says it is a terminal, with what the person types."""
    stream = io.BytesIO(text.encode())
    stream.isatty = lambda: True
    return stream


def test_a_piped_password_is_read_from_one_line_as_before(app, client):
    result = app.test_cli_runner().invoke(args=COMMAND, input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    assert result.output == f"operator created {EMAIL}\n"  # no prompt, nothing echoed
    assert check_password(stored_hash(app), PASSWORD)
    assert sign_in(client).status_code == 303


def test_a_piped_password_without_the_flag_is_refused(app):
    result = app.test_cli_runner().invoke(args=COMMAND[:-1], input=PASSWORD + "\n")
    assert result.exit_code == 2 and "--password-stdin" in result.output


def test_at_a_terminal_the_password_is_asked_twice_unechoed(app, client):
    result = app.test_cli_runner().invoke(args=COMMAND, input=terminal(f"{PASSWORD}\n{PASSWORD}\n"))
    assert result.exit_code == 0, result.output
    assert "Password:" in result.output and "Repeat for confirmation:" in result.output
    assert PASSWORD not in result.output  # not echoed
    assert check_password(stored_hash(app), PASSWORD)
    assert sign_in(client).status_code == 303


def test_at_a_terminal_two_different_passwords_are_asked_again(app):
    typed = f"{PASSWORD}\na different password\n{PASSWORD}\n{PASSWORD}\n"
    result = app.test_cli_runner().invoke(args=COMMAND, input=terminal(typed))
    assert result.exit_code == 0, result.output
    assert "do not match" in result.output
    assert check_password(stored_hash(app), PASSWORD)


def test_at_a_terminal_a_short_password_is_refused(app):
    result = app.test_cli_runner().invoke(args=COMMAND, input=terminal("short\nshort\n"))
    assert result.exit_code == 1 and "at least 12 characters" in result.output
