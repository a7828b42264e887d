"""The models and the Alembic migrations describe the same schema, on SQLite and PostgreSQL."""

import warnings

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade

from paygate.core.db import db


def _differences(app):
    with app.app_context(), db.engine.connect() as conn, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SQLite cannot reflect expression indexes; PostgreSQL can
        context = MigrationContext.configure(conn, opts={"compare_type": True, "render_as_batch": True})
        return compare_metadata(context, db.metadata)


def test_models_and_migrations_agree(app):
    assert _differences(app) == []


def test_migrations_go_down_and_up_again(app):
    with app.app_context():
        downgrade(revision="base")
        upgrade()
    assert _differences(app) == []


def test_licences_are_backfilled_and_a_platform_held_inactive_stays_inactive(app):
    """Registrations paid before licences existed get a payment licence; a platform an operator had
    deactivated by hand keeps that as an override, so the first reconciler pass activates nothing."""
    from sqlalchemy import text

    with app.app_context():
        downgrade(revision="0002")
        now = "2026-11-01 10:00:00"
        for n, (state, active) in enumerate([("completed", True), ("completed", False), ("refunded", True)]):
            db.session.execute(
                text(
                    "INSERT INTO registrations (registration_id, flow_token, state, lms_url, price_id, amount, "
                    "currency, checkout_generation, attempt_count, attempt_uncertain, created_at, updated_at, "
                    "payment_intent_id, amount_paid, currency_paid, paid_at, platform_id, platform_active) VALUES "
                    "(:rid, :tok, :state, 'https://canvas.instructure.com', 'price_1', 4900, 'usd', 1, 1, false, "
                    ":now, :now, :pi, 4900, 'usd', :now, :platform, :active)"
                ),
                {
                    "rid": f"r{n}",
                    "tok": f"token-{n}-" + "x" * 20,
                    "state": state,
                    "now": now,
                    "pi": f"pi_{n}",
                    "platform": f"P{n}",
                    "active": active,
                },
            )
        db.session.commit()
        upgrade()
        rows = db.session.execute(
            text(
                "SELECT r.registration_id, r.access_wanted, r.access_override, l.kind, p.amount_refunded "
                "FROM registrations r JOIN licences l ON l.registration_pk = r.id "
                "JOIN licence_payments p ON p.licence_pk = l.id ORDER BY r.registration_id"
            )
        ).all()

        def flag(v):  # SQLite answers 0/1
            return None if v is None else bool(v)

        assert [(r[0], flag(r[1]), flag(r[2]), r[3], r[4]) for r in rows] == [
            ("r0", True, None, "payment", 0),
            ("r1", False, False, "payment", 0),
            ("r2", False, None, "payment", 4900),
        ]
        db.session.commit()
