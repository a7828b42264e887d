"""Checkout's hosted page, where the admin pays (/_local/stripe/checkout/{id}), and the PDF of the invoice a paid
session made.

Element ids a test may use: `#quantity`, `#subtotal`, `#discount`, `#tax`, `#amount` (the total) and `#unit-price`
(of the first line item); `#promotion-code` and `#apply-code` (when the session allows promotion codes),
`#code-error` (Checkout's sentence for a code it cannot apply); `#custom-<key>` (each custom field, e.g.
`#custom-organisation`); `#country` and `#postal-code` (with automatic tax or tax ID collection); `#tax-id-type`
and `#tax-id` (with tax ID collection); `#email`, `#name`, `#currency` (a price sold in several); `#error` (why the
payment was refused); `#pay` ("Pay", or "Complete order" when nothing is due), `#pay-delayed`; after a delayed
payment `#settle-succeeded`, `#settle-failed`; `#status`, `#payment-status`, `#locale`, `#description`, `#back`,
`#dashboard`.
"""

import logging

from flask import redirect, render_template_string, request

from paygate.standins.stripe import checkout, checkout_pay, checkout_terms, core, prices

log = logging.getLogger(__name__)

# The countries the page offers (paygate/standins/stripe/tax.py has their rates).
COUNTRIES = ("US", "CA", "MX", "GB", "IE", "FR", "DE", "ES", "IT", "NL", "BE", "PT", "CH", "SE", "AU", "JP", "BR")

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Local Stripe stand-in — Checkout</title>
<style>body{font-family:system-ui,sans-serif;max-width:34rem;margin:2rem auto;padding:0 1rem}
.banner{background:#fff3cd;border:1px solid #d6b656;padding:.5rem 1rem}#amount{font-size:2rem;margin:.5rem 0}
button{margin:.5rem .5rem 0 0;padding:.5rem 1rem}table{border-collapse:collapse;width:100%}
td,th{text-align:left;padding:.2rem .4rem}td.n{text-align:right}.error{color:#a4000f;font-weight:600}
.visually-hidden{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0)}</style>
</head><body>
<p class="banner"><strong>Local Stripe stand-in — no real payment</strong>
  · <a id="dashboard" href="{{ dashboard }}" target="_blank" rel="noopener">Dashboard</a></p>
<h1>{{ product }}</h1>
{% if description %}<p id="description">{{ description }}</p>{% endif %}
<p>Checkout language (<code>locale</code>): <code id="locale">{{ s.locale or "auto" }}</code>
  (real Checkout speaks it; this stand-in stays in English)</p>
<table><caption class="visually-hidden">Order summary</caption>
<tr><th scope="row">Unit price</th><td class="n" id="unit-price">{{ unit }}</td></tr>
<tr><th scope="row">Quantity</th><td class="n" id="quantity">{{ item.quantity }}</td></tr>
<tr><th scope="row">Subtotal</th><td class="n" id="subtotal">{{ money(s.amount_subtotal, s.currency) }}</td></tr>
<tr><th scope="row">Discount{% if code %} (<span id="applied-code">{{ code }}</span>){% endif %}</th>
  <td class="n" id="discount">-{{ money(s.total_details.amount_discount, s.currency) }}</td></tr>
<tr><th scope="row">Tax</th><td class="n" id="tax">{% if s.automatic_tax.enabled and s.automatic_tax.status
  != "complete" %}calculated from your address{% else %}{{ money(s.total_details.amount_tax, s.currency) }}{% endif
  %}</td></tr></table>
<p><span>Total due</span> <span id="amount">{{ money(s.amount_total, s.currency) }}{% if interval %} / {{ interval
  }}{% endif %}</span></p>
<p>Session <code>{{ s.id }}</code>: <span id="status">{{ s.status }}</span>,
  <span id="payment-status">{{ s.payment_status }}</span></p>
{% if error %}<p id="error" class="error" role="alert">{{ error }}</p>{% endif %}
{% if s.status == "open" %}
<form method="post" action="{{ page }}/pay">
  {% if s.allow_promotion_codes %}
  <p><label for="promotion-code">Promotion code</label>
    <input id="promotion-code" name="promotion_code" value="{{ form.promotion_code or '' }}" autocomplete="off"
      {% if code_error %}aria-invalid="true" aria-describedby="code-error"{% endif %}>
    <button id="apply-code" name="apply" value="1" formnovalidate>Apply</button>
    {% if code_error %}<span id="code-error" class="error" role="alert">{{ code_error }}</span>{% endif %}</p>
  {% endif %}
  <p><label>Email <input type="email" id="email" name="email" value="{{ form.email or s.customer_email or
    'admin@school.example' }}" required></label></p>
  <p><label>Name on card <input id="name" name="name" value="{{ form.name or 'Alex Admin' }}" maxlength="150">
    </label></p>
  {% for f in s.custom_fields %}{% set limits = f[f.type] %}
  <p><label for="custom-{{ f.key }}">{{ f.label.custom }}{% if f.optional %} (optional){% endif %}</label>
    <input id="custom-{{ f.key }}" name="custom-{{ f.key }}" value="{{ form['custom-' ~ f.key]
      or limits.default_value or ('' if f.optional else example_answer) }}"
      {%- if limits.maximum_length %} maxlength="{{ limits.maximum_length }}"{% endif %}{% if
      limits.minimum_length %} minlength="{{ limits.minimum_length }}"{% endif %}{% if f.type == "numeric" %}
      inputmode="numeric" pattern="[0-9]*"{% endif %}{% if not f.optional %} required{% endif %}></p>
  {% endfor %}
  {% if address %}
  <p><label for="country">Country</label> <select id="country" name="country" required>
    {% for c in countries %}<option{% if c == (form.country or "US") %} selected{% endif %}>{{ c }}</option>
    {% endfor %}</select>
    <label for="postal-code">Postal code</label> <input id="postal-code" name="postal_code" maxlength="20"
      autocomplete="postal-code" value="{{ form.postal_code or '' }}"></p>
  {% endif %}
  {% if s.tax_id_collection %}
  <p><label for="tax-id-type">Tax ID type</label> <select id="tax-id-type" name="tax_id_type">
    {% for t in tax_id_types %}<option{% if t == form.tax_id_type %} selected{% endif %}>{{ t }}</option>
    {% endfor %}</select>
    <label for="tax-id">Tax ID (optional)</label> <input id="tax-id" name="tax_id" maxlength="64"
      value="{{ form.tax_id or '' }}"></p>
  {% endif %}
  {% if totals|length > 1 %}
  <p><label>Currency <select id="currency" name="currency">
    {% for currency, total in totals.items() %}
    <option value="{{ currency }}"{% if currency == s.currency %} selected{% endif %}>
      {{ money(total, currency) }}</option>
    {% endfor %}</select></label></p>
  {% endif %}
  <button id="pay" name="method" value="card">{{ "Complete order" if free else "Pay" }}</button>
  {% if not free %}
  <button id="pay-delayed" name="method" value="delayed">Pay by bank transfer (delayed)</button>{% endif %}
</form>
{% elif pending %}
<form method="post" action="{{ page }}/settle">
  <p>The bank transfer is pending.</p>
  <button id="settle-succeeded" name="outcome" value="succeeded">Transfer arrives</button>
  <button id="settle-failed" name="outcome" value="failed">Transfer fails</button>
</form>
{% endif %}
{% if s.invoice and s.mode == "payment" %}<p>Invoice: <a id="invoice-pdf" href="{{ page }}/invoice.pdf">{{ s.invoice
  }}</a></p>{% endif %}
{% if s.cancel_url %}<p><a id="back" href="{{ s.cancel_url }}">Back</a></p>{% endif %}
</body></html>"""

INVOICE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Invoice {{ i.number }}</title></head><body>
<p><strong>Local Stripe stand-in — not a real invoice</strong></p>
<h1>Invoice <span id="number">{{ i.number }}</span></h1>
<p>{{ i.account_name }} · billed to {{ i.customer_name or i.customer_email }} · <span id="status">{{ i.status }}</span>
</p>
<table><tr><th>Description</th><th>Quantity</th><th>Amount</th></tr>
{% for line in i.lines.data %}<tr><td>{{ line.description }}</td><td>{{ line.quantity }}</td>
  <td>{{ money(line.amount, i.currency) }}</td></tr>{% endfor %}</table>
<p>Subtotal {{ money(i.subtotal, i.currency) }}
{% for d in i.total_discount_amounts %} · discount -{{ money(d.amount, i.currency) }}
{% endfor %}
{% for t in i.total_taxes %} · tax {{ money(t.amount, i.currency) }}{% endfor %}
· <strong>total <span id="total">{{ money(i.total, i.currency) }}</span></strong>,
paid {{ money(i.amount_paid, i.currency) }}</p>
</body></html>"""


def _fields(form) -> dict:
    return {k[len("custom-") :]: v for k, v in form.items() if k.startswith("custom-")}


def register(bp, st) -> None:
    """The hosted page at /stripe/checkout/{id}: GET it, POST .../pay (or apply a code), .../settle; and
    .../invoice.pdf."""
    base = st.settings.public_url.rstrip("/")

    def page(session_id, status=200, error=None, code_error=None, form=None):
        record = st.stores["checkout.session"].get(session_id)
        if record is None:
            return core.html("<h1>No such Checkout Session</h1>", 404)
        checkout.refresh(record, st)
        pi = st.stores["payment_intent"].get(record["_pi"])
        price, item = record["_chosen"][0][0], record["_line_items"][0]
        tiered = bool(price.get("_tiers"))
        promo = record["_promo"] and st.promotion_codes.get(record["_promo"])
        text = render_template_string(
            PAGE,
            s=record,
            item=item,
            unit="by volume tiers"
            if tiered
            else core.money(prices.amount(price, record["currency"]), record["currency"]),
            code=promo and promo["code"],
            page=f"{base}/_local/stripe/checkout/{session_id}",
            money=core.money,
            dashboard=f"{base}/_local/stripe/dashboard",
            product=prices.product_name(st, price),
            description=prices.product(st, price).get("description"),
            totals=record["_totals"],
            interval=(price["recurring"] or {}).get("interval"),
            pending=bool(pi and pi["status"] == "processing"),
            free=record["amount_total"] == 0,
            address=record["automatic_tax"]["enabled"] or record.get("tax_id_collection"),
            countries=COUNTRIES,
            tax_id_types=checkout_pay.TAX_ID_TYPES,
            error=error,
            code_error=code_error,
            form=form or {},
            # A required text field comes filled in, so that a click-through of the local run pays at once.
            example_answer="Springfield Elementary",
        )
        return core.html(text, status)

    @bp.get("/stripe/checkout/<session_id>")
    def stripe_checkout_page(session_id):
        with st.lock:
            return page(session_id)

    @bp.post("/stripe/checkout/<session_id>/pay")
    def stripe_checkout_pay(session_id):
        form = request.form
        email = form.get("email", "").strip()
        delayed = form.get("method") == "delayed"
        with st.lock:
            record = st.stores["checkout.session"].get(session_id)
            if record is None:
                return page(session_id)
            checkout.refresh(record, st)
            if record["status"] != "open":
                return page(session_id, 400)
            if form.get("apply"):  # the promotion code's Apply button: the page again, with the code or the sentence
                problem = checkout_terms.apply_code(st, record, form.get("promotion_code", ""))
                st.changed()
                return page(session_id, 400 if problem else 200, code_error=problem, form=form)
            currency = form.get("currency") or record["currency"]
            if "@" not in email or currency not in record["_totals"]:
                return page(session_id, 400, "Enter a valid email address.", form=form)
            address = {"country": form.get("country"), "postal_code": form.get("postal_code")}
            tax_id = {"type": form.get("tax_id_type") or "eu_vat", "value": form.get("tax_id")}
            name = form.get("name", "").strip()[:150]
            try:
                checkout.pay(st, record, email, currency, delayed, name, _fields(form), address, tax_id)
            except checkout_pay.Refused as exc:
                return page(session_id, 400, str(exc), form=form)
            finally:
                st.changed()
            target = (record["success_url"] or "").replace("{CHECKOUT_SESSION_ID}", session_id)
        log.info("local Stripe: %s paid (%s)", session_id, "delayed" if delayed else "card")
        return redirect(target, 303) if target else core.html("<p>Paid. You may close this window.</p>")

    @bp.post("/stripe/checkout/<session_id>/settle")
    def stripe_checkout_settle(session_id):
        outcome = request.form.get("outcome")
        with st.lock:
            record = st.stores["checkout.session"].get(session_id)
            pi = record and st.stores["payment_intent"].get(record["_pi"])
            if not pi or pi["status"] != "processing" or outcome not in ("succeeded", "failed"):
                return core.html("<p>No pending bank transfer to settle here.</p>", 400)
            checkout.settle(st, record, outcome == "succeeded")
            st.changed()
        return redirect(f"{base}/_local/stripe/checkout/{session_id}", 303)

    @bp.get("/stripe/checkout/<session_id>/invoice.pdf")
    def stripe_checkout_invoice(session_id):
        with st.lock:
            record = st.stores["checkout.session"].get(session_id)
            invoice = record and st.stores["invoice"].get(record["invoice"])
            if invoice is None:
                return core.html("<h1>No invoice for this Checkout Session</h1>", 404)
            return core.html(render_template_string(INVOICE, i=invoice, money=core.money))
