"""What the frame confirms before the LMS closes its dialog: what was registered and bought, the licence key and its
page, a reference, and Finish (the LTIaaS html runs only when the admin presses it)."""

import logging
import re

from sqlalchemy import select

from paygate.core.db import db
from paygate.core.models import Licence, Registration
from paygate.licensing import keys, platforms
from tests.helpers.flow import open_frame, status


def _pay(client, stripe_api, ltiaas_api, headers=None):
    _, token, _ = open_frame(client, ltiaas_api, url="https://lms.school.example")
    assert client.get(f"/flow/{token}/pay").status_code == 303
    session_id = stripe_api.only_session()["id"]
    stripe_api.pay(session_id)
    paid_page = client.get(f"/flow/{token}/paid?session_id={session_id}", headers=headers or {})
    return token, paid_page


def _key_of(client, token) -> str:
    with client.application.app_context():
        reg = db.session.scalars(select(Registration).where(Registration.flow_token == token)).one()
        return keys.shown(platforms.key_of(reg))


def test_the_done_status_confirms_with_the_key_its_licence_page_a_reference_and_finish(client, stripe_api, ltiaas_api):
    token, _ = _pay(client, stripe_api, ltiaas_api)
    done = status(client, token)
    assert done["phase"] == "done" and "org.imsglobal.lti.close" in done["html"]
    assert "press Finish" in done["message"] and "closes by itself" not in done["message"]
    key = _key_of(client, token)
    shown = done["confirmation"]
    assert re.match(r"^PG(-[0-9A-Z]{4}){4}$", key)
    assert f'<code id="licence-key">{key}</code>' in shown
    assert 'id="copy-key"' in shown and 'data-copied-text="Copied"' in shown
    assert "registers another LMS without paying again" in shown
    link = re.search(r'<a id="licence-link" href="([^"]+)" target="_blank" rel="noopener noreferrer">', shown)
    assert link and link.group(1) == f"http://paygate.test/licence/{key}"  # absolute, on PUBLIC_URL
    with client.application.app_context():
        pk = db.session.scalars(select(Registration.id)).one()
    assert f"Registration {pk}" in shown  # the number Stripe's metadata carries, which operators search by
    assert "https://lms.school.example" in shown and "49.00 USD, paid once" in shown
    assert '<button type="button" class="button" id="finish">Finish</button>' in shown


def test_the_pending_poll_carries_no_confirmation(client, stripe_api, ltiaas_api):
    _, token, _ = open_frame(client, ltiaas_api)
    pending = status(client, token)
    assert pending["phase"] == "pay" and "confirmation" not in pending and "html" not in pending


def test_the_payment_popup_shows_the_confirmation_without_finish_and_stays_open(client, stripe_api, ltiaas_api):
    token, page = _pay(client, stripe_api, ltiaas_api)
    assert page.status_code == 200
    key = _key_of(client, token)
    assert f'<code id="licence-key">{key}</code>' in page.text
    assert f'href="http://paygate.test/licence/{key}"' in page.text
    assert 'id="finish"' not in page.text and "press Finish there" in page.text
    assert "window.close" not in page.text  # it no longer closes itself
    assert "flow.js" in page.text  # the Copy button's script, under the page's CSP


def test_the_pre_approval_page_of_a_finished_registration_shows_the_confirmation(client, stripe_api, ltiaas_api):
    token, _ = _pay(client, stripe_api, ltiaas_api)
    with client.application.app_context():
        registration_id = db.session.scalars(select(Registration.registration_id)).one()
    page = client.get(f"/pre-approval?registrationId={registration_id}")
    assert page.status_code == 200
    assert f'<code id="licence-key">{_key_of(client, token)}</code>' in page.text and 'id="finish"' in page.text


def test_a_replaced_key_is_not_shown_again(client, stripe_api, ltiaas_api):
    token, _ = _pay(client, stripe_api, ltiaas_api)
    old = _key_of(client, token)
    with client.application.app_context():
        licence = db.session.scalars(select(Licence)).one()
        licence.key_hash = keys.digest(keys.new())  # an admin replaced it on the licence page
        db.session.commit()
    shown = status(client, token)["confirmation"]
    assert old not in shown and old.replace("-", "") not in shown
    assert "licence key was replaced" in shown and 'id="licence-link"' not in shown and 'id="copy-key"' not in shown
    assert 'id="finish"' in shown


def test_finish_and_the_confirmation_are_in_the_admins_language(client, stripe_api, ltiaas_api):
    token, _ = _pay(client, stripe_api, ltiaas_api)
    for language, finish, copy in (("es", "Terminar", "Copiar"), ("fr", "Terminer", "Copier")):
        body = client.get(f"/flow/{token}/status", headers={"Accept-Language": language}).get_json()
        assert f'id="finish">{finish}</button>' in body["confirmation"]
        assert f">{copy}</button>" in body["confirmation"]
        assert "Finish" not in body["message"]


def test_the_key_is_never_logged(client, stripe_api, ltiaas_api, caplog):
    with caplog.at_level(logging.DEBUG):
        token, _ = _pay(client, stripe_api, ltiaas_api)
        status(client, token)
        key = _key_of(client, token)
        # The key typed into a second LMS's frame is not logged either.
        _, second, _ = open_frame(client, ltiaas_api, url="https://test.school.example")
        assert client.post(f"/flow/{second}/key", data={"key": key.lower()}).status_code == 200
        status(client, second)
    assert caplog.records
    logged = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert key not in logged and key.replace("-", "")[2:] not in logged and key.lower() not in logged
