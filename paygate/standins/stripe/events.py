"""The Stripe stand-in's events: signed as Stripe signs them, kept in the state, and handed to its `deliver`
hook (by default POSTed to the service's webhook in a background thread, as Stripe does)."""

import copy
import json
import logging
import threading

import requests
import stripe

from paygate.standins.stripe.core import now, rand, render
from paygate.standins.stripe.state import State

log = logging.getLogger(__name__)


def change(st, obj: dict, event_type: str, **fields) -> dict:
    """Set `fields` and send `event_type` with the old values of those that changed."""
    previous = {k: copy.deepcopy(obj.get(k)) for k, v in fields.items() if obj.get(k) != v}
    obj.update(fields)
    return emit(st, event_type, obj, previous)


def emit(st, event_type: str, obj: dict, previous: dict | None = None) -> dict:
    """Send `event_type` with the object's current JSON; `previous` = the changed fields' old values."""
    return send_event(event_type, render(st, obj), st, previous)


def send_event(event_type: str, obj: dict, st: State, previous: dict | None = None) -> dict:
    """Sign an event for {public_url}/webhooks/stripe, keep it in `st.events`, hand it to `st.deliver`."""
    data = {"object": obj}
    if previous:
        data["previous_attributes"] = previous
    event = {
        "id": "evt_" + rand(24),
        "object": "event",
        "api_version": stripe.api_version,
        "created": now(),
        "type": event_type,
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "data": data,
    }
    payload = json.dumps(event, indent=2)
    signature = stripe.WebhookSignature.generate_signature_header(payload, st.settings.stripe_webhook_secret)
    with st.lock:
        st.events.append(event)
    (st.deliver or _post_event)(st, event, payload, signature)
    return event


def _post_event(st, event: dict, payload: str, signature: str) -> None:
    """POST the event to the service's webhook in a background thread, as Stripe does (not waiting on it)."""
    url = st.settings.public_url.rstrip("/") + "/webhooks/stripe"
    threading.Thread(
        target=_deliver, args=(url, payload, signature, event), daemon=True, name=f"stripe-standin-{event['id']}"
    ).start()


def _deliver(url: str, payload: str, signature: str, event: dict) -> None:
    # Stripe answers nobody's redirects and waits at most a few seconds; so do we.
    try:
        response = requests.post(
            url,
            data=payload.encode("utf-8"),
            timeout=10,
            allow_redirects=False,
            headers={
                "Content-Type": "application/json; charset=utf-8",
                "Stripe-Signature": signature,
                "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            },
        )
        if response.status_code >= 300:
            log.warning(
                "local Stripe: %s %s got HTTP %s from the webhook", event["type"], event["id"], response.status_code
            )
    except requests.RequestException as exc:
        log.warning("local Stripe: %s %s not delivered: %s", event["type"], event["id"], type(exc).__name__)
