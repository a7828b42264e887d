"""The models and the Alembic migrations describe the same schema, on SQLite and PostgreSQL."""
import warnings

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade

from app.db import db


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
