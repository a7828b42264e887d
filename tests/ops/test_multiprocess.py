"""Several real server processes against one PostgreSQL: one payment, a hundred deliveries, one Complete.

Three gunicorn instances (2 worker processes x 4 threads each, so six processes share the work)
serve the service; LTIaaS and Stripe are a stand-in HTTP server run by this test (the stateful fakes
of tests/fakes.py behind a real socket, so the real `stripe` library and `requests` talk to them over
HTTP, exactly as in production). For each of 20 registrations, 50 signed webhook deliveries (half of
them one event id, the others distinct events for the same session) and 50 success returns are fired
at once across the three instances. Every answer must be 2xx and LTIaaS Complete must be called
exactly once. Run with `-s` to see the numbers.

Also here, because they need real processes: a server killed (SIGKILL) while its Complete call is in
flight, and three `flask worker --once` processes racing over the same due registrations.
"""

import os
import re
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import requests
from sqlalchemy import func, select, update

from paygate.core.db import db, utcnow
from paygate.core.models import Registration, StripeEvent
from tests.helpers.apps import BASE_CONFIG, own_database
from tests.helpers.servers import PUBLIC_URL, ROOT, Server, Upstreams, environment

pytestmark = pytest.mark.postgres

ROUNDS = int(os.environ.get("MULTIPROCESS_ROUNDS", "20"))
SERVERS = 3
WEBHOOKS = 50
RETURNS = 50


# ---------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def mp_database():
    """A database of this run's own (other runs may empty the shared one meanwhile), migrated, dropped after."""
    yield from own_database("mp")


@pytest.fixture(scope="module")
def upstreams():
    up = Upstreams()
    yield up
    up.close()


@pytest.fixture(scope="module")
def servers(mp_database, upstreams):
    started = []
    try:
        for _ in range(SERVERS):
            started.append(Server(environment(mp_database, upstreams, PUBLIC_URL)))
        for server in started:
            server.wait_ready()
        yield started
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def db_app(mp_database):
    """An app on the multiprocess database, for reading and arranging rows directly."""
    from paygate.application import create_app

    app = create_app({**BASE_CONFIG, "database_url": mp_database})
    yield app
    with app.app_context():
        db.engine.dispose()


def open_registration(server_url: str, upstreams: Upstreams) -> tuple[str, str, str]:
    """Pre-approval and Pay through the service, then pay at the stand-in Stripe: (rid, token, session)."""
    registration_id = upstreams.ltiaas.add()
    page = requests.get(f"{server_url}/pre-approval", params={"registrationId": registration_id}, timeout=30)
    assert page.status_code == 200, page.text
    token = re.search(r'data-status-url="/flow/([^/]+)/status"', page.text).group(1)
    popup = requests.get(f"{server_url}/flow/{token}/pay", allow_redirects=False, timeout=30)
    assert popup.status_code == 303, popup.text
    session_id = next(
        s["id"] for s in list(upstreams.stripe.sessions.values()) if s["client_reference_id"] == registration_id
    )
    upstreams.stripe.pay(session_id)
    return registration_id, token, session_id


# ---------------------------------------------------------------------------------------------
# a payment delivered a hundred times at once


def test_a_payment_delivered_100_times_at_once_to_3_servers_completes_once(servers, upstreams, db_app):
    upstreams.ltiaas.complete_delay = 0.3  # widens the window in which racing callers could slip in
    stripe = upstreams.stripe
    pool = ThreadPoolExecutor(max_workers=WEBHOOKS + RETURNS)
    all_latencies: list[float] = []
    statuses: Counter = Counter()
    rounds = []
    try:
        for n in range(ROUNDS):
            registration_id, token, session_id = open_registration(servers[n % SERVERS].url, upstreams)
            repeated = stripe.event("checkout.session.completed", session_id)
            requests_to_fire = []
            for i in range(WEBHOOKS):
                if i % 2 == 0:
                    event = repeated  # the same event id, 25 times
                else:
                    kind = ("checkout.session.completed", "checkout.session.async_payment_succeeded")[i // 2 % 2]
                    event = stripe.event(kind, session_id)
                body, headers = stripe.signed(event)
                requests_to_fire.append(("webhook", "POST", "/webhooks/stripe", body, headers))
            for _ in range(RETURNS):
                requests_to_fire.append(("return", "GET", f"/flow/{token}/paid?session_id={session_id}", None, {}))
            barrier = threading.Barrier(len(requests_to_fire))

            def fire(i, what, barrier=barrier):
                kind, method, path, body, headers = what
                url = servers[i % SERVERS].url + path
                barrier.wait()
                started = time.monotonic()
                try:
                    response = requests.request(
                        method, url, data=body, headers=headers, timeout=60, allow_redirects=False
                    )
                    code = response.status_code
                except requests.RequestException as exc:
                    code = type(exc).__name__
                return kind, code, time.monotonic() - started

            wall = time.monotonic()
            answers = list(pool.map(fire, range(len(requests_to_fire)), requests_to_fire))
            wall = time.monotonic() - wall
            codes = Counter((kind, code) for kind, code, _ in answers)
            statuses.update(codes)
            latencies = [t for _, _, t in answers]
            all_latencies.extend(latencies)
            frame = requests.get(f"{servers[0].url}/flow/{token}/status", timeout=30).json()
            calls = upstreams.ltiaas.complete_calls.count(registration_id)
            rounds.append((n, wall, max(latencies), calls, dict(codes), frame["phase"]))
            print(
                f"round {n:2d}: {len(answers)} requests in {wall:5.2f} s, slowest {max(latencies):5.2f} s, "
                f"Complete calls {calls}, answers {dict(codes)}, frame {frame['phase']}"
            )
            assert calls == 1, f"Complete called {calls} times for {registration_id}"
            assert all(isinstance(code, int) and 200 <= code < 300 for _, code, _ in answers), codes
            assert frame["phase"] == "done" and frame["state"] == "completed"
            with db_app.app_context():
                reg = db.session.scalars(
                    select(Registration).where(Registration.registration_id == registration_id)
                ).one()
                assert [e.to_state for e in reg.timeline if e.kind == "state"] == [
                    "pending",
                    "paid",
                    "completing",
                    "completed",
                ]
                events = db.session.execute(
                    select(func.count(), func.sum(StripeEvent.deliveries)).where(StripeEvent.session_id == session_id)
                ).one()
                assert tuple(events) == (1 + WEBHOOKS // 2, WEBHOOKS)
    finally:
        pool.shutdown(wait=True)
        upstreams.ltiaas.complete_delay = 0.0
    total = len(rounds) * (WEBHOOKS + RETURNS)
    print(
        f"\n{len(rounds)} registrations x {WEBHOOKS + RETURNS} simultaneous requests = {total} requests "
        f"over {SERVERS} gunicorn instances (2 processes x 4 threads each) on one PostgreSQL"
    )
    print(f"Complete calls: {len(upstreams.ltiaas.complete_calls)} for {len(rounds)} registrations")
    print(f"answers: {dict(statuses)}")
    logs = "".join(server.output(tail=0) for server in servers)
    # Callers that read "pending" and then lost the move to paid raced on the same row for real.
    print(
        f"lost races: {logs.count('pending -> paid not taken')} on pending -> paid, "
        f"{logs.count('paid -> completing not taken')} on paid -> completing; "
        f"5xx or tracebacks in server logs: {logs.count('Traceback')}"
    )
    assert "Traceback" not in logs
    print(
        f"latency: median {statistics.median(all_latencies):.2f} s, "
        f"p95 {statistics.quantiles(all_latencies, n=20)[18]:.2f} s, max {max(all_latencies):.2f} s; "
        f"round wall time median {statistics.median(r[1] for r in rounds):.2f} s"
    )


# ---------------------------------------------------------------------------------------------
# a server killed while its Complete call is in flight


def test_a_server_killed_mid_completion_is_resolved_by_the_worker_process(mp_database, upstreams, db_app):
    victim = Server(environment(mp_database, upstreams, PUBLIC_URL), workers=1, threads=2)
    try:
        victim.wait_ready()
        registration_id, _token, session_id = open_registration(victim.url, upstreams)
        upstreams.ltiaas.complete_delay = 2.0  # LTIaaS registers the platform, slowly
        body, headers = upstreams.stripe.signed(upstreams.stripe.event("checkout.session.completed", session_id))
        webhook = threading.Thread(
            target=lambda: _swallow(
                requests.post, f"{victim.url}/webhooks/stripe", data=body, headers=headers, timeout=30
            )
        )
        webhook.start()
        deadline = time.monotonic() + 20
        while registration_id not in upstreams.ltiaas.complete_calls and time.monotonic() < deadline:
            time.sleep(0.02)
        assert registration_id in upstreams.ltiaas.complete_calls
        victim.kill()  # SIGKILL, mid-call
        webhook.join(30)
        time.sleep(2.5)  # LTIaaS finishes its side: the id is now used up
        upstreams.ltiaas.complete_delay = 0.0
    finally:
        victim.stop()
    with db_app.app_context():
        reg = db.session.scalars(select(Registration).where(Registration.registration_id == registration_id)).one()
        assert reg.state == "completing" and reg.payment_session_id == session_id
        # Let the bound pass without waiting for it: the attempt started long ago.
        db.session.execute(
            update(Registration)
            .where(Registration.id == reg.id)
            .values(attempt_started_at=utcnow() - timedelta(hours=1))
        )
        db.session.commit()

    worker = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "worker", "--once"],
        cwd=ROOT,
        env=environment(mp_database, upstreams, PUBLIC_URL),
        capture_output=True,
        text=True,
        timeout=60,
    )
    print("\n" + worker.stderr[-1500:])
    assert worker.returncode == 0, worker.stderr
    assert "cut short" in worker.stderr and "needs an operator: completion_uncertain" in worker.stderr
    assert upstreams.ltiaas.complete_calls.count(registration_id) == 2
    with db_app.app_context():
        reg = db.session.scalars(select(Registration).where(Registration.registration_id == registration_id)).one()
        assert reg.state == "needs_attention" and reg.attention == "completion_uncertain"
        assert reg.payment_session_id == session_id and reg.refund_id is None
        assert [e.to_state for e in reg.timeline if e.kind == "state"] == [
            "pending",
            "paid",
            "completing",
            "paid",
            "completing",
            "needs_attention",
        ]


def _swallow(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except requests.RequestException:
        return None


# ---------------------------------------------------------------------------------------------
# several worker processes at once


def test_three_worker_processes_share_due_completions_without_doing_any_twice(servers, upstreams, db_app, mp_database):
    upstreams.ltiaas.complete_failures = [503] * 24
    registrations = []
    for n in range(24):  # each paid, its first attempt refused with 503: a retry is scheduled
        registration_id, _, session_id = open_registration(servers[n % SERVERS].url, upstreams)
        body, headers = upstreams.stripe.signed(upstreams.stripe.event("checkout.session.completed", session_id))
        assert (
            requests.post(
                f"{servers[n % SERVERS].url}/webhooks/stripe", data=body, headers=headers, timeout=30
            ).status_code
            == 200
        )
        registrations.append(registration_id)
    # The webhook is answered first; its completion attempt runs right after the answer.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with db_app.app_context():
            tried = db.session.scalar(
                select(func.count())
                .select_from(Registration)
                .where(
                    Registration.registration_id.in_(registrations),
                    Registration.state == "paid",
                    Registration.attempt_count == 1,
                )
            )
        if tried == len(registrations):
            break
        time.sleep(0.05)
    assert not upstreams.ltiaas.complete_failures
    with db_app.app_context():
        db.session.execute(
            update(Registration)
            .where(Registration.registration_id.in_(registrations))
            .values(next_attempt_at=utcnow() - timedelta(seconds=1))
        )
        db.session.commit()

    upstreams.ltiaas.complete_delay = 0.1
    env = environment(mp_database, upstreams, PUBLIC_URL)
    try:
        workers = [
            subprocess.Popen(
                [sys.executable, "-m", "flask", "--app", "wsgi", "worker", "--once"],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(3)
        ]
        outputs = [w.communicate(timeout=90)[1] for w in workers]
    finally:
        upstreams.ltiaas.complete_delay = 0.0
    attempted = [int(re.search(r"worker pass: .*attempted=(\d+)", out).group(1)) for out in outputs]
    print(f"\nattempts per worker process: {attempted}")
    assert all(w.returncode == 0 for w in workers), outputs
    assert sum(attempted) == len(registrations)
    calls = Counter(upstreams.ltiaas.complete_calls)
    assert all(calls[r] == 2 for r in registrations)  # the refused first attempt, and one retry
    with db_app.app_context():
        done = db.session.scalar(
            select(func.count())
            .select_from(Registration)
            .where(Registration.registration_id.in_(registrations), Registration.state == "completed")
        )
        assert done == len(registrations)
