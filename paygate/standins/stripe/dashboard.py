"""A small dashboard: what the stand-in holds, and buttons for what Stripe or the customer would do next."""

from datetime import UTC, datetime
from urllib.parse import urlencode

from flask import jsonify, redirect, render_template_string, request

from paygate.standins.stripe import charges, core, invoices, prices, subscriptions

# Each button's id is {prefix}{action}-{object id}: refund-ch_..., dispute-won-du_..., sub-past_due-sub_...
PREFIX = {"charge": "", "dispute": "dispute-", "subscription": "sub-", "invoice": "invoice-"}
SUB_STATUSES = ("past_due", "unpaid", "canceled", "active")


def _days(form) -> int:
    try:
        return max(0, int(form.get("days", 1)))
    except ValueError:
        raise core.state_error("days must be a whole number.") from None


def _set_status(status: str):
    return lambda st, sub, form: subscriptions.set_status(st, sub, status)


def _quantity(st, sub, form):
    """The vendor changes the quantity, as in Stripe's dashboard (prorations as the form says)."""
    try:
        quantity = int(form.get("quantity", ""))
    except ValueError:
        raise core.state_error("The quantity must be a whole number.") from None
    if quantity < 0:
        raise core.state_error("The quantity must not be negative.")
    subscriptions.change_quantity(st, sub, quantity, form.get("proration_behavior") or "create_prorations")


def _refund_half(st, charge, form):
    return charges.refund(st, charge, max(1, (charge["amount"] - charge["amount_refunded"]) // 2))


ACTIONS = {
    ("charge", "refund"): lambda s, obj, form: charges.refund(s, obj),
    ("charge", "refund-half"): _refund_half,
    ("charge", "refund-fail"): lambda s, obj, form: charges.fail_newest_refund(s, obj),
    ("charge", "dispute"): lambda s, obj, form: charges.open_dispute(s, obj),
    ("dispute", "won"): lambda s, obj, form: charges.close_dispute(s, obj, True),
    ("dispute", "lost"): lambda s, obj, form: charges.close_dispute(s, obj, False),
    **{("subscription", status): _set_status(status) for status in SUB_STATUSES},
    ("subscription", "renewal-failed"): lambda s, obj, form: subscriptions.renew(s, obj, "failed"),
    ("subscription", "quantity"): _quantity,
    # The clock reaches the period's end: renewed, or ended if it was set to cancel at period end.
    ("subscription", "period-end"): lambda s, obj, form: subscriptions.period_ends(s, obj),
    ("invoice", "paid"): lambda s, obj, form: invoices.pay(s, obj),
    ("invoice", "overdue"): lambda s, obj, form: invoices.overdue(s, obj, _days(form)),
    ("invoice", "void"): lambda s, obj, form: invoices.void(s, obj, drafts_too=True),
    ("invoice", "uncollectible"): lambda s, obj, form: invoices.mark_uncollectible(s, obj),
}

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Local Stripe stand-in — Dashboard</title>
<style>body{font-family:system-ui,sans-serif;margin:1rem 2rem}
table{border-collapse:collapse;width:100%;margin-bottom:2rem}
td,th{border:1px solid #ccc;padding:.3rem;text-align:left;vertical-align:top;font-size:.9rem}form{display:inline}
.banner{background:#fff3cd;border:1px solid #d6b656;padding:.5rem 1rem}code{font-size:.8rem}
button{margin:.1rem}#notice{background:#e7f1ff;padding:.5rem 1rem}</style></head><body>
{% macro act(kind, id, action, label) -%}
<form method="post" action="{{ base }}/{{ kind }}/{{ id }}/{{ action }}">{{ caller() }}<button
  id="{{ prefix[kind] }}{{ action }}-{{ id }}">{{ label }}</button></form>
{%- endmacro %}
<p class="banner"><strong>Local Stripe stand-in — no real money</strong> ·
  <a href="{{ base }}.json">JSON</a></p>
{% if notice %}<p id="notice">{{ notice }}</p>{% endif %}

<h2>Payments</h2>
<table id="charges"><tr><th>charge / payment intent</th><th>registration</th><th>status</th><th>amount</th>
<th>refunds</th><th>disputes</th><th>actions</th></tr>
{% for c in charges %}<tr id="{{ c.id }}">
<td><code>{{ c.id }}</code><br><code>{{ c.payment_intent }}</code><br>{{ c.receipt_email or "" }}</td>
<td>{{ registration(c) }}</td>
<td>{{ c.status }}{% if c.refunded %}, refunded{% endif %}{% if c.disputed %}, disputed{% endif %}</td>
<td>{{ money(c.amount, c.currency) }}<br>refunded {{ money(c.amount_refunded, c.currency) }}</td>
<td>{% for r in refunds(c) %}<code>{{ r.id }}</code> {{ money(r.amount, r.currency) }} {{ r.status }}<br>
  {% endfor %}</td>
<td>{% for d in disputes(c) %}<code>{{ d.id }}</code> {{ d.status }} (evidence by {{ when(d.evidence_details.due_by) }})
  {% call act("dispute", d.id, "won", "Won") %}{% endcall %}{% call act("dispute", d.id, "lost", "Lost") %}{% endcall %}
  <br>{% endfor %}</td>
<td>{% call act("charge", c.id, "refund", "Refund in full") %}{% endcall %}
  {% call act("charge", c.id, "refund-half", "Refund half") %}{% endcall %}
  {% call act("charge", c.id, "refund-fail", "Newest refund fails") %}{% endcall %}
  {% call act("charge", c.id, "dispute", "Open a dispute") %}{% endcall %}</td></tr>
{% endfor %}</table>

<h2>Subscriptions</h2>
<table id="subscriptions"><tr><th>subscription</th><th>registration</th><th>status</th><th>plan</th><th>period ends</th>
<th>latest invoice</th><th>actions</th></tr>
{% for s in subscriptions %}<tr id="{{ s.id }}">
<td><code>{{ s.id }}</code><br><code>{{ s.customer }}</code></td><td>{{ registration(s) }}</td>
<td>{{ s.status }}<br>{{ s.collection_method }}{% if s.cancel_at_period_end %}<br>ends at period end{% endif %}</td>
<td>{{ plan(s) }}</td>
<td>{{ when(s["items"].data[0].current_period_end) }}</td><td><code>{{ s.latest_invoice }}</code></td>
<td>{% for status in statuses %}{% call act("subscription", s.id, status, "→ " ~ status) %}{% endcall %}{% endfor %}
  {% call act("subscription", s.id, "renewal-failed", "Renewal payment fails") %}{% endcall %}
  {% call act("subscription", s.id, "period-end", "Period ends now") %}{% endcall %}
  {% call act("subscription", s.id, "quantity", "Change quantity") %}<input type="number" min="0" name="quantity"
    value="{{ s["items"].data[0].quantity }}" id="quantity-{{ s.id }}" aria-label="quantity" style="width:4rem">
    <select name="proration_behavior" id="proration-{{ s.id }}" aria-label="prorations">{% for p in prorations %}
    <option>{{ p }}</option>{% endfor %}</select>{% endcall %}</td></tr>
{% endfor %}</table>

<h2>Invoices</h2>
<table id="invoices"><tr><th>invoice</th><th>registration</th><th>status</th><th>amounts</th><th>due</th>
<th>actions</th></tr>
{% for i in invoices %}<tr id="{{ i.id }}">
<td><code>{{ i.id }}</code> {{ i.number or "(draft)" }}<br><code>{{ i.customer }}</code> {{ i.customer_email or "" }}
  {% if i.parent %}<br><code>{{ i.parent.subscription_details.subscription }}</code>{% endif %}</td>
<td>{{ registration(i) }}</td><td>{{ i.status }}<br>{{ i.collection_method }}{% if i._sent %}, sent{% endif %}</td>
<td>subtotal {{ money(i.subtotal, i.currency) }}{% for d in i.total_discount_amounts or [] %}<br>
  discount {{ money(d.amount, i.currency) }}{% endfor %}{% for t in i.total_taxes or [] %}<br>
  tax {{ money(t.amount, i.currency) }}{% endfor %}<br>
  due {{ money(i.amount_due, i.currency) }}<br>paid {{ money(i.amount_paid, i.currency) }}<br>
  remaining {{ money(i.amount_remaining, i.currency) }}{% if i.invoice_pdf %}<br>
  <a href="{{ i.invoice_pdf }}">PDF</a>{% endif %}</td>
<td>{{ when(i.due_date) }}</td>
<td>{% call act("invoice", i.id, "paid", "Paid") %}{% endcall %}
  {% call act("invoice", i.id, "overdue", "Overdue") %}<input type="number" min="0" name="days" value="1"
    id="overdue-days-{{ i.id }}" aria-label="days overdue" style="width:3rem">{% endcall %}
  {% call act("invoice", i.id, "void", "Void") %}{% endcall %}
  {% call act("invoice", i.id, "uncollectible", "Uncollectible") %}{% endcall %}</td></tr>
{% endfor %}</table>
</body></html>"""


def registration(st, obj: dict) -> str:
    """The registration an object pays for: its metadata, its subscription's, or its invoice's."""
    if obj["object"] == "charge":
        pi = st.stores["payment_intent"].get(obj["payment_intent"]) or {}
        invoice = st.stores["invoice"].get(pi.get("_invoice"))
        return (
            obj["metadata"].get("registration_id")
            or (pi.get("metadata") or {}).get("registration_id")
            or (registration(st, invoice) if invoice else "")
        )
    details = ((obj.get("parent") or {}).get("subscription_details") or {}).get("metadata") or {}
    return obj["metadata"].get("registration_id") or details.get("registration_id") or ""


def plan(sub: dict) -> str:
    """What the subscription's quantity costs each interval (by its price's tiers), in its currency, before
    discounts and tax."""
    quantity = sub["items"]["data"][0]["quantity"]
    amount = prices.total(sub["_price"], quantity, sub["currency"])
    return f"quantity {quantity}: {core.money(amount, sub['currency'])} / {sub['_price']['recurring']['interval']}"


def when(ts: int | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC") if ts else ""


def snapshot(st) -> dict:
    """Every store's objects, newest first, and the events sent, for tests and curious people."""
    stores = {
        kind: [core.render(st, obj, {"payments"} if kind == "invoice" else ()) for obj in core.newest(st, kind)]
        for kind in st.stores
    }
    events = [
        {"id": e["id"], "type": e["type"], "created": e["created"], "object": e["data"]["object"].get("id")}
        for e in st.events
    ]
    return {**stores, "events": events}


def register(bp, st) -> None:
    """GET /stripe/dashboard (HTML), /stripe/dashboard.json, and its POST actions."""
    base = f"{st.settings.public_url.rstrip('/')}/_local/stripe/dashboard"

    @bp.get("/stripe/dashboard")
    def stripe_dashboard():
        with st.lock:
            text = render_template_string(
                PAGE,
                base=base,
                prefix=PREFIX,
                statuses=SUB_STATUSES,
                prorations=subscriptions.PRORATIONS,
                notice=request.args.get("notice"),
                charges=core.newest(st, "charge"),
                subscriptions=core.newest(st, "subscription"),
                invoices=core.newest(st, "invoice"),
                registration=lambda obj: registration(st, obj),
                when=when,
                plan=plan,
                money=core.money,
                refunds=lambda c: core.newest(st, "refund", lambda r: r["charge"] == c["id"]),
                disputes=lambda c: core.newest(st, "dispute", lambda d: d["charge"] == c["id"]),
            )
        return core.html(text)

    @bp.get("/stripe/dashboard.json")
    def stripe_dashboard_json():
        with st.lock:
            return jsonify(snapshot(st))

    @bp.post("/stripe/dashboard/<kind>/<object_id>/<action>")
    def stripe_dashboard_action(kind, object_id, action):
        act = ACTIONS.get((kind, action))
        if act is None:
            return core.html("<p>No such dashboard action.</p>", 404)
        try:
            with st.lock:
                act(st, core.get(st, kind, object_id), request.form)
                st.changed()
            notice = f"{action}: done for {object_id}."
        except core.StripeFail as exc:
            notice = f"{action} refused for {object_id}: {exc.message}"
        return redirect(f"{base}?{urlencode({'notice': notice})}", 303)
