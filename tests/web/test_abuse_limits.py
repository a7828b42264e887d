"""Bounded upstream work: what floods of the flow's routes cost LTIaaS and Stripe, what a slow LTIaaS
holds, and what people see meanwhile (paygate/web/throttling.py). Run with `-s` to see the numbers."""

import logging
import secrets
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests

from paygate.core.config import ConfigError
from paygate.web import throttling
from tests.helpers.apps import make_app, own_database
from tests.helpers.flow import open_frame
from tests.helpers.rates import per_minute
from tests.helpers.servers import PUBLIC_URL, Server, Upstreams, environment

ELSEWHERE = {"environ_base": {"REMOTE_ADDR": "198.51.100.20"}}


def ltiaas_lookups(mocked) -> int:
    return sum(1 for c in mocked.calls if c.request.method == "GET" and "/api/registrations/" in c.request.url)


def stripe_retrieves(stripe_api) -> int:
    return sum(1 for op, _ in stripe_api.calls if op == "retrieve")


def random_id() -> str:
    return secrets.token_urlsafe(12)


def on_redis(database_url: str, redis_url: str, prefix: str):
    """An app (a process, as far as rates go) on the shared Redis store, its keys under `prefix`."""
    app = make_app(database_url, ratelimit_storage_uri=redis_url)
    app.extensions["throttling"].prefix = prefix
    return app


# ---------------------------------------------------------------------------------------------
# registration ids not known here


def test_a_flood_of_random_ids_makes_a_bounded_number_of_ltiaas_calls(client, stripe_api, ltiaas_api, mocked):
    known_id, token, _ = open_frame(client, ltiaas_api)
    before = ltiaas_lookups(mocked)
    codes = Counter(
        client.get("/pre-approval", query_string={"registrationId": random_id()}).status_code for _ in range(200)
    )
    calls = ltiaas_lookups(mocked) - before
    limit = per_minute(throttling.LOOKUP) - 1  # the admin's own registration took one
    print(f"\n200 random registration ids from one address: {calls} LTIaaS calls, answers {dict(codes)}")
    assert calls == limit
    assert codes == {410: limit, 429: 200 - limit}
    refused = client.get("/pre-approval", query_string={"registrationId": random_id()})
    assert refused.status_code == 429 and "Wait a minute, then try again." in refused.text
    assert refused.headers["Retry-After"] == "60" and 'id="retry"' in refused.text
    # The admin's own registration still opens, and an admin elsewhere is not affected.
    assert f"/flow/{token}/status" in client.get(f"/pre-approval?registrationId={known_id}").text
    assert client.get(f"/flow/{token}/status").status_code == 200
    other = client.get(f"/pre-approval?registrationId={ltiaas_api.add()}", **ELSEWHERE)
    assert other.status_code == 200 and "/pay" in other.text


def test_the_same_unknown_id_fifty_times_costs_one_ltiaas_call(client, stripe_api, ltiaas_api, mocked):
    answers = [client.get("/pre-approval?registrationId=expired123") for _ in range(50)]
    print(f"\nthe same unknown id 50 times: {ltiaas_lookups(mocked)} LTIaaS call(s)")
    assert ltiaas_lookups(mocked) == 1
    assert {a.status_code for a in answers} == {410}
    assert all("Start the registration again from your LMS" in a.text for a in answers)
    # Repeats of a dead id are free: they never use up the address's lookups.
    assert client.get(f"/pre-approval?registrationId={ltiaas_api.add()}").status_code == 200


def test_a_lookup_that_failed_for_a_while_is_not_remembered(client, stripe_api, ltiaas_api):
    registration_id = ltiaas_api.add()
    ltiaas_api.get_failure = 503
    down = client.get(f"/pre-approval?registrationId={registration_id}")
    assert down.status_code == 502 and 'id="retry"' in down.text
    ltiaas_api.get_failure = None
    assert client.get(f"/pre-approval?registrationId={registration_id}").status_code == 200


def test_processes_sharing_redis_share_dead_ids_and_rates(database_url, redis_url, stripe_api, ltiaas_api, mocked):
    prefix = "paygate-test-" + secrets.token_hex(6)
    first, second = (on_redis(database_url, redis_url, prefix).test_client() for _ in range(2))
    dead = "gone" + secrets.token_hex(6)
    assert first.get(f"/pre-approval?registrationId={dead}").status_code == 410
    assert second.get(f"/pre-approval?registrationId={dead}").status_code == 410
    assert ltiaas_lookups(mocked) == 1  # the second process knew it from the store
    codes = Counter(
        (first, second)[n % 2].get("/pre-approval", query_string={"registrationId": random_id()}).status_code
        for n in range(100)
    )
    print(f"\n100 random ids over two processes sharing Redis: {ltiaas_lookups(mocked) - 1} LTIaaS calls")
    assert ltiaas_lookups(mocked) == per_minute(throttling.LOOKUP)  # one limit for both, not one each
    assert codes[429] == 100 - (per_minute(throttling.LOOKUP) - 1)


# ---------------------------------------------------------------------------------------------
# the popup and the invoice form


def test_an_admin_doing_normal_things_never_meets_a_limit(client, stripe_api, ltiaas_api):
    registration_id, token, _ = open_frame(client, ltiaas_api)
    answers = [client.get(f"/pre-approval?registrationId={registration_id}") for _ in range(30)]  # reloads
    answers += [client.get(f"/flow/{token}/status") for _ in range(200)]  # five minutes of polling
    answers += [client.get(f"/flow/{token}/pay") for _ in range(5)]  # double clicks, a retry
    answers.append(client.get(f"/flow/{token}/cancel"))
    answers.append(client.get(f"/flow/{token}/pay"))
    session_id = stripe_api.only_session()["id"]
    stripe_api.pay(session_id)
    answers += [client.get(f"/flow/{token}/paid?session_id={session_id}") for _ in range(3)]  # reloads
    answers += [client.get(f"/flow/{token}/status") for _ in range(5)]
    assert not [a.status_code for a in answers if a.status_code in (429, 503)]
    assert answers[-1].get_json()["phase"] == "done"
    for _ in range(3):  # and registers the school's other LMSes
        open_frame(client, ltiaas_api)


def test_a_flood_of_popups_and_returns_is_refused_with_a_sentence(client, stripe_api, ltiaas_api):
    _, token, _ = open_frame(client, ltiaas_api)
    codes = Counter(client.get(f"/flow/{token}/pay").status_code for _ in range(per_minute(throttling.CHECKOUT)))
    assert codes == {303: per_minute(throttling.CHECKOUT)}
    refused = client.get(f"/flow/{token}/pay")
    assert refused.status_code == 429 and "Wait a minute, then try again." in refused.text
    assert f'href="/flow/{token}/pay"' in refused.text  # the retry link

    session_id = stripe_api.only_session()["id"]  # not paid: every return asks Stripe
    returns = [client.get(f"/flow/{token}/paid?session_id={session_id}") for _ in range(50)]
    print(f"\n50 returns of one registration: {stripe_retrieves(stripe_api)} Stripe retrieves")
    assert stripe_retrieves(stripe_api) == per_minute(throttling.RETURN)
    limited = returns[-1]
    assert limited.status_code == 429 and "Return to your LMS window" in limited.text


def test_a_flood_of_invoice_forms_is_refused_in_the_frame(database_url, stripe_api, ltiaas_api):
    client = make_app(database_url, invoice_days_until_due=30).test_client()
    _, token, _ = open_frame(client, ltiaas_api)
    form = {"billing_email": "not an address", "organisation": "School", "po_number": ""}
    answers = [client.post(f"/flow/{token}/invoice", data=form) for _ in range(per_minute(throttling.INVOICE) + 1)]
    assert {a.status_code for a in answers[:-1]} == {400}
    assert answers[-1].status_code == 429 and "send the form again" in answers[-1].text
    assert "School" in answers[-1].text  # the admin's answers are kept


# ---------------------------------------------------------------------------------------------
# start-up


def test_rates_kept_per_process_are_warned_about_at_start(database_url, caplog, monkeypatch, tmp_path):
    with caplog.at_level(logging.WARNING, logger="paygate.web.throttling"):
        make_app(database_url, app_env="production", ratelimit_storage_uri="memory://", secret_key="s" * 40)
    assert "RATELIMIT_STORAGE_URI is memory:// outside APP_ENV=local" in caplog.text
    with pytest.raises(ConfigError, match="RATELIMIT_STORAGE_URI is malformed") as refused:
        make_app(database_url, ratelimit_storage_uri="nonsense://user:hunter2@host")
    assert "hunter2" not in str(refused.value)

    # gunicorn's master says it too, with several workers, whatever APP_ENV says.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))  # so loading the file creates nothing
    monkeypatch.setenv("APP_ENV", "local")
    monkeypatch.setenv("RATELIMIT_STORAGE_URI", "memory://")
    config: dict = {}
    source = Path(__file__).parents[2].joinpath("gunicorn.conf.py").read_text()
    exec(compile(source, "gunicorn.conf.py", "exec"), config)  # noqa: S102 - Python, read as gunicorn reads it
    said = []
    server = SimpleNamespace(cfg=SimpleNamespace(workers=3), log=SimpleNamespace(warning=said.append))
    config["_warn_if_rates_are_per_process"](server)
    assert said and "3 gunicorn workers" in said[0] and "3 times looser" in said[0]
    said.clear()
    monkeypatch.setenv("RATELIMIT_STORAGE_URI", "redis://redis:6379/0")
    config["_warn_if_rates_are_per_process"](server)
    assert said == []


def test_a_rate_store_that_does_not_answer_never_stops_a_payment(database_url, stripe_api, ltiaas_api):
    client = make_app(database_url, ratelimit_storage_uri="redis://127.0.0.1:1/0").test_client()
    _, token, _page = open_frame(client, ltiaas_api)
    assert client.get(f"/flow/{token}/pay").status_code == 303


# ---------------------------------------------------------------------------------------------
# a slow LTIaaS, under gunicorn (1 worker x 4 threads)


@pytest.fixture(scope="module")
def slow_service():
    database = own_database("abuse")
    url = next(database)
    upstreams = Upstreams()
    server = Server(
        environment(url, upstreams, PUBLIC_URL, LTIAAS_LOOKUP_CONCURRENCY="2", LTIAAS_TIMEOUT_SECONDS="10"),
        workers=1,
        threads=4,
    )
    try:
        server.wait_ready()
        yield server, upstreams
    finally:
        server.stop()
        upstreams.close()
        next(database, None)


@pytest.mark.postgres
def test_a_slow_ltiaas_holds_at_most_the_bound_and_healthz_still_answers(slow_service):
    server, upstreams = slow_service
    ids = [upstreams.ltiaas.add() for _ in range(12)]
    lock, in_flight, peak = threading.Lock(), [0], [0]

    def slow(what):
        if what != "get":
            return
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        time.sleep(3)
        with lock:
            in_flight[0] -= 1

    def visit(registration_id):
        started = time.monotonic()
        response = requests.get(f"{server.url}/pre-approval", params={"registrationId": registration_id}, timeout=60)
        return response, time.monotonic() - started

    upstreams.ltiaas.probe = slow
    try:
        with ThreadPoolExecutor(len(ids)) as pool:
            visits = [pool.submit(visit, i) for i in ids]
            time.sleep(1)  # the lookups are under way
            started = time.monotonic()
            health = requests.get(f"{server.url}/healthz", timeout=60)
            health_seconds = time.monotonic() - started
            answers = [v.result() for v in visits]
    finally:
        upstreams.ltiaas.probe = None
    busy = [(r, t) for r, t in answers if r.status_code == 503]
    print(
        f"\n12 simultaneous pre-approvals, LTIaaS answering in 3 s: at most {peak[0]} lookups in flight, "
        f"{len(busy)} answered busy (slowest {max(t for _, t in busy):.2f} s), /healthz in {health_seconds:.2f} s"
    )
    assert peak[0] == 2
    assert health.status_code == 200 and health_seconds < 1
    assert len(busy) == len(ids) - 2 and all(t < 2 for _, t in busy)
    for response, _ in busy:
        assert "busy" in response.text and 'id="retry"' in response.text
        assert response.headers["Retry-After"] == "5"
    assert sorted(r.status_code for r, _ in answers) == [200, 200] + [503] * (len(ids) - 2)
    # Once LTIaaS is quick again, a retry opens the registration.
    retry = requests.get(
        f"{server.url}/pre-approval", params={"registrationId": busy[0][0].url.split("=")[-1]}, timeout=30
    )
    assert retry.status_code == 200
