"""Invoices: drafts, finalising, sending, paying, voiding, writing off, and the PDF page (what they bill:
paygate/standins/stripe/billing.py; their items: invoice_items.py)."""

import copy
from datetime import UTC, datetime

from flask import render_template_string

from paygate.standins.stripe import billing, charges, core, customers, events, invoice_items

DEFAULT_DAYS_UNTIL_DUE = 30  # Stripe's default payment terms (Billing st)
RETRY_DAYS = 3  # when a failed automatic payment is tried again
PAYABLE = ("open", "uncollectible")
COLLECTION_METHODS = ("charge_automatically", "send_invoice")
CREATE = core.known(
    "customer",
    "collection_method",
    "days_until_due",
    "due_date",
    "auto_advance",
    "pending_invoice_items_behavior",
    "currency",
    "description",
    "metadata[*]",
    "custom_fields[][name]",
    "custom_fields[][value]",
    "automatic_tax[enabled]",
    "discounts[][promotion_code]",
    "discounts[][coupon]",
    "expand[]",
)
LISTED_BY = ("customer", "status", "subscription")

# What invoice_pdf serves: Stripe's is a PDF; the stand-in's is a page with the same figures.
PDF_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Invoice {{ i.number }}</title>
<style>body{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto}td,th{padding:.2rem .5rem;text-align:left}
.banner{background:#fff3cd;border:1px solid #d6b656;padding:.5rem 1rem}</style></head><body>
<p class="banner"><strong>Local Stripe stand-in — not a real invoice</strong></p>
<h1>Invoice <span id="number">{{ i.number }}</span></h1>
<p id="status">{{ i.status }}</p>
<p>{{ i.customer_name or "" }} {{ i.customer_email or "" }}{% if i.customer_address %}<br>
  {{ i.customer_address.postal_code or "" }} {{ i.customer_address.country or "" }}{% endif %}</p>
{% for f in i.custom_fields or [] %}<p>{{ f.name }}: {{ f.value }}</p>{% endfor %}
<table id="lines"><tr><th>description</th><th>quantity</th><th>amount</th></tr>
{% for l in i.lines.data %}<tr><td>{{ l.description }}</td><td>{{ l.quantity }}</td>
<td>{{ money(l.amount, i.currency) }}</td></tr>{% endfor %}</table>
<p>Subtotal <span id="subtotal">{{ money(i.subtotal, i.currency) }}</span></p>
{% for d in i.total_discount_amounts %}<p>Discount <span class="discount">{{ money(-d.amount, i.currency) }}</span>
  </p>{% endfor %}
{% for t in i.total_taxes %}<p>Tax ({{ t.tax_rate_details.tax_rate }}) on {{ money(t.taxable_amount, i.currency) }}
  <span class="tax">{{ money(t.amount, i.currency) }}</span></p>{% endfor %}
<p>Total <span id="total">{{ money(i.total, i.currency) }}</span></p>
<p>Amount due <span id="amount-due">{{ money(i.amount_due, i.currency) }}</span>{% if i.due_date %}
  by {{ due }}{% endif %}; paid {{ money(i.amount_paid, i.currency) }}</p>
</body></html>"""


def create(
    st,
    customer: dict,
    *,
    collection_method: str = "charge_automatically",
    days_until_due: int | None = None,
    currency: str = "usd",
    meta: dict | None = None,
    fields: list | None = None,
    subscription: dict | None = None,
    billing_reason: str = "manual",
    auto_advance: bool = False,
    description: str | None = None,
    due_date: int | None = None,
    automatic_tax: bool = False,
    discounts: list | None = None,
) -> dict:
    """A draft invoice, taxed by the stand-in's tax if `automatic_tax`, with `discounts` (Discount objects); a
    subscription's names it in `parent.subscription_details`."""
    parent = subscription and {
        "type": "subscription_details",
        "quote_details": None,
        "subscription_details": {"subscription": subscription["id"], "metadata": dict(subscription["metadata"])},
    }
    ts = core.now()
    invoice = core.create(
        st,
        "invoice",
        "in_",
        account_country="US",
        account_name="Local Stripe stand-in",
        amount_due=0,
        amount_overpaid=0,
        amount_paid=0,
        amount_remaining=0,
        amount_shipping=0,
        attempt_count=0,
        attempted=False,
        auto_advance=auto_advance,
        automatic_tax=billing.automatic_tax(automatic_tax),
        billing_reason=billing_reason,
        collection_method=collection_method,
        currency=currency,
        customer=customer["id"],
        customer_address=copy.deepcopy(customer.get("address")),
        customer_email=customer["email"],
        customer_name=customer["name"],
        customer_tax_exempt=customer.get("tax_exempt", "none"),
        description=description,
        discounts=[d["id"] for d in discounts or ()],
        due_date=due_date,
        effective_at=None,
        hosted_invoice_url=None,
        invoice_pdf=None,
        metadata=meta or {},
        next_payment_attempt=None,
        number=None,
        paid_out_of_band=False,
        parent=parent,
        period_end=ts,
        period_start=ts,
        status="draft",
        subtotal=0,
        subtotal_excluding_tax=0,
        total=0,
        total_discount_amounts=[],
        total_excluding_tax=0,
        total_pretax_credit_amounts=[],
        total_taxes=[],
        webhooks_delivered_at=None,
        status_transitions={"finalized_at": None, "marked_uncollectible_at": None, "paid_at": None, "voided_at": None},
        custom_fields=customer["invoice_settings"]["custom_fields"] if fields is None else fields,
        _days_until_due=days_until_due,
        _discounts=list(discounts or ()),
        _payments=[],
        _sent=0,
    )
    invoice["lines"] = core.list_of([], f"/v1/invoices/{invoice['id']}/lines")
    return invoice


def _subscription_of(st, invoice: dict) -> dict | None:
    details = (invoice["parent"] or {}).get("subscription_details") or {}
    return st.stores["subscription"].get(details.get("subscription"))


def finalize(st, invoice: dict) -> None:
    """Draft → open: totals fixed, numbered, due, payable at its hosted URL; one with nothing due (nothing billed,
    or all of it discounted) is paid at once."""
    if invoice["status"] != "draft":
        raise core.state_error("This invoice is already finalized, you can't re-finalize a non-draft invoice.")
    billing.recompute(st, invoice)
    ts = core.now()
    base = f"{st.settings.public_url.rstrip('/')}/_local/stripe"
    url = f"{base}/dashboard#{invoice['id']}"
    if st.invoice_url:
        url = st.invoice_url.format(id=invoice["id"])
    if st.invoice_prefix:  # numbered account-wide
        st.invoice_seq += 1
        number = f"{st.invoice_prefix}-{st.invoice_seq:04d}"
    else:
        number = customers.next_invoice_number(core.get(st, "customer", invoice["customer"]))
    invoice.update(
        status="open",
        number=number,
        effective_at=ts,
        hosted_invoice_url=url,
        invoice_pdf=f"{base}/invoices/{invoice['id']}/pdf",
        amount_remaining=invoice["amount_due"],
    )
    invoice["status_transitions"]["finalized_at"] = ts
    if invoice["collection_method"] == "send_invoice" and invoice["due_date"] is None:
        invoice["due_date"] = ts + (invoice["_days_until_due"] or DEFAULT_DAYS_UNTIL_DUE) * core.DAY
    events.emit(st, "invoice.finalized", invoice)
    if invoice["amount_due"] == 0:
        mark_paid(st, invoice)


def send(st, invoice: dict) -> None:
    """E-mail a finalised invoice to the customer (remembered, nothing else changes); invoice.sent. As in Stripe, a
    paid one may be sent too (an invoice a code took all of is paid as it is finalised)."""
    if invoice["collection_method"] != "send_invoice":
        raise core.state_error("You can only manually send an invoice if its collection method is 'send_invoice'.")
    if invoice["status"] in ("draft", "void"):
        raise core.state_error(
            f"You can only send a finalized invoice that is not void; this one is {invoice['status']}."
        )
    invoice["_sent"] += 1
    events.emit(st, "invoice.sent", invoice)


def pay(st, invoice: dict, out_of_band: bool = False, outcome: str = "succeeded") -> None:
    """Collect what is due: outside Stripe, or by card (a PaymentIntent, charge and invoice payment)."""
    if invoice["status"] == "draft":  # Stripe finalises a draft before it tries to collect it
        finalize(st, invoice)
        if invoice["status"] == "paid":  # nothing was due
            return
    if invoice["status"] == "paid":
        raise core.state_error("Invoice is already paid.")
    if invoice["status"] not in PAYABLE:
        raise core.state_error(f"You cannot pay an invoice with status {invoice['status']}.")
    if out_of_band:
        invoice["paid_out_of_band"] = True
        mark_paid(st, invoice)
        return
    customer = core.get(st, "customer", invoice["customer"])
    pi = charges.create_payment(
        st,
        invoice["amount_remaining"],
        invoice["currency"],
        customer["id"],
        customer["email"],
        {},
        f"Invoice {invoice['number']}",
        outcome,
        invoice["id"],
    )
    invoice["_payments"].append(
        {
            "id": "inpay_" + core.rand(24),
            "object": "invoice_payment",
            "amount_paid": None,
            "amount_requested": pi["amount"],
            "created": pi["created"],
            "currency": pi["currency"],
            "invoice": invoice["id"],
            "is_default": not invoice["_payments"],
            "livemode": False,
            "payment": {"type": "payment_intent", "payment_intent": pi["id"]},
            "status": "open",
            "status_transitions": {"canceled_at": None, "paid_at": None},
        }
    )
    invoice.update(attempted=True, attempt_count=invoice["attempt_count"] + 1)
    payment_settled(st, pi)


def payment_settled(st, pi: dict) -> None:
    """An invoice's PaymentIntent has an outcome: the invoice is paid, or its payment failed."""
    invoice = st.stores["invoice"].get(pi.get("_invoice"))
    if invoice is None:
        return
    if pi["status"] == "succeeded":
        mark_paid(st, invoice, pi)
    elif pi["status"] == "requires_payment_method":
        if invoice["collection_method"] == "charge_automatically":
            invoice["next_payment_attempt"] = core.now() + RETRY_DAYS * core.DAY
        events.emit(st, "invoice.payment_failed", invoice)


def mark_paid(st, invoice: dict, pi: dict | None = None) -> None:
    """Paid in full (by `pi`, or outside Stripe); invoice.paid, and a subscription it was holding back is active."""
    ts = core.now()
    invoice.update(
        status="paid",
        amount_paid=invoice["amount_paid"] + invoice["amount_remaining"],
        amount_remaining=0,
        next_payment_attempt=None,
    )
    invoice["status_transitions"]["paid_at"] = ts
    for payment in invoice["_payments"]:
        if pi and payment["payment"]["payment_intent"] == pi["id"]:
            payment.update(status="paid", amount_paid=pi["amount"])
            payment["status_transitions"]["paid_at"] = ts
    events.emit(st, "invoice.paid", invoice)
    subscription = _subscription_of(st, invoice)
    if (
        subscription
        and subscription["latest_invoice"] == invoice["id"]
        and subscription["status"] in ("incomplete", "past_due", "unpaid")
    ):
        events.change(st, subscription, "customer.subscription.updated", status="active")


def _close(st, invoice: dict, status: str, allowed: tuple, event: str, stamp: str) -> None:
    if invoice["status"] not in allowed:
        raise core.state_error(
            f"You can only do this to an invoice that is {' or '.join(allowed)}; this one is {invoice['status']}."
        )
    invoice["status"] = status
    invoice["status_transitions"][stamp] = core.now()
    events.emit(st, event, invoice)


def void(st, invoice: dict, drafts_too: bool = False) -> None:
    """Cancel an open or uncollectible invoice (or, from the dashboard, a draft); invoice.voided."""
    _close(st, invoice, "void", ("draft", *PAYABLE) if drafts_too else PAYABLE, "invoice.voided", "voided_at")


def mark_uncollectible(st, invoice: dict) -> None:
    """Write off an open invoice (it stays payable); invoice.marked_uncollectible."""
    _close(st, invoice, "uncollectible", ("open",), "invoice.marked_uncollectible", "marked_uncollectible_at")


def overdue(st, invoice: dict, days: int = 1) -> None:
    """Pretend `days` have passed since an open invoice fell due; invoice.overdue."""
    if invoice["status"] != "open":
        raise core.state_error(f"Only an open invoice can be overdue; this one is {invoice['status']}.")
    invoice["due_date"] = core.now() - days * core.DAY
    events.emit(st, "invoice.overdue", invoice)


def _include_payments(body: dict, invoice: dict, expand: set) -> None:
    if "payments" in expand:
        body["payments"] = core.list_of(copy.deepcopy(invoice["_payments"]), f"/v1/invoices/{invoice['id']}/payments")


core.INCLUDES["invoice"] = ("payments", _include_payments)


def _create_invoice(st, params: dict) -> dict:
    customer = core.get(st, "customer", core.required(params, "customer"), "customer")
    method = params.get("collection_method") or "charge_automatically"
    if method not in COLLECTION_METHODS:
        raise core.StripeFail(
            400,
            f"Invalid collection_method: must be one of {', '.join(COLLECTION_METHODS)}",
            "parameter_invalid_string",
            "collection_method",
        )
    days = core.to_int(params["days_until_due"], "days_until_due") if params.get("days_until_due") else None
    due = core.to_int(params["due_date"], "due_date") if params.get("due_date") else None
    if method != "send_invoice" and (days or due):
        raise core.StripeFail(
            400,
            "days_until_due and due_date apply only to collection_method=send_invoice.",
            "parameter_invalid",
            "days_until_due" if days else "due_date",
        )
    behaviour = params.get("pending_invoice_items_behavior") or "exclude"
    currency = params.get("currency") or "usd"
    meta, fields = core.metadata(params.get("metadata")), core.custom_fields(params.get("custom_fields"))
    auto_advance = core.to_bool(params.get("auto_advance"), "auto_advance")
    taxed = billing.wants_tax(params, customer.get("address"))
    wanted = billing.requested(st, params, currency)  # all refusals come before anything is made or redeemed
    invoice = create(
        st,
        customer,
        collection_method=method,
        days_until_due=days,
        due_date=due,
        currency=currency,
        meta=meta,
        fields=fields,
        auto_advance=auto_advance,
        description=params.get("description"),
        automatic_tax=taxed,
    )
    for promo, coupon in wanted:
        invoice["_discounts"].append(billing.apply(st, promo, coupon, customer["id"], invoice=invoice["id"]))
    invoice["discounts"] = [d["id"] for d in invoice["_discounts"]]
    if behaviour == "include":
        for item in invoice_items.pending(st, customer["id"], currency):
            invoice_items.attach(st, invoice, item)
    return invoice


def register(bp, st) -> None:
    """Invoices under /v1, and each finalised invoice's PDF (a page) at /stripe/invoices/{id}/pdf."""
    route = core.api_routes(bp, st)
    core.add_retrieve(st, route, "/invoices/<object_id>", "invoice", core.RETRIEVE)
    core.add_list(st, route, "/invoices", "invoice", LISTED_BY, core.known(*core.LIST, *LISTED_BY))

    @route("/invoices", "POST", params=CREATE)
    def invoice_create(params):
        return core.render(st, _create_invoice(st, params), core.expansions(params))

    def out_of_band(params):
        return {"out_of_band": core.to_bool(params.get("paid_out_of_band"), "paid_out_of_band")}

    @bp.get("/stripe/invoices/<invoice_id>/pdf")
    def stripe_invoice_pdf(invoice_id):
        with st.lock:
            invoice = st.stores["invoice"].get(invoice_id)
            if invoice is None or invoice["status"] == "draft":  # a draft has no PDF yet
                return core.html("<h1>No such invoice</h1>", 404)
            due = invoice["due_date"] and datetime.fromtimestamp(invoice["due_date"], UTC).strftime("%Y-%m-%d")
            return core.html(render_template_string(PDF_PAGE, i=invoice, money=core.money, due=due))

    for name, action, options, known in (
        ("finalize", finalize, None, ("auto_advance",)),
        ("send", send, None, ()),
        ("pay", pay, out_of_band, ("paid_out_of_band",)),
        ("void", void, None, ()),
        ("mark_uncollectible", mark_uncollectible, None, ()),
    ):
        view = _action_view(st, name, action, options)
        route(f"/invoices/<object_id>/{name}", "POST", params=core.known(*known, "expand[]"))(view)


def _action_view(st, name: str, action, options=None):
    """POST /v1/invoices/{id}/{name}: `action` on the invoice, with keyword `options(params)`."""

    def view(params, object_id):
        invoice = core.get(st, "invoice", object_id)
        action(st, invoice, **(options(params) if options else {}))
        return core.render(st, invoice, core.expansions(params))

    view.__name__ = f"invoice_{name}"
    return view
