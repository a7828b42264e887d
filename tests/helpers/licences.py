"""A registration bought by card through the whole flow, a pilot, and either read back with its licence."""

from datetime import timedelta

from sqlalchemy import select, update

from paygate.core.db import db, utcnow
from paygate.core.models import Licence, Registration
from paygate.licensing import access, keys, platforms
from paygate.sales import fulfilment
from tests.helpers.flow import open_frame, status


def buy(client, stripe_api, ltiaas_api, currency=None):
    """An admin pays and comes back: the registration is completed. Returns (pk, session)."""
    _, token, _ = open_frame(client, ltiaas_api)
    assert client.get(f"/flow/{token}/pay").status_code == 303
    session_id = stripe_api.only_session()["id"]
    stripe_api.pay(session_id, currency=currency)
    client.get(f"/flow/{token}/paid?session_id={session_id}")
    assert status(client, token)["phase"] == "done"
    with client.application.app_context():
        pk = db.session.scalars(select(Registration.id)).one()
    return pk, stripe_api.sessions[session_id]


def load(client, pk) -> Registration:
    """Registration `pk` with its timeline, licence and payments loaded (`client` may be the app)."""
    app = getattr(client, "application", client)
    with app.app_context():
        reg = db.session.get(Registration, pk)
        _ = reg.timeline, reg.licence and reg.licence.payments  # load before the context ends
        return reg


def completed_pilot(app, ltiaas_api, ends_in: timedelta | None = None):
    """A pilot started and completed through the flow (its end moved to `ends_in` from now if given): (registration
    pk, platform id, the licence key as shown)."""
    client = app.test_client()
    registration_id, _, _ = open_frame(client, ltiaas_api, url="https://lms.school.example")
    with app.app_context():
        reg = db.session.scalars(select(Registration).where(Registration.registration_id == registration_id)).one()
        assert platforms.start_pilot(reg, "test") is not None
        db.session.commit()
        fulfilment.complete(reg, "test")
        if ends_in is not None:
            db.session.execute(update(Licence).values(pilot_ends_at=utcnow() + ends_in))
            access.refresh(reg, "test")
            db.session.commit()
        reg = db.session.get(Registration, reg.id)
        assert reg.state == "completed" and reg.platform_active is True
        return reg.id, reg.platform_id, keys.shown(platforms.key_of(reg))


def licence_of(app, pk: int) -> Licence:
    """The licence registration `pk` is on, with its payments and platforms loaded, detached."""
    with app.app_context():
        reg = db.session.get(Registration, pk)
        licence = db.session.get(Licence, reg.licence_pk)
        _ = licence.payments, licence.platforms
        db.session.expunge_all()
        return licence
