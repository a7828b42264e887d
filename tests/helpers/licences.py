"""A registration bought by card through the whole flow, and read back with its licence."""

from sqlalchemy import select

from paygate.core.db import db
from paygate.core.models import Registration
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
