"""The customer portal: `POST /v1/billing_portal/sessions` and its hosted page (/_local/stripe/billing_portal/{id}),
where the customer sees its subscriptions and invoices, cancels a subscription, and returns to `return_url`.

Element ids a test may use: `#customer`, `#locale`, `#subscriptions` (a row per subscription, id the
subscription's), `#cancel-<sub id>` (cancel now: customer.subscription.deleted, as the dashboard's button),
`#invoices` (a row per invoice), `#return` (the link to return_url), `#notice`.
"""

from urllib.parse import urlencode

from flask import redirect, render_template_string, request

from paygate.standins.stripe import checkout, core, dashboard, subscriptions

SESSION_SECONDS = 5 * 60  # Stripe's portal sessions are short-lived
CREATE = core.known("customer", "return_url", "locale", "configuration", "expand[]")

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Local Stripe stand-in — Customer portal</title>
<style>body{font-family:system-ui,sans-serif;max-width:44rem;margin:2rem auto;padding:0 1rem}
.banner{background:#fff3cd;border:1px solid #d6b656;padding:.5rem 1rem}table{border-collapse:collapse;width:100%}
td,th{text-align:left;padding:.2rem .4rem;border-bottom:1px solid #ddd}#notice{background:#e7f1ff;padding:.5rem 1rem}
</style></head><body>
<p class="banner"><strong>Local Stripe stand-in — customer portal, no real money</strong></p>
{% if notice %}<p id="notice">{{ notice }}</p>{% endif %}
<h1>{{ customer.name or customer.email or customer.id }}</h1>
<p>Customer <code id="customer">{{ customer.id }}</code>; portal language (<code>locale</code>):
  <code id="locale">{{ s.locale or "auto" }}</code> (the real portal speaks it; this stand-in stays in English)</p>
<h2>Subscriptions</h2>
<table id="subscriptions"><tr><th>subscription</th><th>status</th><th>plan</th><th>period ends</th><th></th></tr>
{% for sub in subs %}<tr id="{{ sub.id }}"><td><code>{{ sub.id }}</code></td><td>{{ sub.status }}</td>
<td>{{ plan(sub) }}</td><td>{{ when(sub["items"].data[0].current_period_end) }}</td>
<td>{% if sub.status not in ("canceled", "incomplete_expired") %}<form method="post"
  action="{{ page }}/cancel/{{ sub.id }}"><button id="cancel-{{ sub.id }}">Cancel subscription</button></form>
  {% endif %}</td></tr>
{% else %}<tr><td colspan="5">No subscriptions.</td></tr>{% endfor %}</table>
<h2>Invoices</h2>
<table id="invoices"><tr><th>invoice</th><th>status</th><th>amount</th><th></th></tr>
{% for i in invoices %}<tr id="{{ i.id }}"><td>{{ i.number or "(draft)" }}</td><td>{{ i.status }}</td>
<td>{{ money(i.amount_due, i.currency) }}</td>
<td>{% if i.hosted_invoice_url %}<a href="{{ i.hosted_invoice_url }}">View</a>{% endif %}
  {% if i.invoice_pdf %}<a href="{{ i.invoice_pdf }}">PDF</a>{% endif %}</td></tr>
{% else %}<tr><td colspan="4">No invoices.</td></tr>{% endfor %}</table>
<p><a id="return" href="{{ s.return_url }}">Return</a></p>
</body></html>"""


def create(st, params: dict) -> dict:
    """A portal session for an existing customer, returning to `return_url`."""
    customer = core.get(st, "customer", core.required(params, "customer"), "customer")
    return_url = params.get("return_url") or None
    if return_url is not None and not return_url.startswith(("https://", "http://")):
        raise core.StripeFail(400, "Not a valid URL", "url_invalid", "return_url")
    locale = params.get("locale") or None
    if locale is not None and locale not in checkout.LOCALES:  # the portal speaks what Checkout speaks
        raise core.StripeFail(
            400, f"Invalid locale: must be one of {', '.join(checkout.LOCALES)}", "parameter_invalid_string", "locale"
        )
    ts = core.now()
    session = core.create(
        st,
        "billing_portal.session",
        "bps_",
        customer=customer["id"],
        return_url=return_url,
        locale=locale,
        configuration=params.get("configuration") or "bpc_local_default",
        flow=None,
        on_behalf_of=None,
        expires_at=ts + SESSION_SECONDS,
    )
    session.pop("metadata", None)  # a portal session has none
    session["url"] = f"{st.settings.public_url.rstrip('/')}/_local/stripe/billing_portal/{session['id']}"
    return session


def register(bp, st) -> None:
    """POST /v1/billing_portal/sessions; the hosted page at /stripe/billing_portal/{id} and its cancel button."""
    route = core.api_routes(bp, st)
    base = st.settings.public_url.rstrip("/")

    @route("/billing_portal/sessions", "POST", params=CREATE)
    def billing_portal_session_create(params):
        return core.render(st, create(st, params))

    def page(session_id: str):
        session = st.stores["billing_portal.session"].get(session_id)
        if session is None:
            return core.html("<h1>This portal session is not known</h1>", 404)
        if session["expires_at"] < core.now():
            return core.html("<h1>This portal session has expired</h1>", 410)
        customer = st.stores["customer"][session["customer"]]
        text = render_template_string(
            PAGE,
            s=session,
            customer=customer,
            page=f"{base}/_local/stripe/billing_portal/{session_id}",
            notice=request.args.get("notice"),
            subs=core.newest(st, "subscription", lambda sub: sub["customer"] == customer["id"]),
            invoices=core.newest(st, "invoice", lambda i: i["customer"] == customer["id"] and i["status"] != "draft"),
            plan=dashboard.plan,
            when=dashboard.when,
            money=core.money,
        )
        return core.html(text)

    @bp.get("/stripe/billing_portal/<session_id>")
    def stripe_billing_portal(session_id):
        with st.lock:
            return page(session_id)

    @bp.post("/stripe/billing_portal/<session_id>/cancel/<sub_id>")
    def stripe_billing_portal_cancel(session_id, sub_id):
        with st.lock:
            session = st.stores["billing_portal.session"].get(session_id)
            sub = st.stores["subscription"].get(sub_id)
            if session is None or sub is None or sub["customer"] != session["customer"]:
                return core.html("<h1>No such subscription in this portal</h1>", 404)
            try:
                subscriptions.cancel(st, sub)  # customer.subscription.deleted, as the dashboard's button
                notice = "Your subscription is cancelled."
            except core.StripeFail as exc:
                notice = exc.message
            st.changed()
        return redirect(f"{base}/_local/stripe/billing_portal/{session_id}?{urlencode({'notice': notice})}", 303)
