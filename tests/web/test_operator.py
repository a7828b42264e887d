"""Operators over HTTP: sign-in, access control, CSRF, review (filters, search, pages, export, API)
and actions (retry, platform, notes; refunds: tests/licensing/test_refunds.py), with Stripe and LTIaaS faked
by `responses`."""

import csv
import io
import re
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from paygate.core.db import db
from paygate.core.models import CheckoutSession, OperatorSession, OperatorToken, Registration
from paygate.web.operator.blueprint import PUBLIC_ENDPOINTS
from tests.helpers.apps import make_app
from tests.helpers.flow import open_frame
from tests.helpers.operators import (
    EMAIL,
    PASSWORD,
    add_operator,
    api_ids,
    csrf_token,
    entries,
    form_id,
    load,
    paid_registration,
    post,
    seed,
    sign_in,
)
from tests.helpers.webhooks import deliver


def _operator_urls(app, pk):
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("operator.") and rule.endpoint not in PUBLIC_ENDPOINTS:
            values = {"pk": pk, "message_id": "msg_1", "operator_id": 1, "currency": "usd", "token_id": 1}
            url = rule.build({k: v for k, v in values.items() if k in rule.arguments})[1]
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                yield rule.endpoint, method, url


def test_every_operator_route_refuses_an_anonymous_caller(app, client, stripe_api, ltiaas_api):
    pk = paid_registration(client, stripe_api, ltiaas_api)
    before = len(entries(app, pk))
    token = csrf_token(client)  # a valid CSRF token: refused for want of a sign-in, not of the token
    routes = list(_operator_urls(app, pk))
    assert {e for e, _, _ in routes} >= {
        "operator.registrations",
        "operator.detail",
        "operator.export_csv",
        "operator.retry",
        "operator.refund",
        "operator.access_override",
        "operator.note",
        "operator.api_registrations",
        "operator.api_registration",
        "operator.resend_vendor_message",
        "operator.api_resend_vendor_message",
    }
    for endpoint, method, url in routes:
        response = client.open(
            url, method=method, data={"csrf_token": token, "form_id": "x" * 22, "active": "0", "text": "hi"}
        )
        if "/api/" in url:
            assert response.status_code == 401, (endpoint, method)
            assert response.get_json()["error"] == "Unauthorized"
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
        else:
            assert response.status_code == 302, (endpoint, method, response.status_code)
            assert response.headers["Location"].startswith("/operator/sign-in")
        assert "admin@school.example" not in response.text
    assert len(entries(app, pk)) == before
    assert [c for c in stripe_api.calls if c[0] == "refund"] == [] and ltiaas_api.platform_calls == []
    bad = client.get("/operator/api/registrations", headers={"Authorization": "Bearer pgo_not-a-token"})
    assert bad.status_code == 401


def test_sign_in_remembers_where_the_operator_was_going(client, operator):
    response = client.get("/operator/registrations/7?x=1")
    assert response.headers["Location"] == "/operator/sign-in?next=/operator/registrations/7?x%3D1"
    signed = client.post(
        "/operator/sign-in",
        data={
            "email": EMAIL,
            "password": PASSWORD,
            "next": "/operator/registrations/7?x=1",
            "csrf_token": csrf_token(client),
        },
    )
    assert signed.headers["Location"] == "/operator/registrations/7?x=1"
    client.post("/operator/sign-out", data={"csrf_token": csrf_token(client, "/operator/")})
    for evil in ("https://evil.example/", "//evil.example/operator", "/flow/x", "/operator\\@evil"):
        signed = client.post(
            "/operator/sign-in",
            data={"email": EMAIL, "password": PASSWORD, "next": evil, "csrf_token": csrf_token(client)},
        )
        assert signed.headers["Location"] == "/operator/overview", evil
        client.post("/operator/sign-out", data={"csrf_token": csrf_token(client, "/operator/")})


def test_wrong_password_is_refused_and_sign_out_ends_the_session(client, operator):
    wrong = sign_in(client, password="not the password at all")
    assert wrong.status_code == 401 and "Wrong e-mail or password" in wrong.text
    assert sign_in(client, email="nobody@vendor.example").status_code == 401
    assert client.get("/operator/").status_code == 302
    assert sign_in(client, email=EMAIL.upper()).status_code == 303  # e-mail case does not matter
    page = client.get("/operator/")
    assert page.status_code == 200 and EMAIL in page.text
    assert client.post("/operator/sign-out", data={"csrf_token": csrf_token(client, "/operator/")}).status_code == 303
    assert client.get("/operator/").status_code == 302


def test_csrf_is_required_for_every_operator_form(app, ops, stripe_api, ltiaas_api):
    pk = paid_registration(ops, stripe_api, ltiaas_api)
    before = len(entries(app, pk))
    for path, data in [
        (f"/operator/registrations/{pk}/notes", {"text": "hi", "form_id": "f" * 22}),
        (f"/operator/registrations/{pk}/refund", {}),
        (f"/operator/registrations/{pk}/retry", {}),
        (f"/operator/registrations/{pk}/access", {"override": "revoke", "text": "t", "form_id": "f" * 22}),
        ("/operator/sign-out", {}),
    ]:
        missing = ops.post(path, data=data)
        forged = ops.post(path, data={**data, "csrf_token": "forged.token.value"})
        assert missing.status_code == 400 and "CSRF" in missing.text, path
        assert forged.status_code == 400, path
    assert len(entries(app, pk)) == before
    assert [c for c in stripe_api.calls if c[0] == "refund"] == []
    assert ops.get("/operator/").status_code == 200  # still signed in: sign-out was refused too
    # The sign-in form needs it as well; the webhook and the frame flow do not (tests elsewhere).
    anonymous = app.test_client()
    assert anonymous.post("/operator/sign-in", data={"email": EMAIL, "password": PASSWORD}).status_code == 400


def test_failed_sign_ins_are_throttled_by_address_and_account_never_by_account_alone(app, operator):
    add_operator(app, "finance@vendor.example")
    client = app.test_client()
    for _ in range(5):
        assert sign_in(client, password="wrong password!").status_code == 401
    refused = sign_in(client)
    assert refused.status_code == 429 and "Too many failed sign-ins" in refused.text  # even the right password waits
    assert refused.headers["Retry-After"] == "60"
    assert sign_in(client, email="finance@vendor.example").status_code == 303  # another account from there
    other = app.test_client()
    elsewhere = {"environ_base": {"REMOTE_ADDR": "203.0.113.9"}}
    assert sign_in(other, **elsewhere).status_code == 303  # guesses elsewhere never lock the operator out


def test_successful_sign_ins_are_not_counted(app, operator):
    client = app.test_client()
    for _ in range(7):
        assert sign_in(client).status_code == 303
        client.post("/operator/sign-out", data={"csrf_token": csrf_token(client, "/operator/")})


def test_production_cookies_and_csrf_over_https(database_url):
    app = make_app(database_url, public_url="https://billing.vendor.example")
    add_operator(app)
    client = app.test_client()
    https = {"base_url": "https://billing.vendor.example"}
    page = client.get("/operator/sign-in", **https)
    assert page.headers["Referrer-Policy"] == "same-origin"  # so that forms carry a same-origin Referer
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    data = {"email": EMAIL, "password": PASSWORD, "csrf_token": token}
    assert client.post("/operator/sign-in", data=data, **https).status_code == 400  # no Referer
    assert (
        client.post("/operator/sign-in", data=data, headers={"Referer": "https://evil.example/"}, **https).status_code
        == 400
    )
    signed = client.post(
        "/operator/sign-in", data=data, headers={"Referer": "https://billing.vendor.example/operator/sign-in"}, **https
    )
    assert signed.status_code == 303
    cookie = signed.headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_operator_pages_are_never_frameable_nor_cached(app, ops, stripe_api, ltiaas_api):
    pk = paid_registration(ops, stripe_api, ltiaas_api)
    for path in (
        "/operator/sign-in",
        "/operator/",
        f"/operator/registrations/{pk}",
        f"/operator/registrations/{pk}/refund",
        "/operator/api/registrations",
    ):
        response = ops.get(path)
        assert response.status_code == (302 if path.endswith("sign-in") else 200), path
        assert response.headers["X-Frame-Options"] == "DENY", path
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"], path
        assert response.headers["Cache-Control"] == "no-store", path


def test_sessions_end_after_twelve_hours(client, operator):
    sign_in(client)
    assert client.get("/operator/").status_code == 200
    with client.application.app_context():  # twelve hours and a second later
        row = db.session.scalars(select(OperatorSession)).one()
        assert row.expires_at - row.created_at == timedelta(hours=12)
        row.expires_at -= timedelta(hours=12, seconds=1)
        db.session.commit()
    assert client.get("/operator/").status_code == 302


def test_password_reset_signs_old_sessions_out(app, client):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["operator", "create", EMAIL, "--password-stdin"], input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    assert sign_in(client).status_code == 303
    assert client.get("/operator/").status_code == 200
    result = runner.invoke(args=["operator", "create", EMAIL, "--password-stdin"], input="another long password\n")
    assert "password reset" in result.output
    assert client.get("/operator/").status_code == 302


def test_api_token_from_the_cli(app, client, operator):
    seed(app, 2)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["operator", "token", EMAIL])
    assert result.exit_code == 0, result.output
    token = result.stdout.strip().splitlines()[-1]
    assert token.startswith("pgo_")
    with app.app_context():
        stored = db.session.scalars(select(OperatorToken.token_hash)).one()
        assert stored and token not in stored and len(stored) == 64  # only its sha256
    bearer = {"Authorization": f"Bearer {token}"}
    listing = client.get("/operator/api/registrations", headers=bearer)
    assert listing.status_code == 200 and len(listing.get_json()["items"]) == 2
    pk = listing.get_json()["items"][0]["id"]
    assert client.get(f"/operator/api/registrations/{pk}", headers=bearer).get_json()["id"] == pk
    assert "Set-Cookie" not in listing.headers
    assert client.get("/operator/", headers=bearer).status_code == 302  # tokens are for the API only
    # --revoke ends every token of the operator.
    assert runner.invoke(args=["operator", "token", EMAIL, "--revoke"]).exit_code == 0
    assert client.get("/operator/api/registrations", headers=bearer).status_code == 401
    with app.app_context():
        assert db.session.scalars(select(OperatorToken.revoked_at)).one() is not None
    assert runner.invoke(args=["operator", "token", "nobody@vendor.example"]).exit_code != 0


# Review: list, filters, search, paging, export, detail


def test_list_shows_payment_platform_and_stripe_links(app, ops, stripe_api, ltiaas_api):
    pk = paid_registration(
        ops,
        stripe_api,
        ltiaas_api,
        email="it@school.example",
        family="moodle",
        url="https://moodle.school.example",
        version="4.4.1+",
    )
    reg = load(app, pk)
    page = ops.get("/operator/")
    assert page.status_code == 200
    for text in (
        "completed",
        "https://moodle.school.example",
        "moodle",
        "4.4.1+",
        reg.platform_id,
        "49.00 USD",
        "it@school.example",
        f"/operator/registrations/{pk}",
    ):
        assert text in page.text, text
    assert f'href="https://dashboard.stripe.com/test/checkout/sessions/{reg.payment_session_id}"' in page.text
    assert f'href="https://dashboard.stripe.com/test/payments/{reg.payment_intent_id}"' in page.text
    assert reg.created_at.strftime("%Y-%m-%d %H:%M") in page.text
    assert reg.paid_at.strftime("%Y-%m-%d %H:%M") in page.text


def test_live_keys_link_to_the_live_dashboard(database_url):
    app = make_app(database_url, stripe_secret_key="sk_live_not_a_real_key")
    add_operator(app)
    seed(app, payment_intent_id="pi_live_1", payment_session_id="cs_live_1")
    client = app.test_client()
    sign_in(client)
    page = client.get("/operator/")
    assert 'href="https://dashboard.stripe.com/payments/pi_live_1"' in page.text
    assert 'href="https://dashboard.stripe.com/checkout/sessions/cs_live_1"' in page.text


def test_needs_attention_comes_first_and_is_obvious(app, ops):
    old_trouble = seed(app, state="needs_attention", attention="completion_refused", created_at=datetime(2025, 1, 1))[0]
    seed(app, 60)  # newer, fine: the troubled one is not on the first page of the plain list
    page = ops.get("/operator/")
    section = page.text.split('id="attention-section"')[1].split("All registrations")[0]
    assert f"/operator/registrations/{old_trouble}" in section and "completion refused" in section
    assert "Needs attention (1)" in section
    assert api_ids(ops, attention="1") == [old_trouble]
    detail = ops.get(f"/operator/registrations/{old_trouble}")
    assert 'id="attention-reason"' in detail.text and "LTIaaS refused the completion" in detail.text


def test_filters(app, ops):
    jan, feb, mar = datetime(2026, 1, 15, 12), datetime(2026, 2, 15, 12), datetime(2026, 3, 15, 12)
    canvas_done = seed(app, created_at=jan)[0]
    moodle_paid = seed(app, state="paid", lms_family="moodle", created_at=feb)[0]
    moodle_trouble = seed(
        app, state="needs_attention", attention="completion_expired", lms_family="moodle", created_at=mar
    )[0]
    duplicate = seed(app, attention="duplicate_payment", created_at=mar + timedelta(hours=1))[0]
    assert api_ids(ops) == [duplicate, moodle_trouble, moodle_paid, canvas_done]
    assert api_ids(ops, state="paid") == [moodle_paid]
    assert api_ids(ops, state="completed") == [duplicate, canvas_done]
    assert api_ids(ops, family="moodle") == [moodle_trouble, moodle_paid]
    assert api_ids(ops, attention="1") == [duplicate, moodle_trouble]
    assert api_ids(ops, since="2026-02-01") == [duplicate, moodle_trouble, moodle_paid]
    assert api_ids(ops, until="2026-02-15") == [moodle_paid, canvas_done]  # the whole 'to' day counts
    assert api_ids(ops, since="2026-02-01", until="2026-02-28") == [moodle_paid]
    assert api_ids(ops, family="moodle", attention="1") == [moodle_trouble]
    assert api_ids(ops, state="refunded") == []
    # The HTML list takes the same filters, and says when one is wrong.
    page = ops.get("/operator/", query_string={"family": "moodle", "state": "paid"})
    assert f"/operator/registrations/{moodle_paid}" in page.text
    assert f'/operator/registrations/{moodle_trouble}"' not in page.text.split("All registrations")[-1]
    assert "must look like" in ops.get("/operator/?since=yesterday").text
    assert ops.get("/operator/api/registrations?state=bogus").status_code == 400
    assert ops.get("/operator/api/registrations?since=2026-03-01&until=2026-01-01").status_code == 400


def test_search_by_every_kind(app, ops, stripe_api, ltiaas_api):
    pk = paid_registration(
        ops,
        stripe_api,
        ltiaas_api,
        email="IT.Admin@School.example",
        url="https://Canvas.Springfield.edu",
        family="canvas",
    )
    other = paid_registration(
        ops, stripe_api, ltiaas_api, email="someone@else.example", url="https://moodle.shelbyville.edu", family="moodle"
    )
    reg = load(app, pk)
    with app.app_context():  # a session of the registration that did not pay is found too
        db.session.add(
            CheckoutSession(
                session_id="cs_test_unpaid_first_try",
                registration_pk=pk,
                generation=0,
                status="expired",
                payment_status="unpaid",
            )
        )
        db.session.commit()
    for q in (
        "it.admin@school.example",
        "IT.ADMIN@SCHOOL.EXAMPLE",
        "https://canvas.springfield.edu",
        "canvas.springfield",
        "HTTPS://CANVAS.SPRING",
        reg.platform_id,
        reg.registration_id,
        str(pk),
        reg.payment_session_id,
        reg.payment_intent_id,
        "cs_test_unpaid_first_try",
    ):
        assert api_ids(ops, q=q) == [pk], q
    assert api_ids(ops, q="moodle.shelbyville.edu/") == []
    assert api_ids(ops, q="moodle.shelbyville") == [other]
    assert api_ids(ops, q="Moodle") == [other] and api_ids(ops, q="canvas") == [pk]  # by family too
    for q in ("springfield.edu", "%", "_", "admin@school", "pi_unknown", "cs_unknown", "999999", "x" * 600):
        assert api_ids(ops, q=q) == [], q
    page = ops.get("/operator/", query_string={"q": "it.admin@school.example"})
    assert "payer e-mail" in page.text and f"/operator/registrations/{pk}" in page.text
    assert f'/operator/registrations/{other}"' not in page.text


def test_keyset_pages_walk_everything_once_in_both_directions(app, ops):
    same_time = datetime(2026, 5, 5, 5, 5, 5)
    seed(app, 30, created_at=same_time)  # ties broken by id
    seed(app, 95)
    url, pages, seen = "/operator/api/registrations?limit=40", [], []
    while url:
        body = ops.get(url).get_json()
        pages.append(([i["id"] for i in body["items"]], body["previous"]))
        seen += pages[-1][0]
        url = body["next"]
    assert len(seen) == 125 and len(set(seen)) == 125
    with app.app_context():
        order = db.session.scalars(
            select(Registration.id).order_by(Registration.created_at.desc(), Registration.id.desc())
        ).all()
    assert seen == order
    assert [len(p) for p, _ in pages] == [40, 40, 40, 5]
    # Going back from the last page gives the third page again.
    previous = ops.get(pages[-1][1]).get_json()
    assert [i["id"] for i in previous["items"]] == pages[2][0]
    # The HTML pager too.
    first = ops.get("/operator/")
    older = re.search(r'href="([^"]+)" id="older"', first.text).group(1).replace("&amp;", "&")
    second = ops.get(older)
    assert second.status_code == 200 and 'id="newer"' in second.text
    assert ops.get("/operator/api/registrations?after=garbage").status_code == 400


def test_csv_export_of_the_filtered_list(app, ops):
    seed(app, 3, lms_family="moodle", payer_email='=HYPERLINK("http://evil")')
    seed(app, 2, lms_family="canvas")
    response = ops.get("/operator/registrations.csv?family=moodle")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert len(rows) == 3 and {r["lms_family"] for r in rows} == {"moodle"}
    assert all(r["payer_email"].startswith("'=") for r in rows)  # no formula in a spreadsheet
    everything = list(csv.DictReader(io.StringIO(ops.get("/operator/registrations.csv").get_data(as_text=True))))
    assert len(everything) == 5


def test_detail_shows_the_whole_history(app, ops, stripe_api, ltiaas_api):
    registration_id, token, _ = open_frame(ops, ltiaas_api)
    ops.get(f"/flow/{token}/pay")
    session_id = stripe_api.only_session()["id"]
    stripe_api.pay(session_id, email="it@school.example")
    ltiaas_api.complete_failures.append(503)  # the first attempt fails, a retry is scheduled
    event = stripe_api.event("checkout.session.completed", session_id)
    assert deliver(ops, stripe_api, event).status_code == 200
    with app.app_context():
        pk = db.session.scalars(select(Registration.id)).one()
    page = ops.get(f"/operator/registrations/{pk}")
    assert page.status_code == 200
    for text in (
        "pending",
        "paid",
        "completing",
        "retrying in",
        "LTIaaS answered 503",
        f"webhook {event['id']}",
        "checkout.session.completed",
        session_id,
        "it@school.example",
        "pre-approval",
    ):
        assert text in page.text, text
    body = ops.get(f"/operator/api/registrations/{pk}").get_json()
    assert body["registration_id"] == registration_id and body["state"] == "paid"
    assert [e["to_state"] for e in body["timeline"] if e["kind"] == "state"] == [
        "pending",
        "paid",
        "completing",
        "paid",
    ]
    assert body["stripe_events"][0]["id"] == event["id"] and body["stripe_events"][0]["outcome"] == "paid"
    assert body["attempts"]["last_error"]["status"] == 503
    assert body["checkout_sessions"][0]["id"] == session_id
    assert "completion_html" not in body and "flow_token" not in str(body)
    assert ops.get("/operator/registrations/99999").status_code == 404
    assert ops.get("/operator/api/registrations/99999").get_json()["error"] == "Not Found"


def test_lms_strings_are_escaped_on_operator_pages(app, ops):
    pk = seed(app, lms_url="https://x.example/<script>alert(1)</script>", lms_family="<b>fam</b>")[0]
    for path in ("/operator/", f"/operator/registrations/{pk}"):
        text = ops.get(path).text
        assert "<script>alert(1)</script>" not in text and "<b>fam</b>" not in text


# Actions


def test_retry_completion_of_a_refused_completion(app, ops, stripe_api, ltiaas_api):
    pk = paid_registration(ops, stripe_api, ltiaas_api, fail_completion=400)
    reg = load(app, pk)
    assert reg.state == "needs_attention" and reg.attention == "completion_refused"
    page = ops.get(f"/operator/registrations/{pk}")
    assert 'id="retry"' in page.text
    done = post(ops, f"/operator/registrations/{pk}/retry")
    assert done.status_code == 303 and done.headers["Location"] == f"/operator/registrations/{pk}"
    assert "Completed: registered at LTIaaS as platform" in ops.get(done.headers["Location"]).text
    reg = load(app, pk)
    assert reg.state == "completed" and reg.attention is None and reg.platform_id
    assert len(ltiaas_api.complete_calls) == 2
    states = [(e.from_state, e.to_state, e.cause) for e in reg.timeline if e.kind == "state"][-3:]
    assert states == [
        ("needs_attention", "paid", f"operator {EMAIL}"),
        ("paid", "completing", f"operator {EMAIL}"),
        ("completing", "completed", f"operator {EMAIL}"),
    ]
    # A second click finds nothing to retry and calls nobody.
    again = post(ops, f"/operator/registrations/{pk}/retry")
    assert "Nothing to retry: the registration is completed" in ops.get(again.headers["Location"]).text
    assert len(ltiaas_api.complete_calls) == 2


def test_retry_that_fails_again_says_so(app, ops, stripe_api, ltiaas_api):
    pk = paid_registration(ops, stripe_api, ltiaas_api, fail_completion=400)
    ltiaas_api.complete_failures.append(422)
    response = post(ops, f"/operator/registrations/{pk}/retry")
    assert "The completion failed again: LTIaaS answered 422" in ops.get(response.headers["Location"]).text
    reg = load(app, pk)
    assert reg.state == "needs_attention" and reg.attention == "completion_refused"


def test_retry_is_not_offered_for_a_payment_that_was_not_accepted(app, ops):
    pk = seed(app, state="needs_attention", attention="payment_mismatch")[0]
    assert 'id="retry"' not in ops.get(f"/operator/registrations/{pk}").text
    response = post(ops, f"/operator/registrations/{pk}/retry")
    assert "Nothing to retry" in ops.get(response.headers["Location"]).text
    assert load(app, pk).state == "needs_attention"


def test_operator_override_revokes_grants_and_gives_access_back_to_the_licence(app, ops, stripe_api, ltiaas_api):
    pk = paid_registration(ops, stripe_api, ltiaas_api)
    platform_id = load(app, pk).platform_id
    page = ops.get(f"/operator/registrations/{pk}").text
    action = f"/operator/registrations/{pk}/access"
    assert 'id="revoke"' in page and 'id="grant"' not in page  # never both at once
    refused = post(ops, action, {"override": "revoke", "form_id": form_id(page, action)})
    assert "Say why" in ops.get(refused.headers["Location"]).text and ltiaas_api.platform_calls == []
    revoke = {"override": "revoke", "text": "School asked to pause", "form_id": form_id(page, action)}
    response = post(ops, action, revoke)
    assert "the platform is inactive at LTIaaS" in ops.get(response.headers["Location"]).text
    assert ltiaas_api.platform_calls == [("deactivate", platform_id)]
    reg = load(app, pk)
    assert reg.platform_active is False and reg.access_override is False
    assert any(e.cause == f"operator {EMAIL}" and "revokes access" in e.message for e in reg.timeline)
    # The same form again (a double click) does not call LTIaaS again.
    again = post(ops, action, revoke)
    assert "Already done" in ops.get(again.headers["Location"]).text
    assert len(ltiaas_api.platform_calls) == 1
    page = ops.get(f"/operator/registrations/{pk}").text
    assert 'id="follow-licence"' in page and 'id="grant"' in page and "override: revoke" in page
    post(ops, action, {"override": "licence", "form_id": form_id(page, action)})
    assert ltiaas_api.platform_calls[-1] == ("activate", platform_id)
    reg = load(app, pk)
    assert reg.platform_active is True and reg.access_override is None
    body = ops.get(f"/operator/api/registrations/{pk}").get_json()
    assert body["platform"] == {
        "id": platform_id,
        "active": True,
        "override": None,
        "access_wanted": True,
        "access_reason": "paid",
        "replaced_at": None,
    }


def test_platform_call_failure_is_retried_until_ltiaas_has_it(app, ops, stripe_api, ltiaas_api):
    from paygate.ops import worker

    pk = paid_registration(ops, stripe_api, ltiaas_api)
    platform = dict(ltiaas_api.platforms)
    ltiaas_api.platforms.clear()  # LTIaaS answers 404
    page = ops.get(f"/operator/registrations/{pk}").text
    action = f"/operator/registrations/{pk}/access"
    response = post(ops, action, {"override": "revoke", "text": "t", "form_id": form_id(page, action)})
    assert "LTIaaS did not take it yet" in ops.get(response.headers["Location"]).text
    reg = load(app, pk)
    assert reg.platform_active is True and reg.access_wanted is False and reg.access_error["status"] == 404
    ltiaas_api.platforms.update(platform)  # LTIaaS has it again
    with app.app_context():
        worker.run_once(now=reg.access_next_at + timedelta(seconds=1))
    assert load(app, pk).platform_active is False
    assert [c[0] for c in ltiaas_api.platform_calls] == ["deactivate", "deactivate"]


def test_platform_path_prefix_comes_from_the_setting(database_url, stripe_api, ltiaas_api, mocked):
    app = make_app(database_url, ltiaas_platforms_path="/api/platforms")
    add_operator(app)
    client = app.test_client()
    pk = paid_registration(client, stripe_api, ltiaas_api)
    sign_in(client)
    page = client.get(f"/operator/registrations/{pk}").text
    action = f"/operator/registrations/{pk}/access"
    post(client, action, {"override": "revoke", "text": "t", "form_id": form_id(page, action)})
    assert ltiaas_api.platform_calls == [("deactivate", load(app, pk).platform_id)]
    urls = [c.request.url for c in mocked.calls if "/platforms/" in c.request.url]
    assert urls == [f"https://ltiaas.test/api/platforms/{load(app, pk).platform_id}/deactivate"]


def test_notes_are_recorded_once_and_escaped(app, ops, stripe_api, ltiaas_api):
    pk = paid_registration(ops, stripe_api, ltiaas_api)
    page = ops.get(f"/operator/registrations/{pk}").text
    action = f"/operator/registrations/{pk}/notes"
    note = {"text": "Called the school <script>x()</script>; they will re-register.", "form_id": form_id(page, action)}
    assert "Note added" in ops.get(post(ops, action, note).headers["Location"]).text
    assert "already added" in ops.get(post(ops, action, note).headers["Location"]).text
    notes = entries(app, pk, "note")
    assert len(notes) == 1 and notes[0].cause == f"operator {EMAIL}" and notes[0].message == note["text"]
    shown = ops.get(f"/operator/registrations/{pk}").text
    assert "Called the school &lt;script&gt;x()&lt;/script&gt;" in shown
    empty = post(ops, action, {"text": "  ", "form_id": form_id(shown, action)})
    assert "The note is empty" in ops.get(empty.headers["Location"]).text
    assert post(ops, action, {"text": "no form id"}).status_code == 400


def test_duplicate_payment_can_be_marked_resolved(app, ops):
    pk = seed(app, attention="duplicate_payment", payment_intent_id="pi_1", payment_session_id="cs_1")[0]
    page = ops.get(f"/operator/registrations/{pk}").text
    action = f"/operator/registrations/{pk}/resolve"
    response = post(ops, action, {"text": "Refunded pi_2 in the dashboard.", "form_id": form_id(page, action)})
    assert "Marked resolved" in ops.get(response.headers["Location"]).text
    reg = load(app, pk)
    assert reg.attention is None and reg.state == "completed"
    assert "Refunded pi_2 in the dashboard." in reg.timeline[-1].message
    assert api_ids(ops, attention="1") == []


def test_csrf_exempts_only_the_webhook_and_the_local_standins(app, tmp_path):
    from paygate.application import create_app

    local = create_app(
        {
            "app_env": "local",
            "database_url": f"sqlite:///{tmp_path / 'local.sqlite'}",
            "public_url": "http://127.0.0.1:5999",
            "secret_key": "local",
        }
    )
    # and the licence page, whose URL holds the key or the one-hour link (no cookie, so no CSRF token), and the
    # licence API (a bearer token, never a cookie)
    for each, expected in (
        (app, {"webhooks", "licence", "licence_api"}),
        (local, {"webhooks", "standins", "licence", "licence_api"}),
    ):
        csrf = each.extensions["csrf"]
        assert {bp.name for bp in csrf._exempt_blueprints} == expected
        # and the invoice, licence-key and pilot forms of the frame, which has no cookie (the flow token and a signed
        # form id protect them)
        assert csrf._exempt_views == {"paygate.web.flow.invoice", "paygate.web.flow.key", "paygate.web.flow.pilot"}


@pytest.mark.parametrize(
    "path",
    [
        "/operator/registrations/99999999999",
        "/operator/api/registrations/2147483648",
        "/operator/?q=a%00b",
        "/operator/api/registrations?q=%00",
        "/operator/registrations.csv?q=%00",
        "/operator/api/registrations?family=%00",
        "/operator/?until=9999-12-31",
        "/operator/api/registrations?since=0001-01-01",
        "/operator/api/registrations?limit=99999999999999999999",
        "/operator/?after=9999-12-31T23:59:59~1",
        "/operator/registrations/99999999999/refund",
    ],
)
def test_operator_parameters_out_of_range_get_a_sentence_not_a_5xx(ops, path):
    response = ops.get(path)
    assert response.status_code < 500, response.text
    assert response.status_code in (200, 400, 404)
