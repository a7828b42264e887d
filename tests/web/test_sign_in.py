"""Operator sessions and sign-in under attack: sign-out ends the session on the server, failed sign-ins
are counted before the password is checked (parallel guesses cannot pass the rate), and guesses from
elsewhere never lock an operator out. Run with `-s` to see the numbers."""

import re
import secrets
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from paygate.web import throttling
from paygate.web.operator import auth
from tests.helpers.apps import make_app
from tests.helpers.operators import EMAIL, PASSWORD, add_operator, csrf_token, sign_in
from tests.helpers.rates import per_minute
from tests.helpers.servers import serving


def sign_out(client):
    return client.post("/operator/sign-out", data={"csrf_token": csrf_token(client, "/operator/")})


def from_address(address: str) -> dict:
    return {"environ_base": {"REMOTE_ADDR": address}}


def test_a_cookie_captured_before_sign_out_is_refused_afterwards(app):
    add_operator(app)
    laptop, phone = app.test_client(), app.test_client()
    assert sign_in(laptop).status_code == 303 and sign_in(phone).status_code == 303
    captured = laptop.get_cookie("session").value
    assert sign_out(laptop).status_code == 303
    thief = app.test_client()
    thief.set_cookie("session", captured)
    page = thief.get("/operator/")
    assert page.status_code == 302 and page.headers["Location"].startswith("/operator/sign-in")
    assert thief.get("/operator/api/registrations").status_code == 401
    assert phone.get("/operator/").status_code == 200  # the operator's other session is not signed out
    assert sign_in(laptop).status_code == 303  # signing in again works, and revives no old cookie
    assert thief.get("/operator/").status_code == 302


def test_guesses_from_many_addresses_never_lock_the_operator_out(app):
    add_operator(app)
    attacker = app.test_client()
    for n in range(1, 11):  # ten addresses, each up to its limit and beyond
        answers = [
            sign_in(attacker, password="a wrong guess", **from_address(f"203.0.113.{n}")).status_code
            for _ in range(per_minute(throttling.SIGN_IN) + 2)
        ]
        assert answers == [401] * per_minute(throttling.SIGN_IN) + [429, 429]
    operator = app.test_client()
    assert sign_in(operator, **from_address("198.51.100.7")).status_code == 303
    assert operator.get("/operator/").status_code == 200


def test_one_address_guessing_many_accounts_is_throttled(app):
    add_operator(app)
    client = app.test_client()
    spray = [
        sign_in(client, email=f"user{n}@vendor.example", password="a wrong guess").status_code
        for n in range(per_minute(throttling.SIGN_IN_ANY) + 1)
    ]
    assert spray == [401] * per_minute(throttling.SIGN_IN_ANY) + [429]
    assert sign_in(client).status_code == 429  # from that address, even the real operator waits
    assert sign_in(app.test_client(), **from_address("198.51.100.7")).status_code == 303


@pytest.mark.postgres
@pytest.mark.parametrize("store", ["memory", "redis"])
def test_twenty_parallel_wrong_attempts_check_at_most_the_limit_of_passwords(pg_url, store, request, monkeypatch):
    storage = "memory://" if store == "memory" else request.getfixturevalue("redis_url")
    app = make_app(pg_url, ratelimit_storage_uri=storage)
    app.extensions["throttling"].prefix = "paygate-test-" + secrets.token_hex(6)
    add_operator(app)
    checks = []
    check_password = auth.check_password

    def counted(password_hash, password):
        checks.append(password)
        return check_password(password_hash, password)

    monkeypatch.setattr(auth, "check_password", counted)
    barrier = threading.Barrier(20)
    with serving(app) as port:
        base = f"http://127.0.0.1:{port}/operator/sign-in"

        def attempt(_):
            with requests.Session() as browser:
                form = browser.get(base, timeout=30).text
                token = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
                barrier.wait()
                return browser.post(
                    base, data={"email": EMAIL, "password": "a wrong guess", "csrf_token": token}, timeout=60
                ).status_code

        with ThreadPoolExecutor(20) as pool:
            codes = Counter(pool.map(attempt, range(20)))
    limit = per_minute(throttling.SIGN_IN)
    print(f"\n20 parallel wrong sign-ins ({store}): {len(checks)} password checks, answers {dict(codes)}")
    assert len(checks) == limit
    assert codes == {401: limit, 429: 20 - limit}


def test_sign_in_fails_closed_when_the_rate_store_does_not_answer(database_url):
    app = make_app(database_url, ratelimit_storage_uri="redis://127.0.0.1:1/0")
    add_operator(app)
    refused = sign_in(app.test_client())
    assert refused.status_code == 503 and "Signing in is unavailable for a moment" in refused.text
    assert PASSWORD not in refused.text
