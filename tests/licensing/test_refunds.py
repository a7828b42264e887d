"""Refunds and disputes (paygate/licensing/refunds.py), wherever they happen: an operator's refund (confirmed,
idempotent at Stripe, holding the completion first), a refund or a dispute in the dashboard or at the bank
through webhooks asked back to Stripe; access follows the money, with LTIaaS told once per real change."""

from datetime import timedelta

from sqlalchemy import select

from paygate.core.db import db, utcnow
from paygate.core.models import Registration
from tests.helpers.flow import open_frame, status
from tests.helpers.licences import buy, load
from tests.helpers.operators import EMAIL, add_operator, paid_registration, post, seed, sign_in
from tests.helpers.webhooks import deliver, send


def test_refund_with_confirmation_and_idempotency(app, ops, stripe_api, ltiaas_api):
    pk = paid_registration(ops, stripe_api, ltiaas_api, email="it@school.example")
    reg = load(app, pk)
    confirm = ops.get(f"/operator/registrations/{pk}/refund")
    assert confirm.status_code == 200
    assert "49.00 USD" in confirm.text and "it@school.example" in confirm.text
    assert 'id="platform-warning"' in confirm.text and "also ends the platform's access" in confirm.text
    assert [c for c in stripe_api.calls if c[0] == "refund"] == []  # the GET refunds nothing
    done = post(ops, f"/operator/registrations/{pk}/refund")
    assert done.status_code == 303
    shown = ops.get(done.headers["Location"]).text
    assert "Refunded 49.00 USD" in shown
    reg = load(app, pk)
    assert reg.state == "refunded" and reg.refund_id.startswith("re_") and reg.refunded_at
    # Access follows the money: the refund deactivated the platform, once.
    assert reg.platform_active is False and ltiaas_api.platform_calls == [("deactivate", reg.platform_id)]
    last = [e for e in reg.timeline if e.kind == "state"][-1]
    assert (last.from_state, last.to_state, last.cause) == ("completed", "refunded", f"operator {EMAIL}")
    assert [c for c in stripe_api.calls if c[0] == "refund"] == [
        ("refund", f"paygate-refund-{pk}-{reg.payment_intent_id}")
    ]
    # Twice: nothing more happens.
    again = post(ops, f"/operator/registrations/{pk}/refund", page=f"/operator/registrations/{pk}")
    assert "Already refunded" in ops.get(again.headers["Location"]).text
    assert len([c for c in stripe_api.calls if c[0] == "refund"]) == 1
    assert 'id="already"' in ops.get(f"/operator/registrations/{pk}/refund").text
    assert 'id="refund-start"' not in ops.get(f"/operator/registrations/{pk}").text


def test_a_repeated_refund_request_is_replayed_by_stripe_not_repeated(app, ops, stripe_api, ltiaas_api):
    """If the refund reached Stripe but was not recorded, clicking again uses the same key."""
    pk = paid_registration(ops, stripe_api, ltiaas_api)
    post(ops, f"/operator/registrations/{pk}/refund")
    with app.app_context():  # as if the first answer had been lost
        db.session.execute(
            db.update(Registration)
            .where(Registration.id == pk)
            .values(state="completed", refund_id=None, refunded_at=None)
        )
        db.session.commit()
    post(ops, f"/operator/registrations/{pk}/refund")
    keys = [c[1] for c in stripe_api.calls if c[0] == "refund"]
    # The second click learns from Stripe that the payment is refunded (or replays the first refund):
    # never a second refund.
    assert len(keys) in (1, 2) and len(set(keys)) == 1
    assert len(stripe_api.refunds) == 1 and load(app, pk).state == "refunded"


def test_refund_failure_at_stripe_changes_nothing(app, ops, stripe_api, ltiaas_api):
    pk = paid_registration(ops, stripe_api, ltiaas_api)
    stripe_api.sessions.clear()  # Stripe answers 404 for the payment intent
    response = post(ops, f"/operator/registrations/{pk}/refund")
    shown = ops.get(response.headers["Location"]).text
    assert "could not refund the payment" in shown and "Nothing was changed" in shown
    reg = load(app, pk)
    assert reg.state == "completed" and reg.refund_id is None
    assert "Refund failed at Stripe" in reg.timeline[-1].message
    assert "sk_test_secret_key_for_tests" not in shown


def test_refund_of_a_mismatched_payment_uses_its_session(app, ops, stripe_api, ltiaas_api, mocked):
    _registration_id, token, _ = open_frame(ops, ltiaas_api)
    ops.get(f"/flow/{token}/pay")
    session_id = stripe_api.only_session()["id"]
    stripe_api.sessions[session_id]["amount_total"] = 100
    stripe_api.pay(session_id)
    deliver(ops, stripe_api, stripe_api.event("checkout.session.completed", session_id))
    with app.app_context():
        pk = db.session.scalars(select(Registration.id)).one()
    assert load(app, pk).attention == "payment_mismatch"
    post(ops, f"/operator/registrations/{pk}/refund")
    reg = load(app, pk)
    assert reg.state == "refunded" and reg.attention is None
    assert stripe_api.sessions[session_id]["payment_intent"] in next(iter(stripe_api.refunds))


def test_refund_refused_for_unpaid_registrations(app, ops):
    pk = seed(app, state="pending")[0]
    assert "Nothing to refund" in ops.get(f"/operator/registrations/{pk}/refund").text
    response = post(ops, f"/operator/registrations/{pk}/refund")
    assert "Nothing to refund" in ops.get(response.headers["Location"]).text
    assert load(app, pk).state == "pending"


def test_refund_of_a_paid_registration_holds_its_completion_first(app, ops, stripe_api, ltiaas_api):
    """A worker must not register the platform while (or after) the money goes back."""
    from paygate.ops import worker

    pk = paid_registration(ops, stripe_api, ltiaas_api, fail_completion=503)
    assert load(app, pk).state == "paid"  # a retry is scheduled
    stripe_api.sessions.clear()  # the refund fails at Stripe
    post(ops, f"/operator/registrations/{pk}/refund")
    reg = load(app, pk)
    assert reg.state == "needs_attention" and reg.attention == "refunding"
    calls = len(ltiaas_api.complete_calls)
    with app.app_context():
        worker.run_once(now=reg.created_at + timedelta(minutes=10))
    assert len(ltiaas_api.complete_calls) == calls  # held: no completion behind the refund


def test_refund_keeps_a_second_payment_in_view(app, ops):
    pk = seed(
        app,
        state="needs_attention",
        attention="completion_refused,duplicate_payment",
        payment_intent_id="pi_first",
        payment_session_id="cs_first",
    )[0]
    reg = load(app, pk)
    assert "Needs attention" in ops.get(f"/operator/registrations/{pk}").text
    from paygate.web.operator.actions import can_retry

    assert can_retry(reg)  # the completion's reason is there, beside the second payment


def test_refund_after_a_stripe_5xx_is_not_replayed_forever(app, ops, stripe_api, ltiaas_api):
    """Stripe keeps a 5xx under its idempotency key for a day: the next click needs a new key."""
    pk = paid_registration(ops, stripe_api, ltiaas_api)
    stripe_api.fail_next_refund.append(500)
    post(ops, f"/operator/registrations/{pk}/refund")
    assert load(app, pk).state == "completed"
    post(ops, f"/operator/registrations/{pk}/refund")
    reg = load(app, pk)
    assert reg.state == "refunded"
    keys = [c[1] for c in stripe_api.calls if c[0] == "refund"]
    assert len(keys) == 2 and keys[0] != keys[1]
    assert len([r for r in stripe_api.refunds.values() if "id" in r]) == 1


def test_a_full_refund_in_the_dashboard_refunds_the_registration_and_ends_access(client, stripe_api, ltiaas_api):
    pk, session = buy(client, stripe_api, ltiaas_api)
    refund = stripe_api.refund_in_dashboard(session["payment_intent"])
    charge = stripe_api.charges[refund["charge"]]
    send(client, stripe_api, "charge.refunded", charge)
    send(client, stripe_api, "refund.created", refund)
    reg = load(client, pk)
    assert reg.state == "refunded" and reg.refund_id == refund["id"] and reg.platform_active is False
    assert ltiaas_api.calls_for(reg.platform_id) == ["deactivate"]
    row = reg.licence.payments[0]
    assert (row.amount_refunded, row.refund_status) == (4900, "succeeded")


def test_a_partial_refund_is_recorded_and_changes_no_access(client, stripe_api, ltiaas_api):
    pk, session = buy(client, stripe_api, ltiaas_api)
    refund = stripe_api.refund_in_dashboard(session["payment_intent"], amount=1000)
    send(client, stripe_api, "charge.refunded", stripe_api.charges[refund["charge"]])
    reg = load(client, pk)
    assert reg.state == "completed" and reg.platform_active is True and ltiaas_api.platform_calls == []
    assert reg.licence.payments[0].amount_refunded == 1000
    assert any("refunded in part" in e.message for e in reg.timeline)


def test_a_refund_that_fails_later_is_undone_and_flagged(client, stripe_api, ltiaas_api):
    pk, session = buy(client, stripe_api, ltiaas_api)
    refund = stripe_api.refund_in_dashboard(session["payment_intent"], status="pending")
    send(client, stripe_api, "refund.created", refund)
    reg = load(client, pk)
    assert reg.state == "refunded" and reg.licence.payments[0].refund_status == "pending"
    failed = stripe_api.fail_refund(refund["id"])
    send(client, stripe_api, "refund.updated", failed)
    reg = load(client, pk)
    assert reg.state == "completed" and "refund_failed" in reg.attention and reg.refund_id is None
    assert reg.platform_active is True and ltiaas_api.calls_for(reg.platform_id) == ["deactivate", "activate"]
    assert reg.licence.payments[0].refund_status == "failed"


def test_operator_refund_after_a_dashboard_refund_is_already_refunded_not_an_error(app, client, stripe_api, ltiaas_api):
    pk, session = buy(client, stripe_api, ltiaas_api)
    stripe_api.refund_in_dashboard(session["payment_intent"])  # its webhook is lost
    add_operator(app)
    sign_in(client)
    response = post(client, f"/operator/registrations/{pk}/refund")
    assert "Already refunded at Stripe" in client.get(response.headers["Location"]).text
    reg = load(client, pk)
    assert reg.state == "refunded" and reg.platform_active is False
    assert ltiaas_api.calls_for(reg.platform_id) == ["deactivate"]


def test_operator_refund_of_a_subscription_cancels_it_and_ends_access(app, client, stripe_api, ltiaas_api, yearly):
    pk, session = buy(client, stripe_api, ltiaas_api)
    add_operator(app)
    sign_in(client)
    response = post(client, f"/operator/registrations/{pk}/refund")
    shown = client.get(response.headers["Location"]).text
    assert "Refunded 49.00 USD" in shown and f"Subscription {session['subscription']} cancelled" in shown
    assert stripe_api.subscriptions[session["subscription"]]["status"] == "canceled"
    reg = load(client, pk)
    assert reg.state == "refunded" and reg.platform_active is False


def test_a_dispute_flags_then_lost_ends_access(client, stripe_api, ltiaas_api):
    pk, session = buy(client, stripe_api, ltiaas_api)
    dispute = stripe_api.open_dispute(session["payment_intent"])
    send(client, stripe_api, "charge.dispute.created", dispute)
    reg = load(client, pk)
    assert "disputed" in reg.attention and reg.platform_active is True and reg.licence.dispute_open
    assert reg.licence.payments[0].dispute_due_by is not None
    assert any("evidence due by" in e.message for e in reg.timeline)
    send(client, stripe_api, "charge.dispute.closed", stripe_api.close_dispute(dispute["id"], "lost"))
    reg = load(client, pk)
    assert reg.platform_active is False and not reg.licence.dispute_open and reg.attention is None
    assert ltiaas_api.calls_for(reg.platform_id) == ["deactivate"]


def test_a_dispute_won_clears_the_flag_and_keeps_access(client, stripe_api, ltiaas_api):
    pk, session = buy(client, stripe_api, ltiaas_api)
    dispute = stripe_api.open_dispute(session["payment_intent"])
    send(client, stripe_api, "charge.dispute.created", dispute)
    send(client, stripe_api, "charge.dispute.closed", stripe_api.close_dispute(dispute["id"], "won"))
    reg = load(client, pk)
    assert reg.attention is None and reg.platform_active is True and ltiaas_api.platform_calls == []


def test_an_uncertain_deactivate_leaves_ltiaas_unknown_and_is_told_again(client, stripe_api, ltiaas_api):
    """A 502 may come after LTIaaS did the work: the service then does not know the platform's state,
    so when the refund fails and access should be back, LTIaaS is told again."""
    pk, session = buy(client, stripe_api, ltiaas_api)
    platform_id = load(client, pk).platform_id
    refund = stripe_api.refund_in_dashboard(session["payment_intent"], status="pending")
    ltiaas_api.platforms[platform_id]["active"] = False  # the deactivation took effect ...
    ltiaas_api.activation_failures = [502]  # ... but the proxy answered 502
    send(client, stripe_api, "refund.created", refund)
    reg = load(client, pk)
    assert reg.platform_active is None and reg.access_wanted is False
    send(client, stripe_api, "refund.updated", stripe_api.fail_refund(refund["id"]))
    reg = load(client, pk)
    assert reg.platform_active is True and ltiaas_api.platforms[platform_id]["active"] is True
    assert ltiaas_api.calls_for(platform_id) == ["deactivate", "activate"]


def test_a_read_of_stripe_overtaken_by_a_newer_one_is_not_written_over_it(app, client, stripe_api, ltiaas_api):
    from paygate.core.models import LicencePayment
    from paygate.licensing import licences, refunds

    pk, session = buy(client, stripe_api, ltiaas_api)
    with app.app_context():
        row = db.session.scalars(select(LicencePayment)).one()
        row_pk, licence_pk = row.id, row.licence_pk

    def slow_fetch():  # reconciliation reads "nothing refunded" ...
        stale = refunds._payment_and_refund(session["payment_intent"])
        # ... and meanwhile a dashboard refund and its webhook are applied in full.
        refund = stripe_api.refund_in_dashboard(session["payment_intent"])
        send(client, stripe_api, "charge.refunded", stripe_api.charges[refund["charge"]])
        return (*stale, None)

    with app.app_context():
        assert refunds._apply_fresh(row_pk, licence_pk, slow_fetch, "reconcile")[1] is False
        db.session.commit()
        assert licences  # the module that orders the reads
    reg = load(client, pk)
    assert reg.state == "refunded" and reg.platform_active is False and reg.attention is None
    assert ltiaas_api.calls_for(reg.platform_id) == ["deactivate"]


def test_refunding_again_after_a_refund_failed_makes_a_new_refund(app, client, stripe_api, ltiaas_api):
    pk, _session = buy(client, stripe_api, ltiaas_api)
    add_operator(app)
    sign_in(client)
    stripe_api.refund_status = "pending"
    post(client, f"/operator/registrations/{pk}/refund")
    first = load(client, pk).licence.payments[0].refund_id
    send(client, stripe_api, "refund.updated", stripe_api.fail_refund(first))
    assert load(client, pk).state == "completed"
    stripe_api.refund_status = "succeeded"
    response = post(client, f"/operator/registrations/{pk}/refund")
    shown = client.get(response.headers["Location"]).text
    reg = load(client, pk)
    second = reg.licence.payments[0].refund_id
    assert second != first and "Refunded 49.00 USD" in shown
    assert reg.state == "refunded" and reg.platform_active is False


def test_a_refund_while_the_completion_fails_is_never_registered(app, client, stripe_api, ltiaas_api):
    from paygate.ops import worker

    _, token, _ = open_frame(client, ltiaas_api)
    client.get(f"/flow/{token}/pay")
    session_id = stripe_api.only_session()["id"]
    stripe_api.pay(session_id)
    ltiaas_api.complete_failures = [503]
    client.get(f"/flow/{token}/paid?session_id={session_id}")  # the first attempt fails: a retry is due
    with app.app_context():
        pk = db.session.scalars(select(Registration.id)).one()
    assert load(client, pk).state == "paid"
    refund = stripe_api.refund_in_dashboard(stripe_api.sessions[session_id]["payment_intent"])
    send(client, stripe_api, "charge.refunded", stripe_api.charges[refund["charge"]])
    with app.app_context():
        worker.run_once(now=utcnow() + timedelta(minutes=10))
    reg = load(client, pk)
    assert reg.state == "refunded" and reg.platform_id is None and len(ltiaas_api.complete_calls) == 1
    assert status(client, token)["phase"] == "stop"
