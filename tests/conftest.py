"""Fixtures: an app on SQLite and on PostgreSQL, migrated by Alembic, emptied before each test; the fakes of
Stripe and LTIaaS; and the registrations and operators that tests of several folders start from."""

import pytest
import responses

from paygate.core.db import db
from tests.fakes import Ltiaas, Stripe
from tests.helpers.apps import BASE_CONFIG, make_app, postgres_or_skip
from tests.helpers.flow import open_frame
from tests.helpers.operators import EMAIL, add_operator, sign_in


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path_factory):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.getbasetemp() / 'paygate-tests.sqlite'}"
    return postgres_or_skip()


@pytest.fixture
def pg_url():
    return postgres_or_skip()


def _app_on(database_url):
    app = make_app(database_url)
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def app(database_url):
    yield from _app_on(database_url)


@pytest.fixture
def pg_app(pg_url):
    yield from _app_on(pg_url)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def mocked():
    """Every outgoing HTTP call goes through `responses`; an unexpected one fails the test."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


@pytest.fixture
def stripe_api(mocked):
    return Stripe(mocked, BASE_CONFIG)


@pytest.fixture
def ltiaas_api(mocked):
    return Ltiaas(mocked, BASE_CONFIG)


# ---------------------------------------------------------------------------------------------
# Where many tests start: a Checkout Session open or paid, a yearly Price, an operator signed in


@pytest.fixture
def checkout(client, stripe_api, ltiaas_api):
    """A registration with an open Checkout Session: (registration_id, token, session_id)."""
    registration_id, token, _ = open_frame(client, ltiaas_api)
    client.get(f"/flow/{token}/pay")
    return registration_id, token, stripe_api.only_session()["id"]


@pytest.fixture
def paid(client, stripe_api, ltiaas_api):
    """A registration whose Checkout Session Stripe says is paid: (registration_id, token, session_id)."""
    registration_id, token, _ = open_frame(client, ltiaas_api)
    assert client.get(f"/flow/{token}/pay").status_code == 303
    session_id = stripe_api.only_session()["id"]
    stripe_api.pay(session_id)
    return registration_id, token, session_id


@pytest.fixture
def yearly(stripe_api):
    """The configured Price is a yearly one: Checkout sells a subscription."""
    stripe_api.set_price(recurring="year")


@pytest.fixture
def operator(app):
    add_operator(app)
    return EMAIL


@pytest.fixture
def ops(client, operator):
    """The test client, signed in as an operator."""
    assert sign_in(client).status_code == 303
    return client
