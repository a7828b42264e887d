"""The registration state machine, transition by transition."""

import pytest
from sqlalchemy import select

from paygate.core.db import db
from paygate.core.models import Registration, State, TimelineEntry
from paygate.core.registrations import TRANSITIONS, TransitionError, open_registration, transition
from paygate.gateways.ltiaas import LmsDetails
from paygate.gateways.payments import Price

LMS = LmsDetails(
    url="https://canvas.instructure.com", family="canvas", version="cloud", supported_scopes=[], supported_messages=[]
)
PRICE = Price(id="price_registration", unit_amount=4900, currency="usd", recurring=False)


@pytest.fixture
def reg(app):
    with app.app_context():
        yield open_registration("reg-1", LMS, PRICE, cause="test")


def put(reg, state: State):
    reg.state = state.value
    db.session.flush()


ALLOWED = sorted((a, b) for a, targets in TRANSITIONS.items() for b in targets)
FORBIDDEN = sorted((a, b) for a in State for b in State if b not in TRANSITIONS[a])


@pytest.mark.parametrize("source,target", ALLOWED, ids=[f"{a}->{b}" for a, b in ALLOWED])
def test_allowed_transition_moves_and_leaves_a_timeline_entry(reg, source, target):
    put(reg, source)
    assert transition(reg, target, cause="test cause", message="moved") is True
    assert reg.state == target.value
    entry = db.session.scalars(select(TimelineEntry).order_by(TimelineEntry.id.desc())).first()
    assert (entry.from_state, entry.to_state, entry.cause) == (source.value, target.value, "test cause")


@pytest.mark.parametrize("source,target", FORBIDDEN, ids=[f"{a}->{b}" for a, b in FORBIDDEN])
def test_forbidden_transition_changes_nothing(reg, source, target):
    put(reg, source)
    before = db.session.scalars(select(TimelineEntry)).all()
    assert transition(reg, target, cause="test", message="should not happen") is False
    assert reg.state == source.value
    assert db.session.scalars(select(TimelineEntry)).all() == before


def test_repeated_transition_is_taken_once(reg):
    assert transition(reg, State.PAID, cause="webhook evt_1", message="paid") is True
    assert transition(reg, State.PAID, cause="webhook evt_1", message="paid") is False
    assert [e.to_state for e in reg.timeline] == ["pending", "paid"]


def test_out_of_order_event_cannot_take_state_backwards(reg):
    for target in (State.PAID, State.COMPLETING, State.COMPLETED):
        assert transition(reg, target, cause="t", message="m")
    assert transition(reg, State.PAID, cause="late event", message="m") is False
    assert transition(reg, State.ABANDONED, cause="late event", message="m") is False
    assert reg.state == "completed"


def test_expected_sources_outside_the_machine_are_a_programming_error(reg):
    with pytest.raises(TransitionError):
        transition(reg, State.COMPLETED, cause="t", message="m", expect={State.PENDING})


def test_values_are_stored_with_the_transition(reg):
    transition(reg, State.PAID, cause="t", message="m", payer_email="a@b.example", amount_paid=4900)
    fresh = db.session.scalars(select(Registration)).one()
    assert (fresh.payer_email, fresh.amount_paid, fresh.state) == ("a@b.example", 4900, "paid")
