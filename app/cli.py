"""Command-line entry points: `flask --app wsgi operator ...` (and, later, the worker)."""
import sys

import click
from flask import Flask
from flask.cli import AppGroup
from sqlalchemy import select

from .db import db

operator_cli = AppGroup("operator", help="Operator accounts.")


@operator_cli.command("create")
@click.argument("email")
@click.option("--password-stdin", is_flag=True, required=True, help="Read the password from standard input.")
def create_operator(email: str, password_stdin: bool) -> None:
    """Create an operator, or reset the password of an existing one."""
    from .models import Operator
    from .operators import hash_password

    email = email.strip().lower()
    if "@" not in email or len(email) > 320:
        raise click.BadParameter("not an email address", param_hint="EMAIL")
    password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < 12:
        raise click.ClickException("the password must have at least 12 characters")
    operator = db.session.scalars(select(Operator).where(Operator.email == email)).first()
    if operator is None:
        db.session.add(Operator(email=email, password_hash=hash_password(password)))
        verb = "created"
    else:
        operator.password_hash = hash_password(password)
        verb = "password reset for"
    db.session.commit()
    click.echo(f"operator {verb} {email}")


def register(app: Flask) -> None:
    app.cli.add_command(operator_cli)
