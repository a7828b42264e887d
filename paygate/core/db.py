"""The database handle, shared by every module; the request commits, write functions flush."""

import hashlib
import select
import time
from datetime import UTC, datetime

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData, event, exc, text
from sqlalchemy.engine import make_url
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


# A pooled connection idle longer than this is pinged before use, whatever its socket says.
PING_AFTER_IDLE_SECONDS = 10.0


class _SQLAlchemy(SQLAlchemy):
    def _make_engine(self, bind_key, options, app):
        """`pool_pre_ping` on PostgreSQL (psycopg): the same guarantee as SQLAlchemy's round trip
        ("SELECT 1" before every checkout), at a fraction of its cost on the hot paths; see
        `check_liveness_on_checkout`. Elsewhere (SQLite) SQLAlchemy's own pre-ping, unchanged."""
        # Every engine of the service (web, worker, migrations) keeps statement parameters out of its
        # error messages: they carry flow tokens, registration ids and e-mails into logs and tracebacks.
        options = {**options, "hide_parameters": True}
        check = bool(options.get("pool_pre_ping")) and make_url(options["url"]).get_driver_name() == "psycopg"
        if check:
            options = {**options, "pool_pre_ping": False}
        engine = super()._make_engine(bind_key, options, app)
        if check:
            check_liveness_on_checkout(engine)
        return engine


db = _SQLAlchemy(model_class=Base)


def check_liveness_on_checkout(engine) -> None:
    """Before a pooled psycopg connection is handed out, make sure the server has not closed it, as
    `pool_pre_ping` does, but without a round trip while the connection is in steady use.

    A server that ends a connection (a restart, a failover, pg_terminate_backend,
    idle_session_timeout) sends a FATAL message and closes the socket, so an idle connection whose
    socket has anything to read is suspect: it is pinged (SELECT 1, SQLAlchemy's own ping). So is
    every connection idle for more than PING_AFTER_IDLE_SECONDS (a peer that vanished without a word,
    a proxy's idle timeout). A failed ping raises DisconnectionError: the pool discards the connection
    and hands out a fresh one, so the caller never sees the dead one (as with pre-ping). A connection
    reused within seconds with nothing on its socket costs one poll() instead of a round trip."""

    @event.listens_for(engine, "checkin")
    def _idle_from(dbapi_connection, record):
        record.info["paygate_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _alive(dbapi_connection, record, proxy):
        idle_since = record.info.get("paygate_idle_since")
        if idle_since is None:
            return  # connected just now
        if time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS and _quiet(dbapi_connection):
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as error:
            raise exc.DisconnectionError("the database closed this connection") from error


def _quiet(dbapi_connection) -> bool:
    """Nothing has arrived on the idle connection's socket (no FATAL message, no end of stream)."""
    try:
        poller = select.poll()
        poller.register(dbapi_connection.pgconn.socket, select.POLLIN | select.POLLPRI)
        return not poller.poll(0)
    except Exception:  # noqa: BLE001 - however it fails (driver, socket), the connection is closed already
        return False


def autocommit_reads():
    """The app's engine (its pool) in autocommit, for a lone read outside the ORM session: no BEGIN and
    ROLLBACK round trips. Kept on the engine, so it lives and goes with it."""
    engine = db.engine
    reads = getattr(engine, "_paygate_autocommit", None)
    if reads is None:
        reads = engine._paygate_autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    return reads


def lock(name: str) -> None:
    """Until the transaction ends, other transactions that take the lock `name` wait (PostgreSQL: an
    advisory transaction lock). SQLite needs none: its first write makes every other writer wait."""
    if db.session.get_bind().dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        db.session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def utcnow() -> datetime:
    """Naive UTC: SQLite drops time zones, so every timestamp is stored and compared naive."""
    return datetime.now(UTC).replace(tzinfo=None)


_INSERTS: dict = {}  # (table, dialect, columns) -> the statement, built once


def insert_ignoring_duplicates(model, values: dict) -> bool:
    """INSERT ... ON CONFLICT DO NOTHING on either database; True when the row was new.

    A Core statement on the table, built once per table, database and set of columns and run with
    `values` (plain values, not SQL expressions) as its parameters: no per-call statement building,
    cache key of literal values, or ORM bulk path (every webhook delivery records its event with it)."""
    dialect = db.session.get_bind().dialect.name
    cache_key = (model.__table__, dialect, tuple(values))
    stmt = _INSERTS.get(cache_key)
    if stmt is None:
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        # RETURNING, not rowcount: psycopg reports no row count for this statement.
        key = next(iter(model.__table__.primary_key.columns))
        stmt = _INSERTS[cache_key] = insert(model.__table__).on_conflict_do_nothing().returning(key)
    return db.session.execute(stmt, values).first() is not None
