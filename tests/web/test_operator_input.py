"""What the fuzz test (tests/web/test_fuzz.py) found on the operator side, pinned: a NUL in the sign-in e-mail,
or a control character in a note, a resolution or an override's reason, gets one sentence and changes
nothing (PostgreSQL refused the NUL: a 500). Line breaks in a note stay welcome."""

import pytest

from tests.helpers.operators import EMAIL, add_operator, entries, form_id, load, post, seed, sign_in


@pytest.mark.parametrize("email", ["support\x00@vendor.example", "\x00", EMAIL + "\x07"])
def test_a_control_character_in_the_sign_in_email_is_a_wrong_email(app, client, email):
    add_operator(app)
    response = sign_in(client, email=email)
    assert response.status_code == 401 and "Wrong e-mail or password." in response.text
    assert sign_in(client).status_code == 303  # the account itself is untouched


@pytest.mark.parametrize(
    "action, field, extra, sentence",
    [
        ("notes", "text", {}, "The note cannot contain control characters."),
        ("resolve", "text", {}, "The text cannot contain control characters."),
        ("access", "text", {"override": "revoke"}, "The reason cannot contain control characters."),
    ],
)
def test_a_control_character_in_an_operators_text_gets_a_sentence(app, ops, action, field, extra, sentence):
    pk = seed(app, attention="duplicate_payment", payment_intent_id="pi_1", payment_session_id="cs_1")[0]
    before = len(entries(app, pk))
    path = f"/operator/registrations/{pk}/{action}"
    page = ops.get(f"/operator/registrations/{pk}").text
    response = post(ops, path, {field: "Called\x00 the school", "form_id": form_id(page, path), **extra})
    assert response.status_code == 303
    assert sentence in ops.get(response.headers["Location"]).text
    reg = load(app, pk)
    assert len(entries(app, pk)) == before and reg.attention == "duplicate_payment" and reg.access_override is None


def test_a_note_keeps_its_line_breaks(app, ops):
    pk = seed(app)[0]
    path = f"/operator/registrations/{pk}/notes"
    text = "Called the school.\r\nThey will re-register:\tMonday."
    response = post(ops, path, {"text": text, "form_id": form_id(ops.get(f"/operator/registrations/{pk}").text, path)})
    assert "Note added" in ops.get(response.headers["Location"]).text
    assert entries(app, pk, "note")[0].message == text
