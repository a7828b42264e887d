"""Command-line entry points: `flask --app wsgi operator ...`, `worker`, `reconcile` and `prune`."""

import logging
import sys

import click
from flask import Flask
from flask.cli import AppGroup, with_appcontext
from sqlalchemy import select

from paygate.core.db import db

operator_cli = AppGroup("operator", help="Operator accounts.")


@operator_cli.command("create")
@click.argument("email")
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from standard input (one line); at a terminal it is asked twice, unechoed.",
)
@click.option(
    "--role",
    type=click.Choice(["viewer", "support", "admin"]),
    default=None,
    help="viewer, support or admin (default admin for a new operator; an existing one keeps theirs unless given).",
)
def create_operator(email: str, password_stdin: bool, role: str | None) -> None:
    """Create an operator, or reset the password of an existing one (their sessions end, their API tokens are
    revoked)."""
    from paygate.web.operator import accounts

    address = accounts.email_of(email)
    if address is None:
        raise click.BadParameter("not an email address", param_hint="EMAIL")
    if sys.stdin.isatty():
        # Typed by a person: a line read as is would show the password on screen and keep a typo.
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    elif password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        raise click.UsageError("pipe the password in with --password-stdin, or run this at a terminal")
    operator = accounts.by_email(address)
    try:
        if operator is None:
            accounts.create(address, password, role or "admin", accounts.COMMAND_LINE)
            verb = "created"
        else:
            accounts.set_password(operator, password, accounts.COMMAND_LINE)
            if role is not None:
                accounts.change_role(operator, role, accounts.COMMAND_LINE)
            verb = "password reset for"
    except accounts.Refused as exc:
        db.session.rollback()
        raise click.ClickException(str(exc)) from None
    db.session.commit()
    click.echo(f"operator {verb} {address}")


def _account_change(email: str, change: str) -> None:
    """`operator disable|enable|delete EMAIL`: the change of paygate/web/operator/accounts.py, audited."""
    from paygate.web.operator import accounts

    operator = accounts.by_email((email or "").strip().lower())
    if operator is None:
        raise click.ClickException(f"no operator {email.strip().lower()}")
    try:
        done = getattr(accounts, change)(operator, accounts.COMMAND_LINE)
    except accounts.Refused as exc:
        db.session.rollback()
        raise click.ClickException(str(exc)) from None
    db.session.commit()
    words = {"disable": "disabled", "enable": "enabled", "remove": "deleted"}
    if done is False:
        click.echo(f"operator {operator.email} was {words[change]} already")
    else:
        click.echo(f"operator {words[change]} {email.strip().lower()}")


@operator_cli.command("disable")
@click.argument("email")
def disable_operator(email: str) -> None:
    """Disable an operator: signed out, and no session or API token of theirs works until enabled."""
    _account_change(email, "disable")


@operator_cli.command("enable")
@click.argument("email")
def enable_operator(email: str) -> None:
    """Enable a disabled operator again."""
    _account_change(email, "enable")


@operator_cli.command("delete")
@click.argument("email")
def delete_operator(email: str) -> None:
    """Delete an operator (never the last active admin); their sessions and API tokens end with them."""
    _account_change(email, "remove")


@operator_cli.command("token")
@click.argument("email")
@click.option("--label", default=None, help="What the new token is for (shown in listings).")
@click.option(
    "--days",
    type=click.IntRange(min=1, max=365),
    default=90,
    show_default=True,
    help="How many days the new token works.",
)
@click.option("--list", "listing", is_flag=True, help="List the operator's tokens (never the tokens themselves).")
@click.option("--revoke", is_flag=True, help="Revoke every live token of the operator instead of making one.")
@click.option(
    "--revoke-id",
    type=click.IntRange(1, 2**31 - 1),
    default=None,
    metavar="ID",
    help="Revoke the operator's token with this id.",
)
def operator_token(
    email: str, label: str | None, days: int, listing: bool, revoke: bool, revoke_id: int | None
) -> None:
    """Print a new API token of an operator (shown once; it acts with their role), or list or revoke theirs."""
    from paygate.core.db import utcnow
    from paygate.core.models import Operator
    from paygate.core.text import clean
    from paygate.web.operator import tokens

    if sum((listing, revoke, revoke_id is not None)) > 1:
        raise click.UsageError("give one of --list, --revoke and --revoke-id")
    operator = db.session.scalars(select(Operator).where(Operator.email == email.strip().lower())).first()
    if operator is None:
        raise click.ClickException(f"no operator {email.strip().lower()}; create it first")
    if listing:
        now = utcnow()
        click.echo("id\tlabel\tcreated\texpires\tlast used\trevoked")
        for t in tokens.listing(operator):
            cells = (t.id, t.label or "", t.created_at, t.expires_at, t.last_used_at, t.revoked_at)
            click.echo(
                "\t".join(_cell(c) for c in cells) + ("\t(expired)" if tokens.status(t, now) == "expired" else "")
            )
        return
    if revoke or revoke_id is not None:
        count = tokens.revoke(operator, tokens.COMMAND_LINE, token_id=revoke_id)
        db.session.commit()
        if revoke_id is not None and not count:
            raise click.ClickException(f"{operator.email} has no live API token {revoke_id}")
        click.echo(f"{count} API token(s) revoked for {operator.email}", err=True)
        return
    token, stored = tokens.make(operator, tokens.COMMAND_LINE, label=clean(label, tokens.LABEL_LENGTH), days=days)
    db.session.commit()
    click.echo(
        f"API token {stored.id} for {operator.email}, {days} days (shown once; send it as "
        "Authorization: Bearer <token>):",
        err=True,
    )
    click.echo(token)


def _cell(value) -> str:
    """A listing's cell: a time to the second, nothing as "-"."""
    if value is None or value == "":
        return "-"
    return value.strftime("%Y-%m-%d %H:%M:%S") if hasattr(value, "strftime") else str(value)


@click.command("worker")
@click.option("--once", is_flag=True, help="One pass, then exit (the cron form); exit status 1 if it failed.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=None,
    metavar="SECONDS",
    help="Seconds between passes (default WORKER_INTERVAL_SECONDS, 10).",
)
@click.option(
    "--reconcile/--no-reconcile",
    "reconcile",
    default=None,
    help="Reconcile with Stripe: with --once, only if given; looping, every "
    "WORKER_RECONCILE_MINUTES unless --no-reconcile.",
)
@with_appcontext
def worker_command(once: bool, interval: float | None, reconcile: bool | None) -> None:
    """Retry due completions, resolve stale attempts, abandon expired registrations, reconcile."""
    import signal
    import threading

    from flask import current_app

    from paygate.ops import worker

    if once:
        try:
            worker.run_once(reconcile=bool(reconcile))
        except Exception as exc:
            current_app.logger.exception("worker pass failed")
            raise click.ClickException(f"worker pass failed: {type(exc).__name__}") from None
        return
    settings = current_app.config["SETTINGS"]
    if settings.worker_metrics_port:
        from paygate.ops.metrics_page import serve_worker_metrics

        serve_worker_metrics(settings.worker_metrics_port, settings.metrics_token)
    stop = threading.Event()

    def _stop(signum, _frame):
        logging.getLogger("paygate.ops.worker").info(
            "worker: %s received, stopping after the current pass", signal.Signals(signum).name
        )
        # Set from another thread: the handler runs in the main thread, which may hold the event's own lock at
        # that moment (inside stop.wait between passes); setting it here would wait for that lock for ever.
        threading.Thread(target=stop.set, name="worker-stop", daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    check_offers_soon(settings)
    worker.run_forever(
        current_app._get_current_object(),
        interval or settings.worker_interval_seconds,
        0 if reconcile is False else settings.worker_reconcile_minutes,
        stop,
    )


@click.command("reconcile")
@click.option(
    "--since-hours",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="How far back to list Checkout Sessions (default RECONCILE_SINCE_HOURS, 48).",
)
@with_appcontext
def reconcile_command(since_hours: float | None) -> None:
    """Fulfil every paid Checkout Session Stripe lists and this database does not know as paid, re-read
    every live licence (subscriptions, open invoices, recent payments), and tell LTIaaS what changed."""
    from flask import current_app

    from paygate.gateways.payments import PaymentProviderError
    from paygate.licensing.reconciler import sync_pending
    from paygate.sales.reconcile import reconcile, reconcile_licences

    settings = current_app.config["SETTINGS"]
    try:
        counts = reconcile(since_hours or settings.reconcile_since_hours)
        counts.update({f"licence_{k}": v for k, v in reconcile_licences(settings.licence_recheck_days).items()})
    except PaymentProviderError as exc:
        raise click.ClickException(str(exc)) from None
    counts.update(sync_pending(cause="reconcile"))
    counts["errors"] += counts.pop("licence_errors")
    click.echo(" ".join(f"{k}={v}" for k, v in counts.items()))
    if counts["errors"]:
        sys.exit(1)


@click.command("prune")
@click.option(
    "--days",
    type=click.IntRange(min=7),
    default=None,
    help="Delete what is older than this (default RETENTION_DAYS, 90).",
)
@with_appcontext
def prune_command(days: int | None) -> None:
    """Delete other integrations' Stripe events and abandoned registrations without money, once old."""
    from flask import current_app

    from paygate.ops.retention import prune

    days = days or current_app.config["SETTINGS"].retention_days
    if not days:
        click.echo("RETENTION_DAYS=0: nothing is pruned")
        return
    counts = prune(days=days)
    click.echo(
        f"events={counts['events']} registrations={counts['registrations']} "
        f"vendor_messages={counts['vendor_messages']} (older than {days} days)"
    )


def register(app: Flask) -> None:
    app.cli.add_command(operator_cli)
    app.cli.add_command(worker_command)
    app.cli.add_command(reconcile_command)
    app.cli.add_command(prune_command)


def check_offers_soon(settings, delay: float = 0.0) -> None:
    """Name every Price of STRIPE_PRICE_ID that cannot be sold in an ERROR now, at start-up (in the background:
    a slow Stripe never holds a start)."""
    import threading
    import time

    from paygate.sales import offers

    def check():
        time.sleep(delay)
        offers.check_at_startup(settings)

    threading.Thread(target=check, name="offers-check", daemon=True).start()
