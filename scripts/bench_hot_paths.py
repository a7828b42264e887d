"""Server CPU per request of the hot paths, against the floor of this stack (a script, not a test).

    .venv/bin/python scripts/bench_hot_paths.py [--url postgresql+psycopg://...] [--db NAME]
        [--requests 1500] [--clients 4] [--rounds 5] [--slices 10] [--workers 2] [--threads 4]
        [--no-extras] [--only ROW[,ROW]] [--service-dir DIR] [--keep-logs]

Drops and recreates its own PostgreSQL database (default paygate_hotpath_bench; a name without
"hotpath" in it is refused), migrates it through the app (`flask_migrate.upgrade()`) and seeds it
directly: 50,000 registrations, 5,000 of them pending with an open Checkout Session (what the frame
shows while the admin pays), 45,000 completed with a paid session, a licence and its payment.

Then it starts two gunicorn servers with the same settings (gthread, --workers, --threads,
--keep-alive 30, the repository's gunicorn.conf.py, on 127.0.0.1, no access log): the service
(`wsgi:app`, APP_ENV=production) and the *floor app* below, a minimal Flask app on the same Flask,
SQLAlchemy (Core, `engine.connect()` as usual), psycopg and database that does the least each
endpoint must do:

* status poll, `GET /flow/<token>/status`: one indexed read of the registration, rendered as JSON;
* pre-approval repeat visit, `GET /pre-approval?registrationId=R` of a known registration: one
  indexed read rendered with a template of the same size and markup as the service's page: the three
  offers of OFFERS (per student and year, paid once, per teacher by graduated tiers; their lines written
  once at start, as the service reads each Price once and keeps it), the seat field, the quote of the
  registration's choice (120 students x unit price = total) and the terms (renewal, promotion code, tax:
  the service runs with PROMOTION_CODES=on and STRIPE_TAX=on);
* licence page, `GET /licence/<key>` of a paid licence: one indexed read of the licence by its key's hash
  (with its platform), rendered with a template of the same size and markup as the service's page (what
  was bought, its status, its platform, its payment, the billing and key forms);
* licence API, `GET /api/v1/platforms/<id>/licence` of a paid licence's platform: the bearer token compared in
  constant time and one indexed read of the same shape (the newest platform with that id, its licence, the
  licence's origin), rendered as JSON of the same size with an ETag of the row; the second row asks again with
  that ETag in `If-None-Match` and gets 304 (each app's own ETags, read before each turn, not counted);
* webhook, `POST /webhooks/stripe`: the Stripe signature check (`stripe.WebhookSignature`), the JSON
  parse and one idempotent insert of the event (INSERT ... ON CONFLICT DO NOTHING).

The webhook is loaded with `customer.created` events, each new (as almost every delivery is): a type
the service records and answers without any upstream call, so it measures exactly the part every
event pays (verify, record once, answer) against the same floor. Two more rows, printed apart and
without a target: a repeated delivery of an already recorded event (the floor is the same insert,
which then does nothing), and `checkout.session.completed` for an already paid session, where both
the service and its floor ask Stripe for the session (a fake Stripe in this process answers at once;
its CPU, like the client's, is not counted).

Every upstream address (LTIaaS, the Stripe API) points at that fake, which counts what it is asked:
the script fails if the measured paths call LTIaaS, or Stripe outside the checkout row and the reads
of the offers' Prices (each worker process reads them once and keeps them for five minutes).

Each app is loaded from --clients threads, each on one keep-alive http.client connection, the
connections spread evenly over the worker processes (a connection stays with the worker that took
it). Server CPU is the gunicorn worker processes' user + system time from /proc/<pid>/stat, read
before and after each turn (the client, PostgreSQL and the fake are not counted). In a round, each
endpoint gets --requests requests per app (fewer for the slower webhook rows), sent in --slices
turns that alternate between the two apps, so that both are measured side by side in time. The
printed figures are the median over --rounds rounds of the CPU ms per request, and the ratio is the
median of the rounds' ratios. A full run takes about two minutes on two cores; other load on the
machine makes both apps slower, the service (which runs more code) a little more.
"""

import argparse
import contextlib
import hashlib
import hmac
import http.client
import http.server
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "gunicorn.conf.py")  # the service's hooks (Prometheus's directory); both apps
sys.path.insert(0, REPO)

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/paygate_hotpath_bench"
WEBHOOK_SECRET = "whsec_bench_hot_paths"
PENDING, PAID = 5_000, 45_000  # registrations 1..PENDING pending, then PAID completed ones
WARM_UP = 200  # requests per endpoint and app before the rounds
SUPPORT = "support@vendor.example"
VENDOR = "Example Learning Tools"
# The offers (STRIPE_PRICE_ID, in this order), as the fake Stripe serves their Prices: per student and year (sold
# per seat, 10 to 5000), a registration paid once, and per teacher by graduated tiers (1 to 500). The pending
# registrations have chosen the first, with SEATS students; the completed ones paid the second.
SEATS = 120
OFFERS = (
    {
        "id": "price_bench_seats_yearly",
        "product": ("Tool licence per student (yearly)", "Every student of the school uses the tool for a year."),
        "unit_amount": 300,
        "interval": "year",
        "metadata": {"seats": "10-5000", "seat_unit": "student"},
    },
    {
        "id": "price_bench_registration",
        "product": ("Tool registration", "Registers the tool in your LMS for one institution."),
        "unit_amount": 4900,
        "interval": None,
        "metadata": {},
    },
    {
        "id": "price_bench_tiered",
        "product": ("Tool licence per teacher", "Teachers use the tool; the more teachers, the less each costs."),
        "unit_amount": None,
        "interval": None,
        "metadata": {"seats": "1-500", "seat_unit": "teacher"},
        "tiers": ((10, 2000), (50, 1500), (None, 1000)),  # graduated: (up_to, unit_amount)
    },
)
PRICE_IDS = ",".join(o["id"] for o in OFFERS)
CHOSEN, PAID_OFFER = OFFERS[0], OFFERS[1]
PRICE_ID = PAID_OFFER["id"]  # what the completed registrations paid (the checkout row's session)
TARGETS = {
    "status": 1.5,
    "preapproval": 1.3,
    "licence": 1.3,
    "licence_api": 1.3,
    "licence_api_304": 1.3,
    "webhook": 1.5,
}
LICENCE_API_TOKEN = "bench-licence-api-token-of-at-least-32-characters"
# The manage_url the floor answers: as long as the service's (a one-hour link of a licence in the seeded range).
FLOOR_MANAGE_URL = "http://127.0.0.1/licence/m/" + "x" * 69
API_PLATFORMS = 50  # distinct platforms the 304 row revalidates (their ETags read before each turn)
PORTS: dict = {}  # app name -> its port, for the rows that read ETags first
PRICE_TTL = 300  # seconds a worker keeps a Price it read (paygate/gateways/payments/catalogue.py)


# ---------------------------------------------------------------------------------------------
# The floor app: gunicorn imports this module and calls floor_app() (FLOOR_* settings from env).

FLOOR_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Register the tool</title>
  <link rel="stylesheet" href="{{ url_for('static', filename='style.css') }}">
  <link rel="icon" href="/favicon.ico" sizes="32x32">
</head>
<body>
<main class="card">
<section id="flow" data-status-url="{{ url_for('status', token=r.flow_token) }}" data-phase="pay"
  data-opened-text="Complete the payment in the payment window. This window updates by itself."
  data-blocked-text="Your browser blocked the payment window. Open the payment page with the link below, then come back to this window."
  data-reopen-text="Reopen the payment window"
  data-unknown-text="This registration link is not known. Start the registration again from your LMS."
  data-quote-url="{{ url_for('quote', token=r.flow_token) }}">
  <h1>Register this tool in your LMS</h1>
  <dl class="facts">
    <dt>Vendor</dt><dd id="vendor">{{ vendor }}</dd>
    <dt>LMS</dt><dd id="lms" data-family="{{ r.lms_family }}"><span id="lms-name">Canvas {{ r.lms_version }}</span><br><span id="lms-url" class="hint">{{ r.lms_url }}</span></dd>
    <dt>Price</dt><dd id="price">{{ total }}</dd>
    <dt>Support</dt><dd id="support"><a id="support-link" href="mailto:{{ support }}">{{ support }}</a></dd>
  </dl>
  <p id="status" role="status" aria-live="polite">{{ message }}</p>
  <form id="pay-area" action="{{ url_for('pay', token=r.flow_token) }}" method="get" target="_blank" rel="noopener" novalidate >
    <fieldset id="offers"><legend>Choose what to buy</legend>
      {% for o in offers %}
      <div class="offer"><input type="radio" name="offer" id="offer-{{ loop.index }}" value="{{ o.id }}" {% if o.id == chosen.id %}checked{% endif %}
          aria-describedby="offer-{{ loop.index }}-line" data-per-seat="{{ 'yes' if o.per_seat else 'no' }}"
          data-min="{{ o.min }}" data-max="{{ o.max }}" data-seats-label="{{ o.seats_label }}" data-refusal="{{ o.refusal }}">
        <label for="offer-{{ loop.index }}" class="offer-name">{{ o.product }}</label>
        <span id="offer-{{ loop.index }}-line" class="hint">{{ o.line }}. {{ o.description }}</span></div>
      {% endfor %}
    </fieldset>
    <p id="seats-area" >
      <label for="seats" id="seats-label">{{ chosen.seats_label }}</label>
      <input id="seats" name="seats" type="number" inputmode="numeric" step="1" required
             min="{{ chosen.min }}" max="{{ chosen.max }}" value="{{ r.quantity }}"
             aria-describedby="seats-error" >
    </p>
    <p id="seats-error" class="error" role="alert" hidden></p>
    <p id="quote" aria-live="polite">{{ breakdown }}</p>
    <ul id="terms" class="hint">{% for line in terms %}<li>{{ line }}</li>{% endfor %}</ul>
    <button type="submit" class="button" id="pay">Pay {{ total }} by card</button>
  </form>
  <p id="blocked" class="notice" hidden>Your browser blocked the payment window.
    <a id="blocked-link" href="{{ url_for('pay', token=r.flow_token) }}" target="_blank" rel="noopener">Open the payment page</a>, then come back to this window.</p>
  <noscript><p class="hint">After paying, reload this page to finish the registration.</p></noscript>
</section>
</main>
<script nonce="{{ nonce }}" src="{{ url_for('static', filename='flow.js') }}"></script>
</body>
</html>
"""  # noqa: E501 - a page's markup, kept as written
FLOOR_LICENCE_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Your licence</title>
  <link rel="stylesheet" href="{{ url_for('static', filename='style.css') }}">
  <link rel="icon" href="/favicon.ico" sizes="32x32">
</head>
<body>
<main class="card">
  <h1>Your licence</h1>
  <dl class="facts" id="licence">
    <dt>Vendor</dt><dd id="vendor">{{ vendor }}</dd>
    <dt>Product</dt><dd id="product"><span id="product-name">{{ r.product_name }}</span><br><span id="product-description" class="hint">{{ r.product_description }}</span></dd>
    <dt>Price</dt><dd id="price">{{ price }}</dd>
    <dt>Status</dt><dd id="licence-status" data-status="active"><strong>Active</strong></dd>
    <dt>Licence key</dt><dd id="key-hint">ends in {{ r.key_hint }}</dd>
  </dl>
  <h2>Platforms</h2>
  <table id="platforms">
    <tr><th scope="col">LMS</th><th scope="col">Registered</th><th scope="col">Access</th></tr>
    {% for p in rows %}
    <tr class="platform"><td><span class="lms-name">Canvas {{ p.lms_version }}</span><br><span class="hint lms-url">{{ p.lms_url }}</span></td>
      <td>{{ p.completed_at.strftime("%Y-%m-%d") }}</td>
      <td class="access">Active</td></tr>
    {% endfor %}
  </table>
  <h2>Receipts and invoices</h2>
  <ul id="papers">
    <li>Payment of {{ price_paid }} on {{ r.completed_at.strftime("%Y-%m-%d") }}</li>
  </ul>
  <h2>Billing</h2>
  <form method="post" action="{{ base }}/billing" id="billing-form">
    <p class="hint">Stripe's billing page: your invoices, payment method and subscription.</p>
    <button type="submit" class="button secondary" id="manage-billing">Manage billing</button>
  </form>
  <h2>Licence key</h2>
  <form method="post" action="{{ base }}/key" id="key-form">
    <p class="hint">Replace the key if it was shared with someone who should not have it. The current key and links stop working at once; the new key is shown once.</p>
    <button type="submit" class="button secondary" id="replace-key">Replace the key</button>
  </form>
  <p id="support" class="support">Need help? Contact {{ vendor }}: <a id="support-link" href="mailto:{{ support }}">{{ support }}</a></p>
</main>
</body>
</html>
"""  # noqa: E501 - a page's markup, kept as written
FLOOR_TERMS = (
    "Renews automatically (per year) until cancelled. To cancel, write to the vendor's support before the renewal "
    "date; the tool stays registered until the end of the paid period.",
    "Have a promotion code? Enter it on the payment page (or in the invoice form).",
    "Tax is added where it applies; the payment page shows it before you pay.",
)


def floor_offers() -> dict:
    """The offers as the floor shows them, written once (the service, too, reads each Price once and keeps it)."""
    shown = {}
    for offer in OFFERS:
        seats = offer["metadata"].get("seats")
        unit = offer["metadata"].get("seat_unit")
        low, high = (int(x) for x in seats.split("-")) if seats else ("", "")
        tiers = offer.get("tiers")
        every = " per year" if offer["interval"] else ", paid once"
        if not seats:
            line = f"{offer['unit_amount'] / 100:,.2f} USD{every}"
        else:
            unit_price = (tiers[0][1] if tiers else offer["unit_amount"]) / 100
            line = f"{'from ' if tiers else ''}{unit_price:,.2f} USD per {unit}{every} ({low:,} to {high:,} {unit}s)"
        shown[offer["id"]] = {
            "id": offer["id"],
            "product": offer["product"][0],
            "description": offer["product"][1],
            "line": line,
            "per_seat": bool(seats),
            "min": low,
            "max": high,
            "unit": unit,
            "unit_amount": offer["unit_amount"],
            "every": every,
            "seats_label": f"Number of {unit}s" if seats else "",
            "refusal": f"Enter the number of {unit}s as a whole number from {low:,} to {high:,}." if seats else "",
        }
    return shown


FLOOR_MESSAGE = (
    "Complete the payment in the payment window. This window updates by itself; if you closed "
    "the payment window, press Pay to reopen it."
)


def floor_app():
    """The least each endpoint must do, on the same Flask, SQLAlchemy, psycopg and PostgreSQL."""
    import secrets
    from datetime import UTC, datetime

    import jinja2
    import stripe
    from flask import Flask, Response, abort, jsonify, render_template, request
    from sqlalchemy import (
        Boolean,
        Column,
        DateTime,
        Integer,
        MetaData,
        String,
        Table,
        Text,
        bindparam,
        create_engine,
        select,
    )
    from sqlalchemy.dialects.postgresql import insert

    app = Flask(__name__)
    app.jinja_loader = jinja2.DictLoader({"page.html": FLOOR_PAGE, "licence.html": FLOOR_LICENCE_PAGE})
    engine = create_engine(os.environ["FLOOR_DATABASE_URL"])
    secret = os.environ["FLOOR_WEBHOOK_SECRET"]
    meta = MetaData()
    regs = Table(
        "registrations",
        meta,
        Column("id", Integer, primary_key=True),
        Column("registration_id", String),
        Column("flow_token", String),
        Column("state", String),
        Column("lms_url", String),
        Column("lms_family", String),
        Column("lms_version", String),
        Column("price_id", String),
        Column("quantity", Integer),
        Column("licence_pk", Integer),
        Column("product_name", String),
        Column("product_description", String),
        Column("amount", Integer),
        Column("completed_at", DateTime),
        Column("platform_id", String),
        Column("access_wanted", Boolean),
        Column("access_override", Boolean),
        Column("replaced_at", DateTime),
        Column("access_review_at", DateTime),
    )
    licences = Table(
        "licences",
        meta,
        Column("id", Integer, primary_key=True),
        Column("registration_pk", Integer),
        Column("kind", String),
        Column("status", String),
        Column("key_hash", String),
        Column("key_hint", String),
        Column("subscription_status", String),
        Column("due_at", DateTime),
        Column("pilot_ends_at", DateTime),
        Column("period_end", DateTime),
        Column("price_id", String),
        Column("quantity", Integer),
        Column("seat_unit", String),
    )
    events = Table(
        "stripe_events",
        meta,
        Column("event_id", String, primary_key=True),
        Column("type", String),
        Column("session_id", String),
        Column("received_at", DateTime),
        Column("deliveries", Integer),
        Column("outcome", String),
        Column("payload", Text),
    )
    stripe_client = None
    if os.environ.get("FLOOR_STRIPE_API_BASE"):
        stripe_client = stripe.StripeClient(
            "sk_test_floor",
            base_addresses={"api": os.environ["FLOOR_STRIPE_API_BASE"]},
            max_network_retries=0,
            http_client=stripe.RequestsClient(timeout=8),
        )
    by_token = select(regs.c.state).where(regs.c.flow_token == bindparam("token"))
    by_id = select(
        regs.c.flow_token,
        regs.c.state,
        regs.c.lms_url,
        regs.c.lms_family,
        regs.c.lms_version,
        regs.c.price_id,
        regs.c.quantity,
    ).where(regs.c.registration_id == bindparam("rid"))
    by_key_hash = (
        select(
            licences.c.kind,
            licences.c.status,
            licences.c.key_hint,
            regs.c.lms_url,
            regs.c.lms_version,
            regs.c.product_name,
            regs.c.product_description,
            regs.c.amount,
            regs.c.completed_at,
        )
        .join(regs, regs.c.licence_pk == licences.c.id)
        .where(licences.c.key_hash == bindparam("key_hash"))
    )
    origin = regs.alias("origin")
    by_platform = (
        select(
            regs.c.licence_pk,
            regs.c.access_wanted,
            regs.c.access_override,
            regs.c.replaced_at,
            regs.c.access_review_at,
            regs.c.product_name,
            origin.c.product_name.label("origin_product_name"),
            *(
                licences.c[name]
                for name in (
                    "id",
                    "key_hash",
                    "kind",
                    "status",
                    "subscription_status",
                    "due_at",
                    "pilot_ends_at",
                    "period_end",
                    "price_id",
                    "quantity",
                    "seat_unit",
                )
            ),
        )
        .select_from(
            regs.outerjoin(licences, licences.c.id == regs.c.licence_pk).outerjoin(
                origin, origin.c.id == licences.c.registration_pk
            )
        )
        .where(regs.c.platform_id == bindparam("platform_id"))
        .order_by(regs.c.id.desc())
        .limit(1)
    )
    api_token = os.environ["FLOOR_LICENCE_API_TOKEN"].encode()
    offers = floor_offers()
    shown = list(offers.values())

    @app.get("/healthz")
    def healthz():
        return "ok"

    @app.get("/flow/<token>/status")
    def status(token):
        with engine.connect() as conn:
            state = conn.execute(by_token, {"token": token}).scalar()
        if state is None:
            abort(404)
        return jsonify(state=state, phase="pay", message=FLOOR_MESSAGE)

    @app.get("/flow/<token>/pay")
    def pay(token):
        abort(404)

    @app.get("/pre-approval")
    def pre_approval():
        with engine.connect() as conn:
            r = conn.execute(by_id, {"rid": request.args.get("registrationId", "")}).first()
        if r is None:
            abort(404)
        chosen = offers.get(r.price_id)
        if chosen is None:
            abort(404)
        # The quote of the registration's choice (a per-seat offer sold per unit): number x unit price = total.
        total = f"{chosen['unit_amount'] * r.quantity / 100:,.2f} USD{chosen['every']}"
        breakdown = f"{r.quantity:,} {chosen['unit']}s × {chosen['unit_amount'] / 100:,.2f} USD = {total}"
        return render_template(
            "page.html",
            r=r,
            vendor=VENDOR,
            offers=shown,
            chosen=chosen,
            total=total,
            breakdown=breakdown,
            terms=FLOOR_TERMS,
            message=FLOOR_MESSAGE,
            support=SUPPORT,
            nonce=secrets.token_urlsafe(16),
        )

    @app.get("/licence/<key>")
    def licence(key):
        typed = key.upper().replace("-", "")
        with engine.connect() as conn:
            rows = conn.execute(by_key_hash, {"key_hash": hashlib.sha256(typed[2:].encode()).hexdigest()}).all()
        if not rows:
            abort(404)
        price = f"{rows[0].amount / 100:,.2f} USD"
        return render_template(
            "licence.html",
            r=rows[0],
            rows=rows,
            vendor=VENDOR,
            support=SUPPORT,
            price=price + ", paid once",
            price_paid=price,
            base=f"/licence/{key}",
        )

    @app.get("/flow/<token>/quote")
    def quote(token):
        abort(404)

    @app.get("/api/v1/platforms/<platform_id>/licence")
    def licence_api(platform_id):
        given = request.headers.get("Authorization", "").partition(" ")[2].encode()
        if not hmac.compare_digest(given, api_token):
            abort(401)
        with engine.connect() as conn:
            r = conn.execute(by_platform, {"platform_id": platform_id}).first()
        if r is None:
            abort(404)
        etag = '"' + hashlib.blake2b(repr(tuple(r)).encode(), digest_size=16).hexdigest() + '"'
        headers = {"ETag": etag, "Cache-Control": "private, max-age=60", "Vary": "Authorization"}
        if request.headers.get("If-None-Match") == etag:
            return Response(status=304, headers=headers)
        body = {
            "platform": {"id": platform_id, "active": bool(r.access_wanted)},
            "licence": {
                "status": "active",
                "kind": r.kind,
                "price_id": r.price_id,
                "product": r.origin_product_name,
                "quantity": r.quantity,
                "seat_unit": r.seat_unit,
                "ends_at": r.period_end and f"{r.period_end:%Y-%m-%dT%H:%M:%S}Z",
                "manage_url": FLOOR_MANAGE_URL,
            },
        }
        return Response(json.dumps(body), headers=headers, mimetype="application/json")

    @app.post("/webhooks/stripe")
    def webhook():
        payload = request.get_data().decode("utf-8")
        try:
            stripe.WebhookSignature.verify_header(payload, request.headers.get("Stripe-Signature"), secret, 300)
        except stripe.SignatureVerificationError:
            return jsonify(error="invalid signature"), 400
        event = json.loads(payload)
        obj = event["data"]["object"]
        session_id = obj["id"] if obj.get("object") == "checkout.session" else None
        if session_id and stripe_client is not None:  # the checkout row: Stripe is asked, as it must be
            stripe_client.v1.checkout.sessions.retrieve(session_id, params={"expand": ["line_items"]})
        with engine.begin() as conn:
            conn.execute(
                insert(events)
                .values(
                    event_id=event["id"],
                    type=event["type"],
                    session_id=session_id,
                    deliveries=1,
                    outcome="ignored",
                    received_at=datetime.now(UTC).replace(tzinfo=None),
                    payload=payload,
                )
                .on_conflict_do_nothing()
            )
        return jsonify(received=True, result="ignored")

    return app


# ---------------------------------------------------------------------------------------------
# Seeding

CHOSEN_AMOUNT = CHOSEN["unit_amount"] * SEATS
SEED = f"""
INSERT INTO registrations (id, registration_id, flow_token, state, lms_url, lms_family, lms_version,
    lms_details, price_id, quantity, seat_unit, amount, currency, price_interval, product_name, product_description,
    checkout_generation, checkout_expires_at, payment_session_id, payment_intent_id, amount_paid, currency_paid,
    payer_email, paid_at,
    platform_id, completion_html, completed_at, platform_active, attempt_count, attempt_uncertain,
    access_wanted, access_reason, access_attempts, created_at, updated_at)
SELECT i, 'reg-bench-' || i, 'tok_' || md5(i::text), CASE WHEN i <= {PENDING} THEN 'pending' ELSE 'completed' END,
    'https://school' || i || '.instructure.com', 'canvas', 'cloud ' || (i % 7),
    '{{"product_family_code": "canvas"}}',
    CASE WHEN i <= {PENDING} THEN '{CHOSEN["id"]}' ELSE '{PAID_OFFER["id"]}' END,
    CASE WHEN i <= {PENDING} THEN {SEATS} ELSE 1 END,
    CASE WHEN i <= {PENDING} THEN '{CHOSEN["metadata"]["seat_unit"]}' END,
    CASE WHEN i <= {PENDING} THEN {CHOSEN_AMOUNT} ELSE {PAID_OFFER["unit_amount"]} END, 'usd',
    CASE WHEN i <= {PENDING} THEN '{CHOSEN["interval"]}' END,
    CASE WHEN i <= {PENDING} THEN '{CHOSEN["product"][0]}' ELSE '{PAID_OFFER["product"][0]}' END,
    CASE WHEN i <= {PENDING} THEN '{CHOSEN["product"][1]}' ELSE '{PAID_OFFER["product"][1]}' END, 1,
    now() + interval '50 minutes',
    CASE WHEN i > {PENDING} THEN 'cs_bench_paid_' || i END,
    CASE WHEN i > {PENDING} THEN 'pi_bench_' || i END,
    CASE WHEN i > {PENDING} THEN 4900 END, CASE WHEN i > {PENDING} THEN 'usd' END,
    CASE WHEN i > {PENDING} THEN 'admin' || i || '@school.example' END,
    CASE WHEN i > {PENDING} THEN now() END,
    CASE WHEN i > {PENDING} THEN 'platform-' || i END,
    CASE WHEN i > {PENDING} THEN
        '<script>window.parent.postMessage({{subject:"org.imsglobal.lti.close"}}, "*")</script>' END,
    CASE WHEN i > {PENDING} THEN now() END,
    CASE WHEN i > {PENDING} THEN true END, CASE WHEN i > {PENDING} THEN 1 ELSE 0 END, false,
    CASE WHEN i > {PENDING} THEN true END, CASE WHEN i > {PENDING} THEN 'paid' END, 0,
    now() - interval '2 minutes', now() - interval '1 minute'
FROM generate_series(1, {PENDING + PAID}) AS i;

INSERT INTO checkout_sessions (id, session_id, registration_pk, generation, status, payment_status, url,
    expires_at, amount_total, currency, payment_intent_id, payer_email, price_id, quantity, amounts,
    created_at, updated_at)
SELECT i, CASE WHEN i <= {PENDING} THEN 'cs_bench_open_' || i ELSE 'cs_bench_paid_' || i END, i, 1,
    CASE WHEN i <= {PENDING} THEN 'open' ELSE 'complete' END,
    CASE WHEN i <= {PENDING} THEN 'unpaid' ELSE 'paid' END,
    'https://checkout.stripe.com/c/pay/cs_bench_' || i, now() + interval '45 minutes',
    CASE WHEN i <= {PENDING} THEN {CHOSEN_AMOUNT} ELSE 4900 END, 'usd',
    CASE WHEN i > {PENDING} THEN 'pi_bench_' || i END,
    CASE WHEN i > {PENDING} THEN 'admin' || i || '@school.example' END,
    CASE WHEN i <= {PENDING} THEN '{CHOSEN["id"]}' ELSE '{PAID_OFFER["id"]}' END,
    CASE WHEN i <= {PENDING} THEN {SEATS} ELSE 1 END,
    CASE WHEN i <= {PENDING} THEN '{{"usd": {CHOSEN_AMOUNT}}}' ELSE '{{"usd": 4900}}' END::json,
    now() - interval '1 minute', now() - interval '1 minute'
FROM generate_series(1, {PENDING + PAID}) AS i;

INSERT INTO licences (id, registration_pk, kind, status, customer_id, currency, first_paid_at, invoicing_attempt,
    dispute_open, checked_at, created_at, updated_at, key_hash, key_hint, price_id, quantity, amount)
SELECT i, i, 'payment', 'succeeded', 'cus_bench_' || i, 'usd', now(), 0, false, now(), now(), now(),
    encode(sha256(convert_to(lpad(i::text, 16, '0'), 'UTF8')), 'hex'), right(lpad(i::text, 16, '0'), 4),
    '{PAID_OFFER["id"]}', 1, {PAID_OFFER["unit_amount"]}
FROM generate_series({PENDING + 1}, {PENDING + PAID}) AS i;

UPDATE registrations SET licence_pk = id WHERE id > {PENDING};

INSERT INTO licence_payments (id, licence_pk, registration_pk, payment_intent_id, charge_id, amount, currency,
    paid_at, amount_refunded, created_at, updated_at)
SELECT i, i, i, 'pi_bench_' || i, 'ch_bench_' || i, 4900, 'usd', now(), 0, now(), now()
FROM generate_series({PENDING + 1}, {PENDING + PAID}) AS i;

SELECT setval(pg_get_serial_sequence('registrations', 'id'), {PENDING + PAID});
SELECT setval(pg_get_serial_sequence('checkout_sessions', 'id'), {PENDING + PAID});
SELECT setval(pg_get_serial_sequence('licences', 'id'), {PENDING + PAID});
SELECT setval(pg_get_serial_sequence('licence_payments', 'id'), {PENDING + PAID});
"""


def prepare_database(url: str) -> None:
    from flask_migrate import upgrade
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from paygate.application import create_app

    parsed = make_url(url)
    if "hotpath" not in (parsed.database or ""):
        sys.exit(f"refusing to drop database {parsed.database!r}: its name must contain 'hotpath'")
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(
            text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": parsed.database}
        )
        conn.execute(text(f'DROP DATABASE IF EXISTS "{parsed.database}"'))
        conn.execute(text(f'CREATE DATABASE "{parsed.database}"'))
    admin.dispose()
    app = create_app(
        {
            "app_env": "test",
            "database_url": url,
            "ltiaas_url": "http://127.0.0.1:9",
            "ltiaas_api_key": "k",
            "stripe_secret_key": "sk_test_bench",
            "stripe_webhook_secret": WEBHOOK_SECRET,
            "stripe_price_id": PRICE_IDS,
            "public_url": "http://127.0.0.1",
            "secret_key": "bench",
        }
    )
    migration_log = io.StringIO()  # Alembic's INFO lines, shown only if the migration fails
    try:
        with app.app_context(), contextlib.redirect_stderr(migration_log):
            upgrade()
            from paygate.core.db import db

            db.engine.dispose()
    except Exception:
        sys.stderr.write(migration_log.getvalue())
        raise
    engine = create_engine(url)
    with engine.begin() as conn:
        for statement in SEED.split(";\n"):
            if statement.strip():
                conn.execute(text(statement))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    engine.dispose()


# ---------------------------------------------------------------------------------------------
# A fake upstream: the Stripe API (checkout sessions) and, for anything else, a counting LTIaaS.


class FakeUpstream(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64  # both apps' workers connect at once

    def __init__(self):
        self.stripe_calls: dict = {}  # by the caller's API key: the service's and the floor's
        self.price_reads = 0  # the service's reads of the offers' Prices
        self.other_calls = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _UpstreamHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _UpstreamHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _any(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        path = self.path.split("?", 1)[0]
        price = next((o for o in OFFERS if path == "/v1/prices/" + o["id"]), None)
        if self.command == "GET" and price is not None:  # read once per worker process, then cached there
            with self.server.lock:
                self.server.price_reads += 1
            self._answer(200, price_object(price))
            return
        prefix = "/v1/checkout/sessions/cs_bench_paid_"
        if self.command == "GET" and path.startswith(prefix) and path[len(prefix) :].isdigit():
            with self.server.lock:
                key = (self.headers.get("Authorization") or "").rpartition(" ")[2]
                self.server.stripe_calls[key] = self.server.stripe_calls.get(key, 0) + 1
            self._answer(200, paid_session(int(path[len(prefix) :])))
            return
        with self.server.lock:
            self.server.other_calls.append(f"{self.command} {path}")
        self._answer(500, {"error": {"message": "the benchmark allows no such call"}})

    do_GET = do_POST = do_PUT = do_DELETE = _any

    def log_message(self, *args):
        pass


def price_object(offer: dict) -> dict:
    """The offer's Price as Stripe answers it, with `expand=[product, currency_options, tiers]`."""
    tiers = offer.get("tiers")
    recurring = offer["interval"] and {"interval": offer["interval"], "interval_count": 1, "usage_type": "licensed"}
    return {
        "id": offer["id"],
        "object": "price",
        "active": True,
        "billing_scheme": "tiered" if tiers else "per_unit",
        "currency": "usd",
        "currency_options": {}
        if tiers
        else {"usd": {"unit_amount": offer["unit_amount"], "tax_behavior": "exclusive"}},
        "livemode": False,
        "metadata": offer["metadata"],
        "product": {
            "id": "prod_" + offer["id"][6:],
            "object": "product",
            "name": offer["product"][0],
            "description": offer["product"][1],
            "active": True,
        },
        "recurring": recurring or None,
        "tax_behavior": "exclusive",
        "tiers_mode": "graduated" if tiers else None,
        "tiers": [{"up_to": up, "unit_amount": unit, "flat_amount": None} for up, unit in tiers] if tiers else None,
        "type": "recurring" if recurring else "one_time",
        "unit_amount": offer["unit_amount"],
    }


def paid_session(pk: int) -> dict:
    now = int(time.time())
    return {
        "id": f"cs_bench_paid_{pk}",
        "object": "checkout.session",
        "status": "complete",
        "payment_status": "paid",
        "mode": "payment",
        "client_reference_id": f"reg-bench-{pk}",
        "metadata": {"registration_pk": str(pk)},
        "amount_total": 4900,
        "amount_subtotal": 4900,
        "currency": "usd",
        "payment_intent": f"pi_bench_{pk}",
        "customer": None,
        "customer_details": {"email": f"admin{pk}@school.example", "name": None},
        "url": None,
        "expires_at": now + 3600,
        "created": now - 60,
        "livemode": False,
        "subscription": None,
        "line_items": {
            "object": "list",
            "has_more": False,
            "url": "/v1/checkout/sessions/x/line_items",
            "data": [
                {
                    "id": f"li_bench_{pk}",
                    "object": "item",
                    "amount_total": 4900,
                    "currency": "usd",
                    "quantity": 1,
                    "description": "Tool registration",
                    "price": {
                        "id": PRICE_ID,
                        "object": "price",
                        "unit_amount": 4900,
                        "currency": "usd",
                        "recurring": None,
                        "type": "one_time",
                        "active": True,
                    },
                }
            ],
        },
    }


# ---------------------------------------------------------------------------------------------
# Load and measure


def sign(payload: str, at: int | None = None) -> str:
    at = at or int(time.time())
    mac = hmac.new(WEBHOOK_SECRET.encode(), f"{at}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={at},v1={mac}"


def customer_created(event_id: str, n: int) -> str:
    """A customer.created event of about the size Stripe sends (~1.3 kB)."""
    now = int(time.time())
    return json.dumps(
        {
            "id": event_id,
            "object": "event",
            "api_version": "2025-03-31.basil",
            "created": now,
            "data": {
                "object": {
                    "id": f"cus_bench{n:08d}",
                    "object": "customer",
                    "address": None,
                    "balance": 0,
                    "created": now,
                    "currency": None,
                    "default_source": None,
                    "delinquent": False,
                    "description": None,
                    "discount": None,
                    "email": f"someone{n}@example.org",
                    "invoice_prefix": f"B{n:07d}",
                    "invoice_settings": {
                        "custom_fields": None,
                        "default_payment_method": None,
                        "footer": None,
                        "rendering_options": None,
                    },
                    "livemode": False,
                    "metadata": {"source": "another product"},
                    "name": f"Customer {n}",
                    "phone": None,
                    "preferred_locales": [],
                    "shipping": None,
                    "tax_exempt": "none",
                    "test_clock": None,
                }
            },
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": f"req_bench{n:010d}", "idempotency_key": f"6b1c1a6e-{n:08d}-4c1e-9d51-a0c4e1d1c0de"},
            "type": "customer.created",
        }
    )


def session_completed(event_id: str, pk: int) -> str:
    return json.dumps(
        {
            "id": event_id,
            "object": "event",
            "api_version": "2025-03-31.basil",
            "created": int(time.time()),
            "data": {"object": paid_session(pk)},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": "checkout.session.completed",
        }
    )


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime, every thread's, in clock ticks


class Server:
    """One gunicorn (the service or the floor app) and its worker processes."""

    def __init__(self, name: str, target: str, env: dict, args, logdir: str, path: list[str]):
        self.name = name
        self.port = free_port()
        self.log = open(os.path.join(logdir, f"{name}.log"), "w")  # noqa: SIM115 - gunicorn writes it; stop() closes it
        cmd = [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            f"127.0.0.1:{self.port}",
            "--worker-class",
            "gthread",
            "--workers",
            str(args.workers),
            "--threads",
            str(args.threads),
            "--timeout",
            "30",
            "--keep-alive",
            "30",  # the clients' connections outlive the other app's turns
            *(["--config", CONFIG] if os.path.exists(CONFIG) else []),
            "--no-control-socket",
            "--pythonpath",
            ",".join(filter(None, path)),
            target,
        ]
        # Started in a scratch directory, so that no .env of the checkout changes the settings.
        self.proc = subprocess.Popen(cmd, env=env, cwd=logdir, stdout=self.log, stderr=subprocess.STDOUT)
        self.workers: list[int] = []
        self.expected = args.workers

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.name}: gunicorn exited ({self.proc.returncode}); see {self.log.name}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/healthz")
                ok = conn.getresponse().status == 200
                conn.close()
            except OSError:
                ok = False
            if ok and len(self._children()) == self.expected:
                self.workers = self._children()
                return
            time.sleep(0.2)
        raise SystemExit(f"{self.name}: not ready after {timeout} s; see {self.log.name}")

    def _children(self) -> list[int]:
        try:
            with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                return sorted(int(p) for p in f.read().split())
        except FileNotFoundError:
            return []

    def cpu(self) -> int:
        if self._children() != self.workers:
            raise SystemExit(f"{self.name}: a worker process was replaced mid-run; see {self.log.name}")
        return sum(cpu_ticks(pid) for pid in self.workers)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


LICENCE_PATH = f"/licence/PG-0000-0000-0000-{PENDING + 1:04d}"
API_PATH = f"/api/v1/platforms/platform-{PENDING + 1}/licence"


def page_size(server: "Server", path: str = "/pre-approval?registrationId=reg-bench-1", headers=None) -> int:
    """The bytes of one page (the floor's templates must stay the size of the service's pages)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("GET", path, headers={"Accept-Language": "en-US,en;q=0.9", **(headers or {})})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    if response.status != 200:
        raise SystemExit(f"{server.name}: {path} answered {response.status}")
    return len(body)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_side_inode(server_port: int, client_port: int) -> str | None:
    """The socket inode of the server's end of the loopback connection from `client_port`."""
    local, remote = f"0100007F:{server_port:04X}", f"0100007F:{client_port:04X}"
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1] == local and fields[2] == remote:
                return fields[9]
    return None


def _owner(server: "Server", conn: http.client.HTTPConnection) -> int | None:
    """The gunicorn worker process that accepted this connection (the one that answers on it)."""
    inode = _server_side_inode(server.port, conn.sock.getsockname()[1])
    for pid in server.workers:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return pid
            except OSError:
                continue
    return None


def balanced_connections(server: "Server", clients: int) -> list[http.client.HTTPConnection]:
    """`clients` keep-alive connections spread evenly over the worker processes. A keep-alive
    connection stays with the worker that accepted it, and which one does is chance: four connections
    all on one worker make its threads fight over one GIL, which costs CPU that the other app may not
    pay in its run. Balanced, both apps are loaded alike."""
    share = -(-clients // len(server.workers))
    held: dict[int, int] = {}
    conns: list[http.client.HTTPConnection] = []
    for _ in range(clients * 50):
        if len(conns) == clients:
            break
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        conn.request("GET", "/healthz")
        conn.getresponse().read()
        pid = _owner(server, conn)
        if pid is not None and held.get(pid, 0) < share:
            held[pid] = held.get(pid, 0) + 1
            conns.append(conn)
        else:
            conn.close()
    while len(conns) < clients:  # could not balance (unlikely): take what comes
        conns.append(http.client.HTTPConnection("127.0.0.1", server.port, timeout=30))
    return conns


def load(port: int, reqs: list, clients: int, conns: list | None = None) -> list[str]:
    """Send `reqs` ((method, path, body, headers)) from `clients` threads, each on one keep-alive
    connection (`conns`, or new ones)."""
    errors: list[str] = []
    start = threading.Barrier(clients)

    keep = conns is not None  # the caller's connections stay open for its next load
    conns = conns or [http.client.HTTPConnection("127.0.0.1", port, timeout=30) for _ in range(clients)]

    def run(i, chunk):
        conn = conns[i]
        start.wait()
        try:
            for method, path, body, headers in chunk:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                conditional = response.status == 304 and "If-None-Match" in headers
                if response.status != 200 and not conditional and len(errors) < 5:
                    errors.append(f"{method} {path[:40]} -> {response.status}")
                if response.will_close:
                    conn.close()
                    conn = conns[i] = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        except Exception as exc:  # noqa: BLE001 - a lost connection: the run is not measured on fewer requests
            errors.append(f"client {i}: {type(exc).__name__}: {exc}")
        if not keep:
            conn.close()

    threads = [threading.Thread(target=run, args=(i, reqs[i::clients])) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


class Endpoint:
    def __init__(self, key: str, label: str, make, target: float | None, share: float = 1.0):
        self.key, self.label, self.make, self.target = key, label, make, target
        self.share = share  # of --requests: the slower rows take fewer, to keep a run short


def endpoints(args) -> list[Endpoint]:
    # What a browser's frame sends (its language too: the service chooses the page's from it).
    json_accept = {"Accept": "application/json", "Accept-Language": "en-US,en;q=0.9"}
    html_accept = {"Accept": "text/html,application/xhtml+xml", "Accept-Language": "en-US,en;q=0.9"}
    repeat_ids = [f"evt_bench_repeat_{i:06d}" for i in range(args.requests)]  # recorded in the warm-up

    def status(tag, n):
        # The seeded flow tokens: 'tok_' || md5(i::text) (SEED).
        tokens = (hashlib.md5(str(1 + i % PENDING).encode(), usedforsecurity=False).hexdigest() for i in range(n))
        return [("GET", f"/flow/tok_{token}/status", None, json_accept) for token in tokens]

    def preapproval(tag, n):
        return [
            ("GET", f"/pre-approval?registrationId=reg-bench-{1 + (i * 7) % PENDING}", None, html_accept)
            for i in range(n)
        ]

    def licence(tag, n):
        # The seeded keys: licence i's is i in 16 digits (SEED), shown as PG-0000-0000-0004-5001.
        shown = (f"{PENDING + 1 + (i * 7) % PAID:016d}" for i in range(n))
        return [
            ("GET", "/licence/PG-" + "-".join(k[j : j + 4] for j in range(0, 16, 4)), None, html_accept) for k in shown
        ]

    api_accept = {"Accept": "application/json", "Authorization": f"Bearer {LICENCE_API_TOKEN}"}

    def api_platform(i: int) -> str:
        return f"platform-{PENDING + 1 + (i * 7) % PAID}"  # the seeded platform ids of the paid registrations

    def licence_api(tag, n):
        return [("GET", f"/api/v1/platforms/{api_platform(i)}/licence", None, api_accept) for i in range(n)]

    def licence_api_304(tag, n):
        # Each app's own ETags, read now (before the turn's CPU is read): the service's change every ten minutes.
        conn = http.client.HTTPConnection("127.0.0.1", PORTS["service" if "service" in tag else "floor"], timeout=30)
        etags = []
        for i in range(API_PLATFORMS):
            conn.request("GET", f"/api/v1/platforms/{api_platform(i)}/licence", headers=api_accept)
            response = conn.getresponse()
            response.read()
            etags.append(response.getheader("ETag"))
        conn.close()
        return [
            (
                "GET",
                f"/api/v1/platforms/{api_platform(i % API_PLATFORMS)}/licence",
                None,
                {**api_accept, "If-None-Match": etags[i % API_PLATFORMS]},
            )
            for i in range(n)
        ]

    def webhook(tag, n, ids=None):
        out = []
        for i in range(n):
            payload = customer_created(ids[i] if ids else f"evt_bench_{tag}_{i:06d}", i)
            out.append(
                (
                    "POST",
                    "/webhooks/stripe",
                    payload.encode(),
                    {"Content-Type": "application/json; charset=utf-8", "Stripe-Signature": sign(payload)},
                )
            )
        return out

    def repeat(tag, n):
        return webhook(tag, n, repeat_ids[:n])

    def checkout(tag, n):
        out = []
        for i in range(n):
            payload = session_completed(f"evt_bench_cs_{tag}_{i:06d}", PENDING + 1 + i % PAID)
            out.append(
                (
                    "POST",
                    "/webhooks/stripe",
                    payload.encode(),
                    {"Content-Type": "application/json; charset=utf-8", "Stripe-Signature": sign(payload)},
                )
            )
        return out

    rows = [
        Endpoint("status", "status poll", status, TARGETS["status"]),
        Endpoint("preapproval", "pre-approval repeat visit", preapproval, TARGETS["preapproval"]),
        Endpoint("licence", "licence page", licence, TARGETS["licence"]),
        Endpoint("licence_api", "licence API (200)", licence_api, TARGETS["licence_api"]),
        Endpoint("licence_api_304", "licence API (304, If-None-Match)", licence_api_304, TARGETS["licence_api_304"]),
        Endpoint("webhook", "webhook (new customer.created)", webhook, TARGETS["webhook"], 2 / 3),
    ]
    if args.extras:
        rows += [
            Endpoint("repeat", "webhook (repeated delivery)", repeat, None, 1 / 3),
            Endpoint("checkout", "webhook (checkout.session.completed, already paid)", checkout, None, 1 / 5),
        ]
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {e.key for e in rows}
        if unknown:
            raise SystemExit(
                f"--only: no such row {', '.join(sorted(unknown))} (rows: {', '.join(e.key for e in rows)})"
            )
        rows = [e for e in rows if e.key in wanted]
    return rows


def measure_round(servers: list, endpoint: Endpoint, tag: str, count: int, clients: int, slices: int) -> dict:
    """One round of one endpoint: {app: (server CPU ms per request, requests per second)}. Each app's
    `count` requests are sent in `slices` slices, the apps taking turns, so that the two apps' figures
    are taken side by side in time (other load on the machine then weighs on both alike)."""
    conns = {s.name: balanced_connections(s, clients) for s in servers}
    ticks = {s.name: 0 for s in servers}
    seconds = {s.name: 0.0 for s in servers}
    sent = {s.name: 0 for s in servers}
    try:
        for k in range(slices):
            for s in servers if k % 2 == 0 else servers[::-1]:
                n = count // slices + (1 if k < count % slices else 0)
                reqs = endpoint.make(f"{s.name}{tag}s{k}", n) if n else []
                if not reqs:
                    continue
                before, started = s.cpu(), time.perf_counter()
                errors = load(s.port, reqs, clients, conns[s.name])
                seconds[s.name] += time.perf_counter() - started
                time.sleep(0.02)  # after-answer work of the last responses
                ticks[s.name] += s.cpu() - before
                sent[s.name] += len(reqs)
                if errors:
                    raise SystemExit(f"{s.name}: unexpected answers: {errors}")
    finally:
        for pool in conns.values():
            for conn in pool:
                conn.close()
    return {
        name: (ticks[name] / os.sysconf("SC_CLK_TCK") * 1000 / sent[name], sent[name] / seconds[name]) for name in ticks
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("BENCH_HOTPATH_DATABASE_URL", DEFAULT_URL))
    parser.add_argument("--db", default=None, help="database name (must contain 'hotpath')")
    parser.add_argument("--requests", type=int, default=1500, help="requests per endpoint, app and round")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--slices", type=int, default=10, help="turns the two apps take within a round (each sends its share per turn)"
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--no-extras", dest="extras", action="store_false", help="only the rows with targets")
    parser.add_argument(
        "--only",
        default="",
        help="measure only these rows, comma-separated keys: status, preapproval, licence, licence_api, "
        "licence_api_304, webhook (and, with the extras, repeat, checkout)",
    )
    parser.add_argument(
        "--service-dir",
        default=REPO,
        help="the service's code (wsgi.py, paygate/): e.g. `git archive` of an earlier commit, to "
        "compare; the schema must be this checkout's",
    )
    parser.add_argument(
        "--service-app", default="wsgi:app", help="gunicorn's app for the service (a variant of it; on --pythonpath)"
    )
    parser.add_argument("--pythonpath", default="", help="one more directory on the service's Python path")
    parser.add_argument("--keep-logs", action="store_true", help="keep the servers' logs (path printed)")
    args = parser.parse_args()
    from sqlalchemy.engine import make_url

    url = make_url(args.url)
    if args.db:
        url = url.set(database=args.db)
    url_text = url.render_as_string(hide_password=False)

    t0 = time.monotonic()
    prepare_database(url_text)
    fake = FakeUpstream()
    threading.Thread(target=fake.serve_forever, daemon=True).start()
    logdir = tempfile.mkdtemp(prefix="bench-hotpath-")
    base_env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "LC_ALL", "TZ") if k in os.environ}
    service_env = {
        **base_env,
        "APP_ENV": "production",
        "DATABASE_URL": url_text,
        "LTIAAS_URL": fake.url,
        "LTIAAS_API_KEY": "ltiaas-bench-key",
        "STRIPE_SECRET_KEY": "sk_test_bench",
        "STRIPE_API_BASE": fake.url,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "STRIPE_PRICE_ID": PRICE_IDS,
        # The frame then also says that a promotion code may be entered and that tax is added.
        "PROMOTION_CODES": "on",
        "STRIPE_TAX": "on",
        "VENDOR_NAME": VENDOR,
        "SECRET_KEY": "bench-secret-key-of-at-least-32-characters",
        "PUBLIC_URL": "http://127.0.0.1",
        "RATELIMIT_STORAGE_URI": "memory://",
        "SUPPORT_CONTACT": SUPPORT,
        "LICENCE_API_TOKEN": LICENCE_API_TOKEN,
    }
    floor_env = {
        **base_env,
        "FLOOR_DATABASE_URL": url_text,
        "FLOOR_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "FLOOR_STRIPE_API_BASE": fake.url,
        "FLOOR_LICENCE_API_TOKEN": LICENCE_API_TOKEN,
    }
    servers = [
        Server(
            "service", args.service_app, service_env, args, logdir, [os.path.abspath(args.service_dir), args.pythonpath]
        ),
        Server("floor", "bench_hot_paths:floor_app()", floor_env, args, logdir, [os.path.join(REPO, "scripts")]),
    ]
    rows = endpoints(args)

    def count(e: Endpoint) -> int:
        return max(int(args.requests * e.share), args.clients)

    results = {(e.key, s.name): [] for e in rows for s in servers}
    rates = {(e.key, s.name): [] for e in rows for s in servers}
    try:
        for s in servers:
            s.wait_ready()
            PORTS[s.name] = s.port
        sizes = {s.name: page_size(s) for s in servers}
        print(f"pre-approval page: service {sizes['service']} bytes, floor {sizes['floor']} bytes", flush=True)
        sizes = {s.name: page_size(s, LICENCE_PATH) for s in servers}
        print(f"licence page: service {sizes['service']} bytes, floor {sizes['floor']} bytes", flush=True)
        sizes = {s.name: page_size(s, API_PATH, {"Authorization": f"Bearer {LICENCE_API_TOKEN}"}) for s in servers}
        print(f"licence API: service {sizes['service']} bytes, floor {sizes['floor']} bytes", flush=True)
        # Warm up: connections in every worker's pool, templates compiled, imports done.
        for e in rows:
            for s in servers:
                # The repeat row's warm-up records the events that are then delivered again.
                reqs = e.make("warm", count(e)) if e.key == "repeat" else e.make(f"warm{s.name}", WARM_UP)
                errors = load(s.port, reqs, args.clients)
                if errors:
                    raise SystemExit(f"{s.name}: unexpected answers while warming up: {errors}")
        for r in range(args.rounds):
            for e in rows:
                order = servers if r % 2 == 0 else servers[::-1]
                for name, (cpu_ms, rate) in measure_round(
                    order, e, f"r{r}", count(e), args.clients, args.slices
                ).items():
                    results[(e.key, name)].append(cpu_ms)
                    rates[(e.key, name)].append(rate)
    finally:
        for s in servers:
            s.stop()
        fake.shutdown()

    checkout_rounds = WARM_UP + args.rounds * count(rows[-1]) if rows[-1].key == "checkout" else 0  # per app
    # The offers' Prices, cached per worker process for PRICE_TTL seconds (a worker may also be asked for a page
    # while another of its threads reads them).
    price_reads_allowed = len(OFFERS) * args.workers * args.threads * (1 + int(time.monotonic() - t0) // PRICE_TTL)
    print(
        f"hot paths: server CPU ms per request (gunicorn gthread --workers {args.workers} --threads "
        f"{args.threads}, {args.requests} requests per round (fewer for webhooks) from {args.clients} keep-alive "
        "clients, "
        f"PostgreSQL {url.database}); median of {args.rounds} interleaved rounds"
    )
    print(f"{'endpoint':52} {'service':>8} {'floor':>8} {'ratio':>6} {'target':>7}  ratio per round")
    missed = []
    for e in rows:
        service, floor = results[(e.key, "service")], results[(e.key, "floor")]
        per_round = [a / b for a, b in zip(service, floor, strict=True)]
        ratio = statistics.median(per_round)
        target = f"{e.target:.1f}x" if e.target else "-"
        verdict = "" if e.target is None else ("ok" if ratio <= e.target else "ABOVE")
        if verdict == "ABOVE":
            missed.append(e.label)
        print(
            f"{e.label:52} {statistics.median(service):8.3f} {statistics.median(floor):8.3f} "
            f"{ratio:5.2f}x {target:>7} {verdict:5} " + " ".join(f"{x:.2f}" for x in per_round)
        )
    print(
        "requests/s (median): "
        + "; ".join(
            f"{e.key} {statistics.median(rates[(e.key, 'service')]):.0f} "
            f"vs {statistics.median(rates[(e.key, 'floor')]):.0f}"
            for e in rows
        )
    )
    calls = {"service": fake.stripe_calls.get("sk_test_bench", 0), "floor": fake.stripe_calls.get("sk_test_floor", 0)}
    print(
        f"upstream calls: Stripe {calls['service']} from the service, {calls['floor']} from the floor "
        f"({checkout_rounds} each expected: the checkout row's), Prices read by the service {fake.price_reads} "
        f"(each worker reads the {len(OFFERS)} offers once, again after {PRICE_TTL} s), other {len(fake.other_calls)}"
        + (": " + ", ".join(sorted(set(fake.other_calls))[:5]) if fake.other_calls else "")
    )
    print(
        ("all within target" if not missed else "ABOVE TARGET: " + ", ".join(missed))
        + f" ({time.monotonic() - t0:.0f} s)"
    )
    if args.keep_logs:
        print(f"logs: {logdir}")
    else:
        shutil.rmtree(logdir, ignore_errors=True)
    if fake.other_calls or set(calls.values()) != {checkout_rounds} or fake.price_reads > price_reads_allowed:
        sys.exit("upstream calls outside the checkout row: the measured paths are not the intended ones")


if __name__ == "__main__":
    main()
