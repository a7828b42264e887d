"""Reconciliation with Stripe (paygate/sales/reconcile.py): paid Checkout Sessions and licences whose
webhooks were lost are found by listing Stripe, fulfilled or corrected once, and a second run changes nothing."""

import responses

from paygate.sales.reconcile import reconcile
from tests.fakes import CLOSE_HTML
from tests.helpers.flow import open_frame, status
from tests.helpers.fulfilment import load, snapshot
from tests.helpers.licences import buy
from tests.helpers.licences import load as load_pk
from tests.helpers.webhooks import deliver


def test_lost_webhooks_are_recovered_by_reconcile_and_a_second_run_changes_nothing(client, stripe_api, ltiaas_api):
    paid_ids = []
    for _ in range(5):
        registration_id, token, _ = open_frame(client, ltiaas_api)
        client.get(f"/flow/{token}/pay")
        session_id = next(s["id"] for s in stripe_api.sessions.values() if s["client_reference_id"] == registration_id)
        stripe_api.pay(session_id)
        paid_ids.append((registration_id, token, session_id))
    # The one webhook that arrives is signed with a wrongly rotated secret.
    refused = stripe_api.event("checkout.session.completed", paid_ids[0][2])
    assert deliver(client, stripe_api, refused, secret="whsec_rotated_wrongly").status_code == 400
    # Also listed: an unpaid session of ours, and a paid one of another integration on the account.
    _, unpaid_token, _ = open_frame(client, ltiaas_api)
    client.get(f"/flow/{unpaid_token}/pay")
    stripe_api.sessions["cs_test_other_integration"] = {
        **stripe_api.sessions[paid_ids[0][2]],
        "id": "cs_test_other_integration",
        "client_reference_id": None,
        "metadata": {"order": "42"},
        "amount_total": 1500,
    }
    assert all(status(client, token)["state"] == "pending" for _, token, _ in paid_ids)

    with client.application.app_context():
        counts = reconcile(since_hours=48, page_size=2)
    assert counts == {
        "listed": 7,
        "paid": 6,
        "known": 0,
        "fulfilled": 5,
        "completed": 5,
        "flagged": 0,
        "foreign": 1,
        "errors": 0,
    }
    pages = [url for kind, url in stripe_api.calls if kind == "list"]
    assert len(pages) == 4 and all("starting_after" in url for url in pages[1:])
    assert sorted(ltiaas_api.complete_calls) == sorted(r for r, _, _ in paid_ids)
    for registration_id, token, session_id in paid_ids:
        frame = status(client, token)
        assert frame["phase"] == "done" and frame["html"] == CLOSE_HTML
        reg = load(client, registration_id)
        assert reg.payment_session_id == session_id
        assert [(e.to_state, e.cause) for e in reg.timeline if e.kind == "state"][1:] == [
            ("paid", "reconcile"),
            ("completing", "reconcile"),
            ("completed", "reconcile"),
        ]
    assert status(client, unpaid_token)["state"] == "pending"

    before = snapshot(client)
    result = client.application.test_cli_runner().invoke(args=["reconcile", "--since-hours", "48"])
    assert result.exit_code == 0, result.output
    assert "fulfilled=0" in result.output and "known=5" in result.output and "foreign=1" in result.output
    assert snapshot(client) == before
    assert len(ltiaas_api.complete_calls) == 5

    # The secret is fixed and Stripe's retries arrive at last: acknowledged, nothing happens twice.
    assert deliver(client, stripe_api, refused).status_code == 200
    assert len(ltiaas_api.complete_calls) == 5 and snapshot(client)["registrations"] == before["registrations"]


def test_reconcile_reports_stripe_failures_and_keeps_what_it_did(client, stripe_api, ltiaas_api, paid, mocked):
    _registration_id, token, _ = paid
    mocked.replace(
        responses.GET,
        stripe_list_pattern(mocked),
        status=500,
        json={"error": {"type": "api_error", "message": "try later"}},
    )
    result = client.application.test_cli_runner().invoke(args=["reconcile"])
    assert result.exit_code != 0 and "could not list checkouts" in result.output
    assert "sk_test" not in result.output
    assert status(client, token)["state"] == "pending" and ltiaas_api.complete_calls == []


def stripe_list_pattern(mocked):
    return next(
        r.url
        for r in mocked.registered()
        if r.method == "GET" and getattr(r.url, "pattern", "").endswith(r"/v1/checkout/sessions(\?.*)?$")
    )


def test_reconcile_corrects_a_missed_webhook(app, client, stripe_api, ltiaas_api, yearly):
    from paygate.licensing.reconciler import sync_pending
    from paygate.sales.reconcile import reconcile_licences

    pk, session = buy(client, stripe_api, ltiaas_api)
    stripe_api.set_subscription_status(session["subscription"], "unpaid")  # its webhook never arrives
    with app.app_context():
        counts = reconcile_licences()
        assert counts["changed"] >= 1 and counts["errors"] == 0
        assert sync_pending(cause="reconcile")["access_told"] == 1
        assert reconcile_licences()["changed"] == 0  # a second run changes nothing
    reg = load_pk(client, pk)
    assert reg.platform_active is False and ltiaas_api.calls_for(reg.platform_id) == ["deactivate"]


def test_reconcile_finds_a_refund_and_a_dispute_made_while_webhooks_were_down(app, client, stripe_api, ltiaas_api):
    from paygate.sales.reconcile import reconcile_licences

    pk, session = buy(client, stripe_api, ltiaas_api)
    stripe_api.open_dispute(session["payment_intent"])
    with app.app_context():
        reconcile_licences()
    assert "disputed" in load_pk(client, pk).attention
