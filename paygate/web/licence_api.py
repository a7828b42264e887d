"""The licence API: `GET /api/v1/platforms/<platform_id>/licence`, what the vendor's tool asks at every launch
(README "The licence API, at launch").

`Authorization: Bearer <LICENCE_API_TOKEN>` is compared in constant time before anything is read, so that no
platform can be probed without it (unset: the API is not served, 404). The platform is named by LTIaaS's id
(`platform.id` of its ID token), checked against LTIaaS's id alphabet before use. The common answer costs one
indexed Core read (the newest platform with that id, its licence and the licence's origin) and no ORM object:
the licence's own access is the platform's stored decision (paygate/licensing/access.py) when nothing but the
licence decides it; an operator's override, a replaced platform or a decision the clock has overtaken (its
`access_review_at` passed) is decided again through the ORM (the rare path). The JSON's status rule is
paygate/licensing/vendor_view.py's.

Caching: the `ETag` is a digest of the row's facts, the clock's say on them and the ten-minute window, computed
before any JSON or link is built, so that a revalidation (`If-None-Match`, 304) is cheaper than an answer. It is
weak: two answers with one tag say the same, but each carries its own `manage_url`, good for one hour from that
answer; a kept one is confirmed (304) only within its ten minutes, so it still has 50 minutes or more to run.
"""

import hashlib
import hmac
import json
import time
from collections import namedtuple

from flask import Blueprint, Response, current_app, request
from sqlalchemy import bindparam, select
from sqlalchemy.orm import aliased, selectinload

from paygate.core.db import autocommit_reads, db, utcnow
from paygate.core.models import Licence, Registration
from paygate.gateways import ltiaas
from paygate.licensing import access, keys, vendor_view

bp = Blueprint("licence_api", __name__, url_prefix="/api/v1")

WINDOW_SECONDS = 600  # an ETag's window: a manage_url kept and confirmed by a 304 is at most this old
CACHE_CONTROL = "private, max-age=60"
NOT_SERVED = "The licence API is not served here."
UNAUTHORIZED = "Send Authorization: Bearer <LICENCE_API_TOKEN>."
NO_PLATFORM = "No such platform."

# The licence's facts the answer shows and decides from, as vendor_view reads them.
LicenceRow = namedtuple(
    "LicenceRow",
    "id key_hash kind status subscription_status due_at pilot_ends_at period_end price_id quantity seat_unit",
)
_PLATFORM_FIELDS = 7  # licence_pk access_wanted access_override replaced_at access_review_at product_name origin

_R, _L = Registration.__table__, Licence.__table__
_ORIGIN = aliased(Registration.__table__, name="origin")
_READ = (
    select(
        _R.c.licence_pk,
        _R.c.access_wanted,
        _R.c.access_override,
        _R.c.replaced_at,
        _R.c.access_review_at,
        _R.c.product_name,
        _ORIGIN.c.product_name.label("origin_product_name"),
        *(_L.c[name] for name in LicenceRow._fields),
    )
    .select_from(_R.outerjoin(_L, _L.c.id == _R.c.licence_pk).outerjoin(_ORIGIN, _ORIGIN.c.id == _L.c.registration_pk))
    .where(_R.c.platform_id == bindparam("platform_id"))
    .order_by(_R.c.id.desc())
    .limit(1)
)
_COMPILED: dict = {}  # dialect name -> the statement, compiled once


@bp.after_request
def _headers(response: Response) -> Response:
    if response.status_code not in (200, 304):  # a refusal is never kept
        response.headers["Cache-Control"] = "no-store"
    return response


def _refusal(status: int, error: str, message: str) -> Response:
    body = json.dumps({"error": error, "message": message})
    return Response(body, status=status, mimetype="application/json")


def _authorized(expected: str) -> bool:
    """Whether the request carries the bearer token, compared in constant time whatever its length."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    given = token.strip().encode("utf-8", "replace")
    return scheme.lower() == "bearer" and hmac.compare_digest(given, expected.encode())


def _fetch(platform_id: str):
    """The row of the newest platform with this id, or None: one indexed read outside the ORM session, in
    autocommit. On PostgreSQL straight from the driver, as paygate/web/licence/view.py reads (psycopg returns
    timestamps and booleans as Python values); SQLite's dates need SQLAlchemy's reading."""
    with autocommit_reads().connect() as connection:
        if connection.dialect.name != "postgresql":
            return connection.execute(_READ, {"platform_id": platform_id}).first()
        compiled = _COMPILED.get("postgresql")
        if compiled is None:
            compiled = _COMPILED["postgresql"] = _READ.compile(dialect=connection.dialect)
        cursor = connection.connection.dbapi_connection.cursor()
        try:
            cursor.execute(compiled.string, {**compiled.params, "platform_id": platform_id})  # the LIMIT's too
            return cursor.fetchone()
        finally:
            cursor.close()


@bp.get("/platforms/<platform_id>/licence")
def platform_licence(platform_id: str):
    """The platform's access and its licence as the vendor's tool reads it at launch."""
    settings = current_app.config["SETTINGS"]
    expected = settings.licence_api_token
    if expected is None:
        return _refusal(404, "Not Found", NOT_SERVED)
    if not _authorized(expected):
        response = _refusal(401, "Unauthorized", UNAUTHORIZED)
        response.headers["WWW-Authenticate"] = 'Bearer realm="licence API"'
        return response
    row = _fetch(platform_id) if ltiaas.valid_id(platform_id) else None
    if row is None:
        return _refusal(404, "Not Found", NO_PLATFORM)
    licence_pk, wanted, override, replaced_at, review_at, own_product, origin_product = row[:_PLATFORM_FIELDS]
    now, epoch = utcnow(), int(time.time())
    window = epoch - epoch % WINDOW_SECONDS
    licence = LicenceRow._make(row[_PLATFORM_FIELDS:]) if licence_pk is not None else None
    decided = None
    overtaken = review_at is not None and now >= review_at
    if licence is not None and (override is not None or replaced_at is not None or wanted is None or overtaken):
        decided = _decide(licence_pk, override, replaced_at, now, settings)
    # The clock's say on the row: a due date passed (grace), a pilot's end passed (an invoiced pilot's status).
    clock = licence is not None and (
        licence.due_at is not None and now >= licence.due_at,
        licence.pilot_ends_at is not None and now < licence.pilot_ends_at,
    )
    facts = repr((row, decided, clock, window, settings.public_url)).encode()
    etag = 'W/"' + hashlib.blake2b(facts, digest_size=16).hexdigest() + '"'
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL, "Vary": "Authorization"}
    if _matches(request.headers.get("If-None-Match"), etag):
        return Response(status=304, headers=headers)
    platform_active, licence_active = decided if decided is not None else (wanted, wanted)
    shown = vendor_view.licence_view(
        licence, origin_product if licence is not None else own_product, licence_active, now
    )
    shown["manage_url"] = None
    if licence is not None:
        token = keys.link_token(licence.id, licence.key_hash or "", settings.secret_key)
        shown["manage_url"] = f"{settings.public_url.rstrip('/')}/licence/m/{token}"
    body = json.dumps({"platform": {"id": platform_id, "active": bool(platform_active)}, "licence": shown})
    return Response(body, status=200, headers=headers, mimetype="application/json")


def _decide(licence_pk: int, override, replaced_at, now, settings) -> tuple[bool, bool]:
    """(the platform's access, the licence's own) decided afresh through the ORM: the rare path."""
    licence = db.session.get(Licence, licence_pk, options=[selectinload(Licence.payments)])
    own = access.decide(licence, None, now, settings)
    platform = access.decide(licence, override, now, settings, replaced_at)
    return bool(platform.active), bool(own.active)


def _matches(header: str | None, etag: str) -> bool:
    """RFC 9110's If-None-Match: `*`, or a list of tags compared weakly (W/"x" matches "x" and W/"x")."""
    if not header:
        return False
    header = header.strip()
    if header == "*":
        return True
    opaque = etag.removeprefix("W/")
    return any(part.strip().removeprefix("W/") == opaque for part in header.split(","))
