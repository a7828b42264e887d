"""What the licence page reads of a licence, by one indexed Core SELECT of only the columns it shows and decides
from: the licence, its platforms and its payments (paygate/web/flow/status.py reads the frame the same way).

Instead of three ORM objects of some 110 columns: plain views that `access.decide`, paygate/web/licence/shown.py
and the templates read like the ORM objects. A name a view does not carry is read from the ORM object of the same
row (one more query, then the session's): a page or a pay form that comes to show more still works, and adding
the column here keeps the page at one read.
"""

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, select

from paygate.core.db import autocommit_reads, db
from paygate.core.models import Licence, LicencePayment, Registration
from paygate.licensing import keys

log = logging.getLogger(__name__)


class _FromOrm:
    """A name the view lacks is the ORM object's (a second read): correct, only dearer."""

    __slots__ = ()
    _model: type

    def __getattr__(self, name: str):
        if name.startswith("_"):  # copy, pickle and dataclass machinery: never a column
            raise AttributeError(name)
        log.debug("licence page: %s.%s read through the ORM", type(self).__name__, name)
        return getattr(db.session.get(self._model, self.id), name)


@dataclass(frozen=True, slots=True)
class PlatformView(_FromOrm):
    """A registration on the licence (the one that opened it among them), as the page reads it."""

    _model = Registration
    id: int
    lms_url: str
    lms_family: str | None
    lms_version: str | None
    platform_id: str | None
    replaced_at: datetime | None
    access_override: bool | None
    completed_at: datetime | None
    created_at: datetime
    amount: int | None
    currency: str | None
    price_interval: str | None
    product_name: str | None
    product_description: str | None


@dataclass(frozen=True, slots=True)
class PaymentView(_FromOrm):
    _model = LicencePayment
    id: int
    amount: int | None
    currency: str | None
    paid_at: datetime | None
    created_at: datetime
    amount_refunded: int
    dispute_id: str | None
    dispute_status: str | None
    payment_intent_id: str

    @property
    def fully_refunded(self) -> bool:
        return self.amount is not None and self.amount > 0 and self.amount_refunded >= self.amount


_L, _R, _P = Licence.__table__, Registration.__table__, LicencePayment.__table__
_LICENCE_COLUMNS = (
    "id",
    "registration_pk",
    "kind",
    "key_hash",
    "key_hint",
    "pilot_ends_at",
    "payment_pending_until",
    "status",
    "subscription_status",
    "customer_id",
    "subscription_id",
    "invoice_id",
    "invoice_number",
    "invoice_pdf",
    "hosted_invoice_url",
    "period_end",
    "due_at",
    "first_paid_at",
    "currency",
    "price_id",
    "quantity",
    "seat_unit",
    "amount",
    "promotion_code",
    "invoice_sent_at",  # the access rule reads these two for an invoice asked for on the licence page
    "invoice_form_id",
)
_PLATFORM_COLUMNS = tuple(PlatformView.__dataclass_fields__)
_PAYMENT_COLUMNS = tuple(PaymentView.__dataclass_fields__)


@dataclass(frozen=True, slots=True)
class LicenceView(_FromOrm):
    """A licence as its page reads it: the columns of _LICENCE_COLUMNS, its platforms (oldest first) and its
    payments (in order), and `registration`, the platform that opened it."""

    _model = Licence
    id: int
    registration_pk: int
    kind: str
    key_hash: str | None
    key_hint: str | None
    pilot_ends_at: datetime | None
    payment_pending_until: datetime | None
    status: str | None
    subscription_status: str | None
    customer_id: str | None
    subscription_id: str | None
    invoice_id: str | None
    invoice_number: str | None
    invoice_pdf: str | None
    hosted_invoice_url: str | None
    period_end: datetime | None
    due_at: datetime | None
    first_paid_at: datetime | None
    currency: str | None
    price_id: str | None
    quantity: int | None
    seat_unit: str | None
    amount: int | None
    promotion_code: str | None
    invoice_sent_at: datetime | None
    invoice_form_id: str | None
    platforms: tuple[PlatformView, ...]
    payments: tuple[PaymentView, ...]
    registration: PlatformView


# One row per (platform, payment): a licence has a few of each. Ordered as the ORM's relationships are.
_READ = (
    select(
        *(_L.c[name] for name in _LICENCE_COLUMNS),
        *(_R.c[name].label(f"r_{name}") for name in _PLATFORM_COLUMNS),
        *(_P.c[name].label(f"p_{name}") for name in _PAYMENT_COLUMNS),
    )
    .select_from(_L.outerjoin(_R, _R.c.licence_pk == _L.c.id).outerjoin(_P, _P.c.licence_pk == _L.c.id))
    .order_by(_R.c.id, _P.c.id)
)
_BY_HASH = _READ.where(_L.c.key_hash == bindparam("key"))
_BY_ID = _READ.where(_L.c.id == bindparam("key"))


_COMPILED: dict = {}  # (statement, dialect) -> the statement compiled once


def _fetch(connection, statement, key) -> list:
    """The rows as plain tuples. On PostgreSQL straight from the driver: SQLAlchemy's result set-up and the driver's
    description of ~50 columns cost more than the read itself on this hot path (scripts/bench_hot_paths.py);
    psycopg returns timestamps and booleans as Python values already. SQLite's driver returns dates as text, so
    there SQLAlchemy reads them."""
    if connection.dialect.name != "postgresql":
        return connection.execute(statement, {"key": key}).all()
    compiled = _COMPILED.get(statement)
    if compiled is None:
        compiled = _COMPILED[statement] = statement.compile(dialect=connection.dialect)
    cursor = connection.connection.dbapi_connection.cursor()
    try:
        cursor.execute(compiled.string, {"key": key})
        return cursor.fetchall()
    finally:
        cursor.close()


def _read(statement, key) -> LicenceView | None:
    # Not the ORM session, and in autocommit: one read needs no BEGIN and ROLLBACK round trips.
    with autocommit_reads().connect() as connection:
        rows = _fetch(connection, statement, key)
    if not rows:
        return None
    n, m = len(_LICENCE_COLUMNS), len(_PLATFORM_COLUMNS)
    platforms, payments = {}, {}
    for row in rows:
        if row[n] is not None:
            platforms.setdefault(row[n], PlatformView(*row[n : n + m]))
        if row[n + m] is not None:
            payments.setdefault(row[n + m], PaymentView(*row[n + m :]))
    first = rows[0]
    # The registration that opened the licence is one of its platforms; were it not, the ORM reads it.
    opened = platforms.get(first[1]) or db.session.get(Registration, first[1])
    return LicenceView(*first[:n], tuple(platforms.values()), tuple(payments.values()), opened)


def by_key(key: str) -> LicenceView | None:
    """The licence whose key (normal form) is `key`, by one indexed read of its hash, compared in constant time."""
    found = _read(_BY_HASH, keys.digest(key))
    return found if found is not None and keys.matches(key, found.key_hash) else None


def by_id(pk: int) -> LicenceView | None:
    """The licence `pk`, as its page reads it."""
    return _read(_BY_ID, pk)
