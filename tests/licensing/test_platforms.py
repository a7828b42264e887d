"""A licence's platforms: joining by key, the oldest platform giving way past the limit, pilots."""

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

from paygate.core.db import db, utcnow
from paygate.core.models import Licence, Registration
from paygate.licensing import access, keys, platforms, reconciler
from paygate.sales import fulfilment
from tests.fakes import Ltiaas, Stripe
from tests.helpers.apps import BASE_CONFIG, make_app
from tests.helpers.flow import open_frame
from tests.helpers.licences import buy


def _reg(registration_id: str) -> Registration:
    return db.session.scalars(select(Registration).where(Registration.registration_id == registration_id)).one()


def _join_and_complete(client, ltiaas_api, key: str, **lms) -> Registration:
    registration_id, _, _ = open_frame(client, ltiaas_api, **lms)
    with client.application.app_context():
        reg = _reg(registration_id)
        assert platforms.join(reg, key, "test").status == "ok"
        db.session.commit()
        fulfilment.complete(reg, "test")
        db.session.refresh(reg)
        db.session.expunge(reg)
        return reg


def _bought_key(client, stripe_api, ltiaas_api):
    pk, _ = buy(client, stripe_api, ltiaas_api)
    with client.application.app_context():
        reg = db.session.get(Registration, pk)
        return reg, keys.shown(platforms.key_of(reg))


def test_a_key_registers_a_second_lms_onto_the_licence_without_paying(client, stripe_api, ltiaas_api):
    first, key = _bought_key(client, stripe_api, ltiaas_api)
    sessions = len(stripe_api.sessions)
    second = _join_and_complete(client, ltiaas_api, key.lower().replace("-", " "), url="https://test.school.example")
    assert second.state == "completed" and second.licence_pk == first.licence_pk
    assert second.access_wanted is True and second.platform_active is True
    assert len(stripe_api.sessions) == sessions  # no Stripe object for the second platform
    assert ltiaas_api.calls_for(first.platform_id) == []  # the first platform stays as it was


def test_past_the_limit_the_oldest_platform_gives_way_after_the_new_one_completed(client, stripe_api, ltiaas_api):
    first, key = _bought_key(client, stripe_api, ltiaas_api)
    second = _join_and_complete(client, ltiaas_api, key, url="https://test.school.example")
    third = _join_and_complete(client, ltiaas_api, key, url="https://new.school.example")
    assert third.state == "completed" and third.platform_active is True
    assert ltiaas_api.calls_for(first.platform_id) == ["deactivate"]
    assert ltiaas_api.calls_for(second.platform_id) == []
    with client.application.app_context():
        old = db.session.get(Registration, first.id)
        assert old.replaced_at is not None and old.access_wanted is False and old.platform_active is False
        assert "Replaced on licence" in " ".join(e.message for e in old.timeline)
        # A change of the licence's money later never brings the replaced platform back.
        access.refresh(db.session.get(Registration, second.id), "test")
        assert db.session.get(Registration, first.id).access_wanted is False


def test_a_key_of_a_lapsed_licence_is_told_and_changes_nothing(client, stripe_api, ltiaas_api):
    first, key = _bought_key(client, stripe_api, ltiaas_api)
    with client.application.app_context():
        db.session.get(Licence, first.licence_pk).status = "canceled"
        db.session.commit()
    registration_id, _, _ = open_frame(client, ltiaas_api, url="https://test.school.example")
    with client.application.app_context():
        reg = _reg(registration_id)
        found = platforms.join(reg, key, "test")
        assert found.status == "lapsed" and found.licence.id == first.licence_pk
        db.session.commit()
        assert _reg(registration_id).state == "pending" and _reg(registration_id).licence_pk is None


@pytest.mark.parametrize("typed", ["PG-0000-0000-0000-0000", "x" * 10_000, "PG-7K3Q\x07M2XD", "\u0661\u0662", ""])
def test_an_unknown_or_malformed_key_joins_nothing(client, stripe_api, ltiaas_api, typed):
    _bought_key(client, stripe_api, ltiaas_api)
    registration_id, _, _ = open_frame(client, ltiaas_api, url="https://test.school.example")
    with client.application.app_context():
        assert platforms.join(_reg(registration_id), typed, "test").status in ("unknown", "not_a_key")
        db.session.commit()
        assert _reg(registration_id).state == "pending"


@pytest.fixture
def pilot_app(database_url):
    app = make_app(database_url, pilot_days=30)
    yield app
    with app.app_context():
        db.engine.dispose()


def test_a_pilot_is_active_until_its_end_then_the_worker_deactivates_it(pilot_app, stripe_api, ltiaas_api):
    client = pilot_app.test_client()
    registration_id, _, _ = open_frame(client, ltiaas_api, url="https://lms.school.example")
    with pilot_app.app_context():
        reg = _reg(registration_id)
        licence = platforms.start_pilot(reg, "test")
        assert licence.kind == "pilot" and licence.key_hash == keys.digest(platforms.key_of(reg))
        db.session.commit()
        fulfilment.complete(reg, "test")
        reg = _reg(registration_id)
        assert reg.state == "completed" and reg.platform_active is True
        assert stripe_api.sessions == {}
        ends, platform_id = licence.pilot_ends_at, reg.platform_id
        assert timedelta(days=29, hours=23) < ends - utcnow() <= timedelta(days=30)
        reconciler.sync_pending(now=ends - timedelta(minutes=1))
        assert ltiaas_api.calls_for(platform_id) == []
        reconciler.sync_pending(now=ends + timedelta(seconds=1))
        assert ltiaas_api.calls_for(platform_id) == ["deactivate"]
        reconciler.sync_pending(now=ends + timedelta(hours=1))
        assert ltiaas_api.calls_for(platform_id) == ["deactivate"]


def test_one_pilot_per_lms_url_except_on_hosts_many_schools_share(pilot_app, stripe_api, ltiaas_api):
    client = pilot_app.test_client()
    started = []
    for url in ["https://lms.school.example", "HTTPS://LMS.SCHOOL.EXAMPLE", "https://canvas.instructure.com"] * 2:
        registration_id, _, _ = open_frame(client, ltiaas_api, url=url)
        with pilot_app.app_context():
            started.append(platforms.start_pilot(_reg(registration_id), "test") is not None)
            db.session.commit()
    assert started == [True, False, True, False, False, True]


def test_no_pilot_without_pilot_days(client, stripe_api, ltiaas_api):
    registration_id, _, _ = open_frame(client, ltiaas_api, url="https://lms.school.example")
    with client.application.app_context():
        reg = _reg(registration_id)
        assert not platforms.pilot_allowed(reg) and platforms.start_pilot(reg, "test") is None
        db.session.commit()
        assert _reg(registration_id).state == "pending"


def test_two_registrations_at_once_with_one_key_at_the_limit_replace_the_oldest_once(pg_url, mocked):
    """PostgreSQL: two completions onto a full licence at the same moment; each old platform goes once."""
    app = make_app(pg_url)
    stripe_api, ltiaas_api = Stripe(mocked, BASE_CONFIG), Ltiaas(mocked, BASE_CONFIG)
    client = app.test_client()
    first, key = _bought_key(client, stripe_api, ltiaas_api)
    second = _join_and_complete(client, ltiaas_api, key, url="https://test.school.example")
    pending = []
    for n in range(2):
        registration_id, _, _ = open_frame(client, ltiaas_api, url=f"https://new{n}.school.example")
        with app.app_context():
            reg = _reg(registration_id)
            assert platforms.join(reg, key, "test").status == "ok"
            db.session.commit()
            pending.append(reg.id)
    barrier = threading.Barrier(2)
    errors = []

    def complete(pk):
        try:
            with app.app_context():
                reg = db.session.get(Registration, pk)
                barrier.wait(timeout=10)
                fulfilment.complete(reg, "thread")
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=complete, args=(pk,)) for pk in pending]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    with app.app_context():
        regs = {r.id: r for r in db.session.scalars(select(Registration)).all()}
        held = sorted(r.id for r in regs.values() if r.replaced_at is None and r.platform_id)
        assert held == sorted(pending)  # the licence ends with the newest platforms
        for old in (first, second):
            assert ltiaas_api.calls_for(old.platform_id) == ["deactivate"]
            assert regs[old.id].platform_active is False
        for pk in pending:
            assert regs[pk].state == "completed" and ltiaas_api.calls_for(regs[pk].platform_id) == []
        db.engine.dispose()
