"""Reading the registrations list for operators: filters, search, keyset pages, the attention preview.

Every list query is ORDER BY created_at DESC, id DESC with a keyset cursor on that pair, so any page
costs about as much as the first one; the one count (`total`) stops at a cap. Searches are exact matches on
indexed ids, the LMS family and the lower-cased payer e-mail, and prefix matches on the lower-cased
LMS URL (all indexed, see migrations 0001 and 0002); the offer is an indexed equality (0008). One
registration's detail is in `detail`, what was sold in `sold`, the JSON shape in `as_json`, the CSV rows
in `export`.
"""

import re
import unicodedata
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from sqlalchemy import func, or_, select, text, tuple_
from sqlalchemy.orm import load_only, selectinload

from paygate.core.db import db, utcnow
from paygate.core.models import ACCESS_DIFFERS, CheckoutSession, Licence, LicencePayment, Registration, State
from paygate.gateways import ltiaas
from paygate.web.operator.attention import ATTENTION_REASONS  # noqa: F401 - kept for its readers
from paygate.web.operator.standing import PILOT_ENDING_SOON

PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
ATTENTION_PREVIEW = 20
ATTENTION_COUNT_CAP = 1000
# The list's count of matching rows stops here ("10,000+"): past it an exact number costs a scan and says no more.
TOTAL_COUNT_CAP = 10_000
# Families LTIaaS reports (familyCode); the filter takes any value, these are suggestions.
KNOWN_FAMILIES = ("canvas", "moodle", "desire2learn", "blackboard", "sakai", "schoology")

# The `unpaid` filter's values; hidden are registrations pending or abandoned that were never paid and have no
# licence (a pilot has one), i.e. an LMS admin who looked at the offer and went away.
UNPAID = ("hide", "show")


def unpaid():
    """The condition of a pending-and-never-paid registration."""
    return (
        Registration.state.in_(("pending", "abandoned"))
        & Registration.paid_at.is_(None)
        & Registration.licence_pk.is_(None)
    )


LAPSED = ("unpaid", "canceled", "incomplete_expired", "paused")
# name -> (label, condition on registrations)
ACCESS_FILTERS = {
    "active": ("active at LTIaaS", lambda: Registration.platform_active.is_(True)),
    "inactive": ("inactive at LTIaaS", lambda: Registration.platform_active.is_(False)),
    "override": ("operator override", lambda: Registration.access_override.is_not(None)),
    "unsynced": ("LTIaaS not yet told", lambda: text(ACCESS_DIFFERS)),
}
# name -> (label, condition on licences)
LICENCE_FILTERS = {
    "lapsed": (
        "subscription lapsed",
        lambda: or_(
            Licence.status.in_(LAPSED) & (Licence.kind == "subscription"), Licence.subscription_status.in_(LAPSED)
        ),
    ),
    "past_due": ("past due", lambda: or_(Licence.status == "past_due", Licence.subscription_status == "past_due")),
    "disputed": ("disputed", lambda: Licence.dispute_open.is_(True)),
    "refunded": (
        "refunded",
        lambda: Licence.id.in_(select(LicencePayment.licence_pk).where(LicencePayment.amount_refunded > 0)),
    ),
    "invoice_open": ("invoice open", lambda: (Licence.kind == "invoice") & (Licence.status == "open")),
    "invoice_overdue": (
        "invoice overdue",
        lambda: (Licence.kind == "invoice") & (Licence.status == "open") & (Licence.due_at < utcnow()),
    ),
    "invoice_paid": ("invoice paid", lambda: (Licence.kind == "invoice") & (Licence.status == "paid")),
    "pilot": ("pilot", lambda: Licence.kind == "pilot"),
    # A range on ix_licences_pilot_ends_at: pilots still running that end within the week.
    "pilot_ending": (
        "pilot ending within 7 days",
        lambda: (
            (Licence.kind == "pilot")
            & (Licence.pilot_ends_at > utcnow())
            & (Licence.pilot_ends_at <= utcnow() + PILOT_ENDING_SOON)
        ),
    ),
}

# Columns a list row needs (the completion html and LMS details stay in the database).
LIST_COLUMNS = (
    Registration.id,
    Registration.registration_id,
    Registration.state,
    Registration.attention,
    Registration.lms_url,
    Registration.lms_family,
    Registration.lms_version,
    Registration.price_id,
    Registration.product_name,
    Registration.quantity,
    Registration.seat_unit,
    Registration.amount,
    Registration.currency,
    Registration.amount_paid,
    Registration.currency_paid,
    Registration.payer_email,
    Registration.payer_name,
    Registration.payment_session_id,
    Registration.payment_intent_id,
    Registration.paid_at,
    Registration.platform_id,
    Registration.platform_active,
    Registration.completed_at,
    Registration.refund_id,
    Registration.refunded_at,
    Registration.created_at,
    Registration.access_wanted,
    Registration.access_override,
    Registration.access_reason,
    Registration.licence_pk,
    Registration.replaced_at,
)
# What a row shows of the other platforms on its licence (their ids, for the JSON and the CSV).
PLATFORM_COLUMNS = (Registration.id, Registration.platform_id, Registration.licence_pk, Registration.replaced_at)

# What a row shows: its columns, and its licence with the payments whose refunds and disputes decide what the
# row says (`standing`) and its platforms, each relation by one more query for the whole page rather than one a row.
_ROW_OPTIONS = (
    load_only(*LIST_COLUMNS),
    selectinload(Registration.licence).options(
        selectinload(Licence.payments), selectinload(Licence.platforms).load_only(*PLATFORM_COLUMNS)
    ),
)

_CURSOR = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?)~(\d{1,12})$")
_MAX_INT = 2**31 - 1
FIRST_DAY, LAST_DAY = date(2000, 1, 1), date(2999, 12, 31)
_WORD = re.compile(r"^[A-Za-z][A-Za-z0-9]{1,99}$")
# A Stripe Price id as STRIPE_PRICE_ID takes it (price_ and printable ASCII, the column's length).
_PRICE_ID = re.compile(r"^price_[!-~]{1,249}$")


def valid_pk(pk: int) -> bool:
    """Whether `pk` can be a registration's number (PostgreSQL refuses integers past 2^31-1)."""
    return 0 < pk <= _MAX_INT


class BadQuery(ValueError):
    """A filter or cursor the operator (or API caller) got wrong; the message says which."""


@dataclass(frozen=True)
class Search:
    kind: str  # id, registration_id, platform_id, checkout_session, payment_intent, payer_email, lms_url,
    # lms_family
    value: str

    @property
    def label(self) -> str:
        return {
            "id": "registration number",
            "registration_id": "LTIaaS registration id",
            "platform_id": "platform id",
            "checkout_session": "Checkout Session id",
            "payment_intent": "payment intent id",
            "payer_email": "payer e-mail",
            "lms_url": "LMS URL starting with",
            "lms_family": "LMS family",
            "subscription": "subscription id",
            "invoice": "invoice id",
        }[self.kind]


@dataclass(frozen=True)
class Filters:
    state: str | None = None
    family: str | None = None
    since: date | None = None  # created on or after this day (UTC)
    until: date | None = None  # created on or before this day (UTC)
    attention: bool = False
    q: str = ""
    access: str | None = None  # active, inactive, override, unsynced
    licence: str | None = None  # see LICENCE_FILTERS
    offer: str | None = None  # a Price id: the offer the registration was sold (or shown)
    # Pending and never paid (nor a licence) left out: the list's default, a choice in the API and the CSV.
    hide_unpaid: bool = False

    @classmethod
    def from_args(cls, args, hide_unpaid: bool = False) -> "Filters":
        """The filters of a query string; `hide_unpaid` is what an absent `unpaid` means where they are used."""
        state = (args.get("state") or "").strip() or None
        if state is not None and state not in {s.value for s in State}:
            raise BadQuery(f"Unknown state {state!r}.")
        for name in ("q", "family", "state", "access", "licence", "offer", "unpaid"):
            if any(unicodedata.category(c) == "Cc" for c in args.get(name) or ""):
                raise BadQuery("Searches and filters cannot contain control characters.")
        family = (args.get("family") or "").strip()[:100] or None
        since, until = _day(args.get("since"), "from"), _day(args.get("until"), "to")
        if since and until and since > until:
            raise BadQuery("The 'from' date is after the 'to' date.")
        attention = (args.get("attention") or "") in ("1", "true", "on", "yes")
        q = (args.get("q") or "").strip()[:500]
        access = (args.get("access") or "").strip() or None
        if access is not None and access not in ACCESS_FILTERS:
            raise BadQuery(f"Unknown access filter {access!r}.")
        licence = (args.get("licence") or "").strip() or None
        if licence is not None and licence not in LICENCE_FILTERS:
            raise BadQuery(f"Unknown licence filter {licence!r}.")
        offer = (args.get("offer") or "").strip() or None
        if offer is not None and not _PRICE_ID.match(offer):
            raise BadQuery("The offer must be a Stripe Price id (price_...).")
        unpaid = (args.get("unpaid") or "").strip() or None
        if unpaid is not None and unpaid not in UNPAID:
            raise BadQuery("unpaid must be 'hide' or 'show'.")
        return cls(
            hide_unpaid=hide_unpaid if unpaid is None else unpaid == "hide",
            state=state,
            family=family,
            since=since,
            until=until,
            attention=attention,
            q=q,
            access=access,
            licence=licence,
            offer=offer,
        )

    def to_args(self) -> dict:
        """The query-string form, for links (empty filters left out)."""
        args = {
            "state": self.state,
            "family": self.family,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "attention": "1" if self.attention else None,
            "q": self.q or None,
            "access": self.access,
            "licence": self.licence,
            "offer": self.offer,
            # Always said: the list and the API or CSV have different defaults, and a link carries the choice.
            "unpaid": "hide" if self.hide_unpaid else "show",
        }
        return {k: v for k, v in args.items() if v}

    @property
    def hides_unpaid(self) -> bool:
        """Whether unpaid rows are left out: not when a state is chosen or a search asks for something."""
        return self.hide_unpaid and not self.state and not self.q

    def searches(self) -> list[Search]:
        return classify(self.q)


def _day(value: str | None, name: str) -> date | None:
    value = (value or "").strip()
    if not value:
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise BadQuery(f"The '{name}' date must look like 2026-01-31.") from None
    if not FIRST_DAY <= day <= LAST_DAY:  # a day that timestamps and the database can hold
        raise BadQuery(f"The '{name}' date must lie between {FIRST_DAY} and {LAST_DAY}.")
    return day


def classify(q: str) -> list[Search]:
    """What the search box text can be, by its shape; every kind is an indexed lookup."""
    q = q.strip()
    if not q:
        return []
    if q.startswith("cs_"):
        return [Search("checkout_session", q)]
    if q.startswith("pi_"):
        return [Search("payment_intent", q)]
    if q.startswith("sub_"):
        return [Search("subscription", q)]
    if q.startswith("in_"):
        return [Search("invoice", q)]
    if "@" in q and " " not in q:
        return [Search("payer_email", q.lower())]
    found = []
    if q.isascii() and q.isdigit() and int(q) <= _MAX_INT:
        found.append(Search("id", q))
    if ltiaas.valid_id(q):
        found += [Search("registration_id", q), Search("platform_id", q)]
    if not (q.isascii() and q.isdigit()):
        found.append(Search("lms_url", q.lower()))
    if _WORD.match(q) and not (q.isascii() and q.isdigit()):
        found.append(Search("lms_family", q.lower()))
    return found


def _like_prefix(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _search_condition(searches: list[Search]):
    """One OR of indexed conditions (each side can use its own index: a BitmapOr on PostgreSQL)."""
    conditions = []
    for s in searches:
        if s.kind == "id":
            conditions.append(Registration.id == int(s.value))
        elif s.kind == "registration_id":
            conditions.append(Registration.registration_id == s.value)
        elif s.kind == "platform_id":
            conditions.append(Registration.platform_id == s.value)
        elif s.kind in ("checkout_session", "payment_intent"):
            # Any session of a registration (not only the one that paid), looked up first: tiny and indexed.
            own, other = (
                (Registration.payment_session_id, CheckoutSession.session_id)
                if s.kind == "checkout_session"
                else (Registration.payment_intent_id, CheckoutSession.payment_intent_id)
            )
            pks = db.session.scalars(select(CheckoutSession.registration_pk).where(other == s.value).limit(100)).all()
            conditions.append(own == s.value)
            if pks:
                conditions.append(Registration.id.in_(pks))
        elif s.kind in ("subscription", "invoice"):
            column = Licence.subscription_id if s.kind == "subscription" else Licence.invoice_id
            conditions.append(Registration.licence_pk.in_(select(Licence.id).where(column == s.value)))
        elif s.kind == "lms_family":
            conditions.append(Registration.lms_family == s.value)
        elif s.kind == "payer_email":
            conditions.append(func.lower(Registration.payer_email) == s.value)
        elif s.kind == "lms_url":
            lowered = func.lower(Registration.lms_url)
            # "canvas.school.edu" finds https://canvas.school.edu/...
            prefixes = [s.value] if "://" in s.value else [s.value, "https://" + s.value, "http://" + s.value]
            conditions += [lowered.like(_like_prefix(p), escape="\\") for p in prefixes]
    return or_(*conditions) if conditions else None


def conditions(filters: Filters) -> list:
    where = []
    if filters.state:
        where.append(Registration.state == filters.state)
    if filters.family:
        where.append(Registration.lms_family == filters.family)
    if filters.since:
        where.append(Registration.created_at >= datetime.combine(filters.since, datetime.min.time()))
    if filters.until:
        where.append(Registration.created_at < datetime.combine(filters.until + timedelta(days=1), datetime.min.time()))
    if filters.attention:
        where.append(Registration.attention.is_not(None))
    if filters.hides_unpaid:
        where.append(~unpaid())
    if filters.access:
        where.append(ACCESS_FILTERS[filters.access][1]())
    if filters.offer:
        # The registration's Price: the offer chosen in the frame, which fulfilment checks the paid session
        # against, so it is the licence's too; one indexed column keeps the list one keyset query.
        where.append(Registration.price_id == filters.offer)
    if filters.licence:
        where.append(Registration.licence_pk.in_(select(Licence.id).where(LICENCE_FILTERS[filters.licence][1]())))
    if filters.q:
        condition = _search_condition(filters.searches())
        if condition is None:
            where.append(Registration.id.is_(None))  # nothing can match
        else:
            where.append(condition)
    return where


def encode_cursor(reg) -> str:
    return f"{reg.created_at.isoformat(timespec='microseconds')}~{reg.id}"


def decode_cursor(value: str | None) -> tuple[datetime, int] | None:
    if not value:
        return None
    match = _CURSOR.match(value)
    if not match:
        raise BadQuery("That page link is damaged; start from the first page.")
    try:
        return datetime.fromisoformat(match.group(1)), int(match.group(2))
    except ValueError:
        raise BadQuery("That page link is damaged; start from the first page.") from None


@dataclass
class Page:
    items: list[Registration]
    newer: str | None = None  # cursor of the previous (newer) page, if any
    older: str | None = None  # cursor of the next (older) page, if any
    searches: list[Search] = field(default_factory=list)


def list_page(filters: Filters, after: str | None = None, before: str | None = None, limit: int = PAGE_SIZE) -> Page:
    """One page, newest first. `after` pages towards older rows, `before` towards newer ones."""
    limit = max(1, min(limit, MAX_PAGE_SIZE))
    key = tuple_(Registration.created_at, Registration.id)
    stmt = select(Registration).options(*_ROW_OPTIONS).where(*conditions(filters))
    after_key, before_key = decode_cursor(after), decode_cursor(before)
    if before_key is not None:
        stmt = stmt.where(key > tuple_(*before_key)).order_by(Registration.created_at.asc(), Registration.id.asc())
    else:
        if after_key is not None:
            stmt = stmt.where(key < tuple_(*after_key))
        stmt = stmt.order_by(Registration.created_at.desc(), Registration.id.desc())
    rows = list(db.session.scalars(stmt.limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    page = Page(items=rows, searches=filters.searches())
    if before_key is not None:
        rows.reverse()
        page.older = encode_cursor(rows[-1]) if rows else None
        page.newer = encode_cursor(rows[0]) if rows and more else None
    else:
        page.older = encode_cursor(rows[-1]) if rows and more else None
        page.newer = encode_cursor(rows[0]) if rows and after_key is not None else None
    return page


def iter_all(filters: Filters, batch: int = 1000):
    """Every matching registration, newest first, in keyset batches (for the CSV export)."""
    after = None
    while True:
        page = list_page(filters, after=after, limit=batch)
        yield from page.items
        db.session.expunge_all()  # keep memory flat across a million rows
        if page.older is None:
            return
        after = page.older


def attention_preview(filters: Filters, limit: int = ATTENTION_PREVIEW) -> tuple[list[Registration], int]:
    """The newest registrations needing attention among those `filters` select, and how many (up to a cap)."""
    where = [*conditions(filters), Registration.attention.is_not(None)]
    rows = list(
        db.session.scalars(
            select(Registration)
            .options(*_ROW_OPTIONS)
            .where(*where)
            .order_by(Registration.created_at.desc(), Registration.id.desc())
            .limit(limit)
        )
    )
    capped = select(Registration.id).where(*where).limit(ATTENTION_COUNT_CAP + 1)
    count = db.session.scalar(select(func.count()).select_from(capped.subquery()))
    return rows, count


def total(filters: Filters) -> int:
    """How many registrations `filters` select, by one COUNT (up to TOTAL_COUNT_CAP + 1)."""
    capped = select(Registration.id).where(*conditions(filters)).limit(TOTAL_COUNT_CAP + 1)
    return db.session.scalar(select(func.count()).select_from(capped.subquery()))
