"""An admin replaces a licence key from the registration's page: the new key shown once on the answer (never in the
timeline, a log line or a later page), the old key and its links ended, who and why in the timeline; a form sent
twice replaces once; support and viewers may not; a registration on no licence gets one sentence."""

import json
import logging
import re
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select

from paygate.core.db import db
from paygate.core.models import Licence, Registration, TimelineEntry
from paygate.licensing import keys, platforms
from tests.helpers.licences import buy
from tests.helpers.operators import EMAIL, PASSWORD, add_operator, csrf_token, entries, form_id, seed, sign_in
from tests.web.test_operator_statuses import text_of


def _path(pk: int) -> str:
    return f"/operator/registrations/{pk}/licence-key"


def _form(client, pk: int, **fields) -> dict:
    """The detail page's key form, filled: its CSRF token and one-time id, a reason and the confirmation."""
    page = client.get(f"/operator/registrations/{pk}").text
    return {
        "csrf_token": re.search(r'name="csrf_token" value="([^"]+)"', page).group(1),
        "form_id": form_id(page, _path(pk)),
        "text": "the school's key was posted on a public forum",
        "told": "yes",
        **fields,
    }


def _key_of(app, pk) -> str:
    """The key the school was shown (the one derived from its flow), normal form."""
    with app.app_context():
        return platforms.key_of(db.session.get(Registration, pk))


def _hint(app, pk) -> str:
    with app.app_context():
        return db.session.get(Registration, pk).licence.key_hint


def _everything_said(app, pk) -> str:
    """Every timeline message and detail of the registration, as text."""
    with app.app_context():
        rows = db.session.scalars(select(TimelineEntry).where(TimelineEntry.registration_pk == pk)).all()
        return " ".join(f"{e.message} {json.dumps(e.details)}" for e in rows)


def _new_key(answer) -> str:
    return re.search(r'id="new-key">([^<]+)<', answer.text).group(1)


def test_an_admin_replaces_the_key_and_sees_it_once(ops, stripe_api, ltiaas_api, caplog):
    caplog.set_level(logging.DEBUG)
    pk, _ = buy(ops, stripe_api, ltiaas_api)
    app = ops.application
    old = _key_of(app, pk)
    assert ops.get(f"/licence/{keys.shown(old)}").status_code == 200
    answer = ops.post(_path(pk), data=_form(ops, pk))
    assert answer.status_code == 200 and answer.headers["Cache-Control"] == "no-store"
    new = _new_key(answer)
    assert keys.normal(new) != old and keys.normal(new)[-4:] == _hint(app, pk)
    said = text_of(answer.text)
    assert "stopped working now" in said and "Tell the school the new key" in said
    assert f"http://paygate.test/licence/{new}" in said
    # The old key opens nothing; the new one opens the licence page.
    assert ops.get(f"/licence/{keys.shown(old)}").status_code == 404
    assert ops.get(f"/licence/{new}").status_code == 200
    # The timeline names the operator and the reason, and the new key's last 4 characters only.
    timeline = _everything_said(app, pk)
    assert f"Licence key replaced by operator {EMAIL}" in timeline
    assert "the school's key was posted on a public forum" in timeline
    assert f"the new one ends {keys.normal(new)[-4:]}" in timeline
    # Shown once: not on the registration's page after it (no flash message carries it), never logged.
    after = ops.get(f"/operator/registrations/{pk}").text
    logged = " ".join(r.getMessage() for r in caplog.records)
    for k in (new, keys.normal(new), old, keys.shown(old)):
        assert k not in timeline and k not in after and k not in logged


def test_the_same_form_sent_twice_replaces_the_key_once(ops, stripe_api, ltiaas_api):
    pk, _ = buy(ops, stripe_api, ltiaas_api)
    app = ops.application
    fields = _form(ops, pk)
    first = ops.post(_path(pk), data=fields)
    assert first.status_code == 200
    hint = _hint(app, pk)
    again = ops.post(_path(pk), data=fields)
    assert again.status_code == 409 and 'id="new-key"' not in again.text
    assert "This form was sent already" in text_of(again.text)
    assert _hint(app, pk) == hint
    assert ops.get(f"/licence/{_new_key(first)}").status_code == 200
    assert len([e for e in entries(app, pk, "licence") if "Licence key replaced" in e.message]) == 1


def test_a_key_can_be_replaced_again_with_a_new_form(ops, stripe_api, ltiaas_api):
    pk, _ = buy(ops, stripe_api, ltiaas_api)
    first = _new_key(ops.post(_path(pk), data=_form(ops, pk)))
    second = _new_key(ops.post(_path(pk), data=_form(ops, pk, text="the first new key was lost too")))
    assert first != second
    assert ops.get(f"/licence/{first}").status_code == 404 and ops.get(f"/licence/{second}").status_code == 200


@pytest.mark.parametrize("role", ["support", "viewer"])
def test_support_and_viewers_may_not_replace_a_key(app, ops, stripe_api, ltiaas_api, role):
    pk, _ = buy(ops, stripe_api, ltiaas_api)
    fields = _form(ops, pk)  # an admin's form, sent by someone who may not
    hint, old = _hint(app, pk), _key_of(app, pk)
    add_operator(app, email=f"{role}-only@vendor.example", role=role)
    other = app.test_client()
    assert sign_in(other, email=f"{role}-only@vendor.example", password=PASSWORD).status_code == 303
    page = other.get(f"/operator/registrations/{pk}").text
    assert "Replace the licence key" not in page and _path(pk) not in page
    refused = other.post(_path(pk), data={**fields, "csrf_token": csrf_token(other, f"/operator/registrations/{pk}")})
    assert refused.status_code == 403 and f"Your role ({role}) may not do this" in refused.text
    assert _hint(app, pk) == hint and other.get(f"/licence/{keys.shown(old)}").status_code == 200


def test_a_registration_on_no_licence_gets_one_sentence_and_nothing_changes(app, ops):
    (pk,) = seed(app)
    page = ops.get(f"/operator/registrations/{pk}").text
    assert "Replace the licence key" not in page
    before = len(entries(app, pk))
    fields = {"csrf_token": csrf_token(ops, f"/operator/registrations/{pk}"), "form_id": "f" * 22}
    answer = ops.post(_path(pk), data={**fields, "text": "lost", "told": "yes"})
    assert answer.status_code == 409
    assert "This registration's platform is on no licence, so there is no key to replace." in text_of(answer.text)
    assert len(entries(app, pk)) == before
    with app.app_context():
        assert db.session.scalars(select(Licence)).all() == []


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"text": "  "}, "Say why the key is replaced"),
        ({"told": ""}, "Confirm that the school will be told the new key"),
        ({"form_id": "short"}, "Reload the page and try again"),
    ],
)
def test_a_form_without_a_reason_or_the_confirmation_changes_nothing(ops, stripe_api, ltiaas_api, fields, says):
    pk, _ = buy(ops, stripe_api, ltiaas_api)
    hint, before = _hint(ops.application, pk), len(entries(ops.application, pk))
    answer = ops.post(_path(pk), data=_form(ops, pk, **fields))
    assert answer.status_code == 400 and says in text_of(answer.text) and 'id="new-key"' not in answer.text
    assert _hint(ops.application, pk) == hint and len(entries(ops.application, pk)) == before


def test_the_same_form_sent_at_once_replaces_the_key_once(pg_app, stripe_api, ltiaas_api):
    add_operator(pg_app)
    client = pg_app.test_client()
    sign_in(client)
    pk, _ = buy(client, stripe_api, ltiaas_api)
    fields = _form(client, pk)
    at_once = 4
    clients = []
    for _ in range(at_once):  # each its own session and CSRF token: the same form, sent 4 times at once
        own = pg_app.test_client()
        sign_in(own)
        clients.append((own, csrf_token(own, f"/operator/registrations/{pk}")))
    start = threading.Barrier(at_once)

    def submit(pair):
        own, token = pair
        start.wait()
        return own.post(_path(pk), data={**fields, "csrf_token": token}).status_code

    with ThreadPoolExecutor(at_once) as pool:
        assert sorted(pool.map(submit, clients)) == [200] + [409] * (at_once - 1)
    assert len([e for e in entries(pg_app, pk, "licence") if "Licence key replaced" in e.message]) == 1
