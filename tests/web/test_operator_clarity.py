"""Operator pages say what is known: one access button at a time, an unknown state at LTIaaS said as
such and checked at LTIaaS on request, the payer beside the LMS URL (every Canvas cloud school has
the same one), and the password field focused after a failed sign-in."""

import html
import json
import re
from datetime import datetime

import pytest
from sqlalchemy import update

from paygate.core.db import db
from paygate.core.models import Licence, Registration
from tests.helpers.apps import BASE_CONFIG
from tests.helpers.operators import EMAIL, entries, load, paid_registration, seed

PLATFORM_GET = re.compile(re.escape(BASE_CONFIG["ltiaas_url"]) + r"/(admin|api)/platforms/([^/]+)$")


@pytest.fixture
def platform_reads(mocked, ltiaas_api):
    """GET {platforms}/{id} at the LTIaaS fake: the platform as the fake has it; reads are counted."""
    reads = {"count": 0, "status": 200}

    def read(request):
        reads["count"] += 1
        if reads["status"] != 200:
            return reads["status"], {}, json.dumps({"status": reads["status"], "error": "Failure", "details": {}})
        platform_id = PLATFORM_GET.match(request.url).group(2)
        found = ltiaas_api.platforms.get(platform_id)
        if found is None:
            return (
                404,
                {},
                json.dumps({"status": 404, "error": "Not Found", "details": {"message": "PLATFORM_NOT_FOUND"}}),
            )
        return (
            200,
            {},
            json.dumps({"id": platform_id, "url": "https://canvas.instructure.com", "active": found["active"]}),
        )

    mocked.add_callback("GET", PLATFORM_GET, read)
    return reads


def check(ops, pk):
    page = f"/operator/registrations/{pk}"
    response = ops.post(f"{page}/check-access", data={"csrf_token": _csrf(ops, page)})
    assert response.status_code == 303
    return html.unescape(ops.get(response.headers["Location"]).text)


def _csrf(client, path):
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).text).group(1)


def _unknown(app, pk):
    with app.app_context():
        db.session.execute(update(Registration).where(Registration.id == pk).values(platform_active=None))
        db.session.commit()


def access_buttons(page: str) -> set[str]:
    found = set(re.findall(r'id="(grant|revoke|check-access)"', page))
    words = set(re.findall(r">\s*(Activate|Deactivate|Grant access|Revoke access)\s*<", page))
    assert not {"Activate", "Deactivate"} <= words and not {"Grant access", "Revoke access"} <= words, words
    return found


def test_an_unknown_state_at_ltiaas_is_said_and_checked_there(app, ops, stripe_api, ltiaas_api, platform_reads):
    pk = paid_registration(ops, stripe_api, ltiaas_api)
    _unknown(app, pk)
    page = ops.get(f"/operator/registrations/{pk}").text
    assert "unknown at LTIaaS" in page and 'id="access-unknown"' in page
    assert access_buttons(page) == {"check-access", "revoke"}  # one override button, never both

    after = check(ops, pk)
    assert platform_reads["count"] == 1 and ltiaas_api.platform_calls == []  # read only: LTIaaS had it right
    assert "has platform" in after and "active, as the licence says" in after
    reg = load(app, pk)
    assert reg.platform_active is True
    assert any(
        e.cause == f"operator {EMAIL}" and "Checked at LTIaaS" in e.message and "is active there" in e.message
        for e in entries(app, pk, "access")
    )
    assert access_buttons(after) == {"revoke"}  # known now: no check offered

    again = check(ops, pk)  # a second click reads nothing
    assert "Already known" in again and platform_reads["count"] == 1


def test_a_check_that_finds_ltiaas_wrong_tells_it_at_once(app, ops, stripe_api, ltiaas_api, platform_reads):
    pk = paid_registration(ops, stripe_api, ltiaas_api)
    platform_id = load(app, pk).platform_id
    ltiaas_api.platforms[platform_id]["active"] = False  # someone deactivated it in the LTIaaS portal
    _unknown(app, pk)
    after = check(ops, pk)
    assert "was told the licence's access and now has it active" in after
    assert ltiaas_api.platform_calls == [("activate", platform_id)]
    assert load(app, pk).platform_active is True
    messages = [e.message for e in entries(app, pk, "access")]
    assert any("is inactive there; the licence says active, so LTIaaS is told" in m for m in messages)


def test_a_check_ltiaas_does_not_answer_changes_nothing(app, ops, stripe_api, ltiaas_api, platform_reads):
    pk = paid_registration(ops, stripe_api, ltiaas_api)
    _unknown(app, pk)
    platform_reads["status"] = 503
    after = check(ops, pk)
    assert "LTIaaS did not say" in after and "Nothing was changed" in after
    assert load(app, pk).platform_active is None and 'id="check-access"' in after
    assert ltiaas_api.platform_calls == []


@pytest.mark.parametrize("active", [None, True, False])
@pytest.mark.parametrize("wanted", [None, True, False])
@pytest.mark.parametrize("override", [None, True, False])
def test_every_detail_page_offers_one_access_button_at_most(app, ops, active, wanted, override):
    (pk,) = seed(
        app,
        platform_id="Pseeded00001",
        platform_active=active,
        access_wanted=wanted,
        access_override=override,
        access_reason="seeded",
    )
    found = access_buttons(ops.get(f"/operator/registrations/{pk}").text)
    assert len(found & {"grant", "revoke"}) == 1
    assert ("check-access" in found) is (active is None)


def test_the_payer_is_shown_beside_the_lms_url(app, ops, stripe_api, ltiaas_api):
    card = paid_registration(ops, stripe_api, ltiaas_api, email="bursar@springfield.example")
    (invoiced,) = seed(
        app, state="completed", lms_url="https://canvas.instructure.com", payer_email="finance@shelbyville.example"
    )
    with app.app_context():
        db.session.add(
            Licence(
                registration_pk=invoiced,
                kind="invoice",
                status="open",
                billing_email="finance@shelbyville.example",
                organisation="Shelbyville School District",
                created_at=datetime(2026, 1, 1),
                updated_at=datetime(2026, 1, 1),
            )
        )
        db.session.commit()
    reg = load(app, card)
    assert reg.payer_name == "A. Admin"  # Checkout's customer_details.name, kept with the payment

    listing = ops.get("/operator/").text
    rows = re.findall(r"<tr class=\"[^\"]*\">.*?</tr>", listing, re.S)
    row = next(r for r in rows if f">{card}</a>" in r)
    lms, paid_by = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)[2:4]
    assert "canvas.instructure.com" in lms
    assert "A. Admin" in paid_by and "bursar@springfield.example" in paid_by
    row = next(r for r in rows if f">{invoiced}</a>" in r)
    assert "Shelbyville School District" in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)[3]

    detail = ops.get(f"/operator/registrations/{card}").text
    paid_by = re.search(r'<dd id="paid-by">(.*?)</dd>', detail, re.S).group(1)
    assert "A. Admin" in paid_by and "bursar@springfield.example" in paid_by
    detail = ops.get(f"/operator/registrations/{invoiced}").text
    assert "Shelbyville School District" in re.search(r'<dd id="paid-by">(.*?)</dd>', detail, re.S).group(1)
    assert ops.get(f"/operator/api/registrations/{card}").get_json()["payment"]["payer_name"] == "A. Admin"


def test_payer_names_are_escaped(app, ops):
    (pk,) = seed(app, payer_name="<script>alert(1)</script>", payer_email="x@school.example")
    page = ops.get(f"/operator/registrations/{pk}").text
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page


def test_a_failed_sign_in_focuses_the_password(client, operator):
    from tests.helpers.operators import sign_in

    response = sign_in(client, password="wrong password, twelve+")
    assert response.status_code == 401
    email = re.search(r'<input type="email"[^>]*>', response.text).group(0)
    password = re.search(r'<input type="password"[^>]*>', response.text).group(0)
    assert "autofocus" in password and "autofocus" not in email
    assert f'value="{EMAIL}"' in email  # the e-mail is kept: only the password is typed again
    assert 'aria-describedby="sign-in-error"' in password and 'role="alert"' in response.text
    first = client.get("/operator/sign-in").text
    assert "autofocus" in re.search(r'<input type="email"[^>]*>', first).group(0)
