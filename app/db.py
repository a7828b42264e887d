"""The database handle, shared by every module; the request commits, write functions flush."""
from datetime import datetime, timezone

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

# Stable constraint names, so Alembic can alter them on SQLite (batch mode) and PostgreSQL alike.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


db = SQLAlchemy(model_class=Base)


def utcnow() -> datetime:
    """Naive UTC: SQLite drops time zones, so every timestamp is stored and compared naive."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def insert_ignoring_duplicates(model, values: dict) -> bool:
    """INSERT ... ON CONFLICT DO NOTHING on either database; True when the row was new."""
    if db.session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    # RETURNING, not rowcount: psycopg reports no row count for this statement.
    key = list(model.__table__.primary_key.columns)[0]
    stmt = insert(model).values(**values).on_conflict_do_nothing().returning(key)
    return db.session.execute(stmt).first() is not None
