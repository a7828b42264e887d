"""Payments: PaymentIntents and their charges, refunds and disputes."""

from paygate.standins.stripe import core, events

CARD = {
    "type": "card",
    "card": {
        "brand": "visa",
        "country": "US",
        "exp_month": 12,
        "exp_year": 2034,
        "funding": "credit",
        "last4": "4242",
        "network": "visa",
    },
}
BANK = {
    "type": "us_bank_account",
    "us_bank_account": {
        "account_holder_type": "company",
        "bank_name": "STRIPE TEST BANK",
        "last4": "6789",
        "routing_number": "110000000",
    },
}
DECLINE = {
    "code": "card_declined",
    "decline_code": "generic_decline",
    "message": "Your card was declined.",
    "type": "card_error",
}
EVIDENCE_DAYS = 7
OPEN_DISPUTES = ("warning_needs_response", "warning_under_review", "needs_response", "under_review")


def create_payment(
    st,
    amount: int,
    currency: str,
    customer: str | None,
    email: str | None,
    meta: dict,
    description: str | None = None,
    outcome: str = "succeeded",
    invoice: str | None = None,
) -> dict:
    """A PaymentIntent and its charge; `outcome` succeeded, failed, or processing (a bank debit under way)."""
    method = BANK if outcome == "processing" else CARD
    common = {
        "amount": amount,
        "currency": currency,
        "customer": customer,
        "description": description,
        "metadata": dict(meta),
        "receipt_email": email,
        "payment_method": "pm_" + core.rand(24),
    }
    pi = core.create(
        st,
        "payment_intent",
        "pi_",
        **common,
        amount_capturable=0,
        amount_received=0,
        capture_method="automatic_async",
        confirmation_method="automatic",
        last_payment_error=None,
        payment_method_types=[method["type"]],
        status="processing",
        _invoice=invoice,
    )
    pi["client_secret"] = f"{pi['id']}_secret_{core.rand(24)}"
    charge = core.create(
        st,
        "charge",
        "ch_",
        **common,
        amount_captured=0,
        amount_refunded=0,
        balance_transaction=None,
        billing_details={"address": None, "email": email, "name": None, "phone": None},
        captured=False,
        disputed=False,
        failure_code=None,
        failure_message=None,
        outcome=None,
        paid=False,
        payment_intent=pi["id"],
        payment_method_details=method,
        receipt_url=None,
        refunded=False,
        status="pending",
    )
    pi["latest_charge"] = charge["id"]
    if outcome != "processing":
        settle(st, pi, outcome == "succeeded")
    return pi


def settle(st, pi: dict, succeeded: bool) -> None:
    """The payment's outcome arrives: its PaymentIntent and charge succeed or fail."""
    charge = core.get(st, "charge", pi["latest_charge"])
    if succeeded:
        pi.update(status="succeeded", amount_received=pi["amount"])
        charge.update(
            status="succeeded",
            paid=True,
            captured=True,
            amount_captured=charge["amount"],
            receipt_url=f"https://pay.stripe.com/receipts/local/{charge['id']}",
            outcome={
                "network_status": "approved_by_network",
                "risk_level": "normal",
                "seller_message": "Payment complete.",
                "type": "authorized",
            },
        )
    else:
        pi.update(status="requires_payment_method", last_payment_error=dict(DECLINE))
        charge.update(
            status="failed",
            failure_code=DECLINE["code"],
            failure_message=DECLINE["message"],
            outcome={
                "network_status": "declined_by_network",
                "risk_level": "normal",
                "seller_message": "The bank did not return any further details with this decline.",
                "type": "issuer_declined",
            },
        )


def find_charge(st, reference: str) -> dict:
    """A charge by its id, or the latest charge of a PaymentIntent."""
    if reference in st.stores["charge"]:
        return st.stores["charge"][reference]
    return core.get(st, "charge", core.get(st, "payment_intent", reference)["latest_charge"])


REFUND_REASONS = ("duplicate", "fraudulent", "requested_by_customer")


def refund(
    st,
    charge: dict,
    amount: int | None = None,
    reason: str | None = None,
    meta: dict | None = None,
    status: str = "succeeded",
) -> dict:
    """Refund `amount` (all that is left by default) of a successful charge, `status` (pending while the bank
    takes its time), for one of Stripe's `REFUND_REASONS`; charge.refunded, refund.created."""
    if reason not in (None, "", *REFUND_REASONS):
        raise core.StripeFail(
            400, f"Invalid reason: must be one of {', '.join(REFUND_REASONS)}", "parameter_invalid_string", "reason"
        )
    if charge["status"] != "succeeded":
        raise core.StripeFail(
            400,
            f"Charge {charge['id']} has no successful payment to refund (status {charge['status']}).",
            "charge_not_refundable",
            "charge",
        )
    left = charge["amount"] - charge["amount_refunded"]
    if left <= 0:
        raise core.StripeFail(400, f"Charge {charge['id']} has already been refunded.", "charge_already_refunded")
    amount = left if amount is None else amount
    if not 1 <= amount <= left:
        raise core.StripeFail(
            400,
            f"Refund amount ({amount}) must be between 1 and the unrefunded amount on the charge ({left}).",
            "amount_too_large",
            "amount",
        )
    charge["amount_refunded"] += amount
    charge["refunded"] = charge["amount_refunded"] == charge["amount"]
    created = core.create(
        st,
        "refund",
        "re_",
        amount=amount,
        balance_transaction=None,
        charge=charge["id"],
        currency=charge["currency"],
        description=None,
        failure_reason=None,
        metadata=meta or {},
        payment_intent=charge["payment_intent"],
        reason=reason or None,
        receipt_number=None,
        status=status,
    )
    events.emit(st, "charge.refunded", charge)
    events.emit(st, "refund.created", created)
    return created


def fail_newest_refund(st, charge: dict) -> dict:
    """The charge's newest refund fails: the money stays with the merchant, so the charge is less refunded."""
    refunds = core.newest(
        st, "refund", lambda r: r["charge"] == charge["id"] and r["status"] in ("pending", "succeeded")
    )
    if not refunds:
        raise core.state_error(f"Charge {charge['id']} has no refund that could fail.")
    return fail_refund(st, refunds[0])


def fail_refund(st, refund_: dict, reason: str = "expired_or_canceled_card") -> dict:
    """A refund fails: the money stays with the merchant, so its charge is less refunded."""
    return set_refund_status(st, refund_, "failed", reason)


def set_refund_status(st, refund_: dict, status: str, reason: str | None = None) -> dict:
    """A refund moves on (pending -> succeeded, failed or canceled); refund.updated, charge.refund.updated. A
    failed or canceled one gives its amount back to the charge."""
    if refund_["status"] in ("pending", "succeeded") and status in ("failed", "canceled"):
        charge = core.get(st, "charge", refund_["charge"])
        charge["amount_refunded"] -= refund_["amount"]
        charge["refunded"] = charge["amount_refunded"] >= charge["amount"]
    events.change(
        st,
        refund_,
        "refund.updated",
        status=status,
        failure_reason=reason if status == "failed" else refund_["failure_reason"],
    )
    events.emit(st, "charge.refund.updated", refund_)
    return refund_


def open_dispute(st, charge: dict, reason: str = "fraudulent") -> dict:
    """The cardholder disputes the charge: evidence due in a week; charge.dispute.created."""
    if charge["status"] != "succeeded" or (charge["disputed"] and st.one_dispute_per_charge):
        raise core.state_error(
            f"Charge {charge['id']} cannot be disputed (status {charge['status']}, disputed {charge['disputed']})."
        )
    charge["disputed"] = True
    dispute = core.create(
        st,
        "dispute",
        "du_",
        amount=charge["amount"],
        balance_transactions=[],
        charge=charge["id"],
        currency=charge["currency"],
        is_charge_refundable=True,
        network_reason_code=None,
        payment_intent=charge["payment_intent"],
        reason=reason,
        status="needs_response",
        evidence={"customer_email_address": None, "product_description": None, "uncategorized_text": None},
        evidence_details={
            "due_by": core.now() + EVIDENCE_DAYS * core.DAY,
            "has_evidence": False,
            "past_due": False,
            "submission_count": 0,
        },
        payment_method_details={"type": "card", "card": {"brand": "visa", "network_reason_code": None}},
    )
    events.emit(st, "charge.dispute.created", dispute)
    return dispute


def close_dispute(st, dispute: dict, won: bool) -> dict:
    """The card network decides; charge.dispute.closed."""
    if dispute["status"] not in OPEN_DISPUTES:
        raise core.state_error(f"Dispute {dispute['id']} is already closed ({dispute['status']}).")
    events.change(st, dispute, "charge.dispute.closed", status="won" if won else "lost")
    return dispute


def _refund_target(st, params: dict) -> dict:
    """The charge a refund request names, by `charge` or by `payment_intent`."""
    pi_id, charge_id = params.get("payment_intent"), params.get("charge")
    if not (pi_id or charge_id):
        raise core.StripeFail(
            400, "Missing required param: charge or payment_intent.", "parameter_missing", "payment_intent"
        )
    if charge_id:
        charge = core.get(st, "charge", charge_id, "charge")
        if pi_id and charge["payment_intent"] != pi_id:
            raise core.StripeFail(
                400,
                f"Charge {charge_id} does not belong to PaymentIntent {pi_id}.",
                "parameter_invalid",
                "payment_intent",
            )
        return charge
    pi = core.get(st, "payment_intent", pi_id, "payment_intent")
    if pi["status"] != "succeeded":
        raise core.StripeFail(
            400,
            f"PaymentIntent {pi_id} has no successful charge to refund (status {pi['status']}).",
            "charge_not_refundable",
            "payment_intent",
        )
    return core.get(st, "charge", pi["latest_charge"])


def register(bp, st) -> None:
    """Payment intents, charges, refunds and disputes under /v1."""
    route = core.api_routes(bp, st)

    for kind, rule in (
        ("payment_intent", "/payment_intents"),
        ("charge", "/charges"),
        ("refund", "/refunds"),
        ("dispute", "/disputes"),
    ):
        core.add_retrieve(st, route, rule + "/<object_id>", kind, core.RETRIEVE)

    @route("/refunds", "POST", params=core.known("payment_intent", "charge", "amount", "reason", "metadata[*]"))
    def refund_create(params):
        target = _refund_target(st, params)
        amount = core.to_int(params["amount"], "amount") if params.get("amount") not in (None, "") else None
        return core.render(
            st,
            refund(st, target, amount, params.get("reason"), core.metadata(params.get("metadata")), st.refund_status),
        )

    for kind, path in (("refund", "/refunds"), ("dispute", "/disputes")):
        core.add_list(
            st, route, path, kind, ("charge", "payment_intent"), core.known(*core.LIST, "charge", "payment_intent")
        )
