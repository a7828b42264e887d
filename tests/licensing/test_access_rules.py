"""The access rule as a state table: licence facts and an operator's override in, access out."""

from datetime import datetime, timedelta
from types import SimpleNamespace

import pytest

from paygate.licensing.access import decide

NOW = datetime(2026, 11, 27, 12, 0, 0)
SETTINGS = SimpleNamespace(licence_grace_days=14, invoice_access="immediate")
ON_PAYMENT = SimpleNamespace(licence_grace_days=14, invoice_access="on_payment")


def payment(amount=4900, refunded=0, dispute=None, paid_days_ago=1, n=1):
    return SimpleNamespace(
        id=n,
        payment_intent_id=f"pi_{n}",
        amount=amount,
        amount_refunded=refunded,
        fully_refunded=amount > 0 and refunded >= amount,
        dispute_status=dispute,
        dispute_id=f"du_{n}" if dispute else None,
        refund_id=None,
        paid_at=NOW - timedelta(days=paid_days_ago),
        created_at=NOW - timedelta(days=paid_days_ago),
    )


def licence(
    kind, status, payments=(), subscription_status=None, due_in_days=None, paid_once=False, subscription_id=None
):
    return SimpleNamespace(
        kind=kind,
        status=status,
        payments=list(payments),
        subscription_status=subscription_status,
        subscription_id=subscription_id or ("sub_1" if subscription_status else None),
        due_at=None if due_in_days is None else NOW + timedelta(days=due_in_days),
        first_paid_at=NOW if paid_once else None,
        invoice_number="INV-0001",
        invoice_id="in_1",
        pilot_ends_at=None,
        invoice_sent_at=None,  # payments recorded before it are history (a licence converted on its page)
        invoice_form_id=None,  # with invoice_sent_at None: asked for on the licence page, being made
    )


CARD = [
    ("paid", licence("payment", "succeeded", [payment()]), True),
    ("partial refund keeps access", licence("payment", "succeeded", [payment(refunded=1000)]), True),
    ("full refund ends access", licence("payment", "succeeded", [payment(refunded=4900)]), False),
    ("dispute open keeps access", licence("payment", "succeeded", [payment(dispute="needs_response")]), True),
    ("dispute won keeps access", licence("payment", "succeeded", [payment(dispute="won")]), True),
    ("dispute lost ends access", licence("payment", "succeeded", [payment(dispute="lost")]), False),
]
SUBSCRIPTION = [
    (f"subscription {status}", licence("subscription", status, [payment()]), active)
    for status, active in [
        ("active", True),
        ("trialing", True),
        ("past_due", True),
        ("unpaid", False),
        ("canceled", False),
        ("incomplete_expired", False),
        ("paused", False),
        ("incomplete", False),
    ]
]
SUBSCRIPTION += [
    (
        "renewal refunded in full, earlier payment not",
        licence("subscription", "active", [payment(paid_days_ago=400, n=1), payment(refunded=4900, n=2)]),
        False,
    ),
    (
        "earlier period refunded, renewal paid",
        licence("subscription", "active", [payment(refunded=4900, paid_days_ago=400, n=1), payment(n=2)]),
        True,
    ),
    (
        "lost dispute on the current period",
        licence("subscription", "active", [payment(paid_days_ago=400, n=1), payment(dispute="lost", n=2)]),
        False,
    ),
    (
        "lost dispute on an earlier period, renewal paid",
        licence("subscription", "active", [payment(dispute="lost", paid_days_ago=400, n=1), payment(n=2)]),
        True,
    ),
]
INVOICE = [
    ("open, before due", licence("invoice", "open", due_in_days=10), True),
    ("open, overdue within grace", licence("invoice", "open", due_in_days=-13), True),
    ("open, overdue past grace", licence("invoice", "open", due_in_days=-15), False),
    ("paid", licence("invoice", "paid", [payment()], due_in_days=-30, paid_once=True), True),
    ("void", licence("invoice", "void", due_in_days=10), False),
    ("uncollectible", licence("invoice", "uncollectible", due_in_days=-30), False),
    ("paid then refunded in full", licence("invoice", "paid", [payment(refunded=4900)], paid_once=True), False),
    (
        "subscription by invoice, canceled",
        licence("invoice", "paid", [payment()], subscription_status="canceled", paid_once=True),
        False,
    ),
    (
        "subscription by invoice, renewal open within grace",
        licence(
            "invoice",
            "open",
            [payment(paid_days_ago=360)],
            subscription_status="past_due",
            due_in_days=-3,
            paid_once=True,
        ),
        True,
    ),
]


@pytest.mark.parametrize(
    "name,lic,active", CARD + SUBSCRIPTION + INVOICE, ids=lambda v: v if isinstance(v, str) else ""
)
def test_the_licence_decides_the_access(name, lic, active):
    assert decide(lic, None, NOW, SETTINGS).active is active


@pytest.mark.parametrize("override", [True, False])
@pytest.mark.parametrize("name,lic,_", [CARD[0], CARD[2], SUBSCRIPTION[4], INVOICE[2]])
def test_an_operator_override_wins_over_the_licence(name, lic, _, override):
    decision = decide(lic, override, NOW, SETTINGS)
    assert decision.active is override and "operator" in decision.reason


def test_without_a_licence_nothing_is_decided():
    assert decide(None, None, NOW, SETTINGS).active is None


def test_an_open_invoice_is_reviewed_at_its_due_date_then_when_its_grace_ends():
    open_invoice = licence("invoice", "open", due_in_days=5)
    decision = decide(open_invoice, None, NOW, SETTINGS)
    # the due date turns the vendor's status from active to grace by the clock alone
    assert decision.active is True and decision.review_at == NOW + timedelta(days=5)
    assert "due" in decision.reason
    overdue = decide(open_invoice, None, NOW + timedelta(days=6), SETTINGS)
    assert overdue.active is True and overdue.review_at == NOW + timedelta(days=5 + 14)


def test_access_on_payment_waits_for_the_first_payment_only():
    assert decide(licence("invoice", "open", due_in_days=30), None, NOW, ON_PAYMENT).active is False
    assert decide(licence("invoice", "paid", [payment()], paid_once=True), None, NOW, ON_PAYMENT).active is True
    # a renewal invoice of a subscription already paid once: the grace rule, not "on payment"
    renewal = licence(
        "invoice", "open", [payment(paid_days_ago=360)], subscription_status="active", due_in_days=10, paid_once=True
    )
    assert decide(renewal, None, NOW, ON_PAYMENT).active is True


def test_an_invoice_asked_for_on_the_licence_page_keeps_a_pilot_and_gives_nothing_else_until_sent():
    def asked(pilot_days=None, sent=False, refunded_before=False):
        lic = licence("invoice", "open" if sent else None, due_in_days=30 if sent else None)
        lic.invoice_form_id = "n"
        lic.pilot_ends_at = NOW + timedelta(days=pilot_days) if pilot_days is not None else None
        lic.payment_pending_until = None
        lic.invoice_sent_at = NOW - timedelta(hours=1) if sent else None
        lic.payments = [payment(refunded=4900)] if refunded_before else []
        return lic

    assert decide(asked(pilot_days=3), None, NOW, SETTINGS).active is True
    assert decide(asked(pilot_days=-3), None, NOW, SETTINGS).active is False
    assert decide(asked(), None, NOW, SETTINGS).active is False
    # Sent: the invoice decides; a payment refunded before the conversion is history.
    assert decide(asked(sent=True, refunded_before=True), None, NOW, SETTINGS).active is True
    # On payment: a pilot keeps its access until its end, then waits for the payment.
    running = decide(asked(pilot_days=3, sent=True), None, NOW, ON_PAYMENT)
    assert running.active is True and running.review_at == NOW + timedelta(days=3)
    assert decide(asked(pilot_days=-3, sent=True), None, NOW, ON_PAYMENT).active is False
