"""The worker: due retries, stale attempts, abandoned registrations, its loop and its commands."""

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from paygate.core.config import ConfigError, load_settings
from paygate.core.db import db, utcnow
from paygate.core.models import Registration, State
from paygate.ops import worker
from tests.helpers.apps import BASE_CONFIG
from tests.helpers.flow import open_frame, status
from tests.helpers.fulfilment import FINISHING, Killed, load, run_worker
from tests.helpers.webhooks import deliver

ROOT = Path(__file__).resolve().parents[2]


def pay_and_deliver(client, stripe_api, ltiaas_api):
    """Open, pay and deliver the completed event for a new registration: (registration_id, token)."""
    registration_id, token, _ = open_frame(client, ltiaas_api)
    client.get(f"/flow/{token}/pay")
    session_id = next(s["id"] for s in stripe_api.sessions.values() if s["client_reference_id"] == registration_id)
    stripe_api.pay(session_id)
    assert deliver(client, stripe_api, stripe_api.event("checkout.session.completed", session_id)).status_code == 200
    return registration_id, token


def test_a_payment_nobody_tried_to_complete_is_completed_after_the_grace_period(
    client, stripe_api, ltiaas_api, monkeypatch
):
    """The web process died between committing the payment (and answering) and claiming the completion."""
    from paygate.sales import fulfilment

    def died(*args, **kwargs):
        raise Killed()

    monkeypatch.setattr(fulfilment, "complete", died)
    registration_id, token, _ = open_frame(client, ltiaas_api)
    client.get(f"/flow/{token}/pay")
    session_id = stripe_api.only_session()["id"]
    stripe_api.pay(session_id)
    with pytest.raises(Killed):
        deliver(client, stripe_api, stripe_api.event("checkout.session.completed", session_id))
    monkeypatch.undo()
    reg = load(client)
    assert reg.state == "paid" and reg.next_attempt_at is None and reg.attempt_count == 0
    assert status(client, token)["message"].startswith(FINISHING)

    grace = timedelta(seconds=client.application.config["SETTINGS"].worker_grace_seconds)
    assert run_worker(client, now=reg.paid_at + grace - timedelta(seconds=1))["attempted"] == 0
    counts = run_worker(client, now=reg.paid_at + grace + timedelta(seconds=1))
    assert counts["attempted"] == 1 and counts["completed"] == 1
    assert ltiaas_api.complete_calls == [registration_id]
    assert status(client, token)["phase"] == "done"
    assert [(e.to_state, e.cause) for e in load(client).timeline if e.kind == "state"][-2:] == [
        ("completing", "worker"),
        ("completed", "worker"),
    ]


def test_unpaid_registrations_are_abandoned_once_the_lms_token_has_run_out(client, stripe_api, ltiaas_api):
    old_id, old_token, _ = open_frame(client, ltiaas_api)
    _young_id, young_token, _ = open_frame(client, ltiaas_api)
    slow_id, slow_token, _ = open_frame(client, ltiaas_api)  # pays with a delayed method
    client.get(f"/flow/{slow_token}/pay")
    slow_session = stripe_api.only_session()["id"]
    stripe_api.pay(slow_session, payment_status="unpaid")
    deliver(client, stripe_api, stripe_api.event("checkout.session.completed", slow_session))
    with client.application.app_context():
        db.session.execute(
            update(Registration)
            .where(Registration.registration_id.in_([old_id, slow_id]))
            .values(created_at=utcnow() - timedelta(minutes=61))
        )
        db.session.commit()

    counts = run_worker(client)
    assert counts["abandoned"] == 1
    assert status(client, old_token)["state"] == "abandoned"
    assert "expired before it was paid" in status(client, old_token)["message"]
    assert status(client, young_token)["state"] == "pending"
    assert status(client, slow_token)["state"] == "pending"  # the bank has not decided yet
    entry = load(client, old_id).timeline[-1]
    assert (entry.from_state, entry.to_state, entry.cause) == ("pending", "abandoned", "worker")
    assert run_worker(client)["abandoned"] == 0

    # The bank says yes at last: money is never ignored, the abandoned registration is revived.
    stripe_api.pay(slow_session)
    deliver(client, stripe_api, stripe_api.event("checkout.session.async_payment_succeeded", slow_session))
    assert status(client, slow_token)["phase"] == "done"
    assert ltiaas_api.complete_calls == [slow_id]


def test_several_workers_at_once_never_do_the_same_attempt_twice(pg_app, stripe_api, ltiaas_api):
    """Four workers (threads, one session each) against one PostgreSQL: due retries and stale attempts."""
    client = pg_app.test_client()
    ltiaas_api.complete_failures = [503] * 30
    registrations = [pay_and_deliver(client, stripe_api, ltiaas_api)[0] for _ in range(30)]
    assert Counter(ltiaas_api.complete_calls) == dict.fromkeys(registrations, 1)
    stale = registrations[::3]  # a third were "completing" when their process died, long ago
    with pg_app.app_context():
        db.session.execute(
            update(Registration)
            .where(Registration.registration_id.in_(stale))
            .values(state=State.COMPLETING.value, attempt_started_at=utcnow() - timedelta(hours=1))
        )
        db.session.commit()

    ltiaas_api.complete_delay = 0.05
    now = utcnow() + timedelta(minutes=1)
    barrier = threading.Barrier(4)
    results: list[dict] = []
    errors: list[BaseException] = []

    def run():
        try:
            with pg_app.app_context():
                barrier.wait()
                results.append(worker.run_once(now=now))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    print(
        "\nattempts per worker:",
        [r["attempted"] for r in results],
        "stale resolved per worker:",
        [r["stale"] for r in results],
    )
    assert sum(r["attempted"] for r in results) == 30 and sum(r["completed"] for r in results) == 30
    assert sum(r["stale"] for r in results) == len(stale) and sum(r["errors"] for r in results) == 0
    assert Counter(ltiaas_api.complete_calls) == dict.fromkeys(registrations, 2)
    with pg_app.app_context():
        regs = db.session.scalars(select(Registration)).all()
        assert {r.state for r in regs} == {"completed"}
        for reg in regs:
            resolved = [
                e for e in reg.timeline if e.cause == "worker" and e.from_state == "completing" and e.to_state == "paid"
            ]
            assert len(resolved) == (1 if reg.registration_id in stale else 0)
            assert [e.to_state for e in reg.timeline if e.cause == "worker"][-2:] == ["completing", "completed"]


def test_the_loop_reconciles_periodically_survives_failures_and_stops_when_asked(app, monkeypatch):
    calls: list[bool] = []

    def fake_run_once(now=None, *, reconcile=False, prune=False, stop=None):
        calls.append(reconcile)
        if len(calls) == 2:
            raise RuntimeError("database went away")
        return {}

    monkeypatch.setattr(worker, "run_once", fake_run_once)
    stop = threading.Event()
    loop = threading.Thread(target=worker.run_forever, args=(app, 0.01, 10, stop))
    loop.start()
    deadline = time.monotonic() + 10
    while len(calls) < 5 and loop.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    loop.join(5)
    assert not loop.is_alive()
    assert len(calls) >= 5  # the loop went on after a failing pass
    assert calls[0] is True and not any(calls[1:])  # reconciled on the first pass, not again within 10 min


def test_worker_and_reconcile_commands(client, stripe_api, ltiaas_api, monkeypatch):
    from paygate.sales import fulfilment

    monkeypatch.setattr(fulfilment, "complete", lambda *a, **k: None)  # nobody completes after the answer
    registration_id, token = pay_and_deliver(client, stripe_api, ltiaas_api)
    monkeypatch.undo()
    runner = client.application.test_cli_runner()
    result = runner.invoke(args=["worker", "--once"])
    assert result.exit_code == 0, result.output
    assert ltiaas_api.complete_calls == []  # within the grace period
    assert not any(kind == "list" for kind, _ in stripe_api.calls)  # --once reconciles only if asked
    with client.application.app_context():
        db.session.execute(update(Registration).values(paid_at=utcnow() - timedelta(minutes=1)))
        db.session.commit()
    result = runner.invoke(args=["worker", "--once", "--reconcile"])
    assert result.exit_code == 0, result.output
    assert ltiaas_api.complete_calls == [registration_id]
    assert any(kind == "list" for kind, _ in stripe_api.calls)
    assert status(client, token)["phase"] == "done"


def test_a_stale_bound_shorter_than_an_attempt_is_refused():
    with pytest.raises(ConfigError, match="WORKER_STALE_SECONDS"):
        load_settings({**BASE_CONFIG, "ltiaas_timeout_seconds": 5, "worker_stale_seconds": 8})
    settings = load_settings({**BASE_CONFIG, "ltiaas_timeout_seconds": 5})
    assert settings.stale_after_seconds == 40


def _environment(database_url: str, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LTIAAS_", "STRIPE_", "WORKER_"))}
    env.update({key.upper(): str(value) for key, value in BASE_CONFIG.items()})
    env.update(DATABASE_URL=database_url, PYTHONUNBUFFERED="1", **extra)
    return env


def test_the_worker_process_stops_cleanly_on_sigterm(app, database_url):
    proc = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "wsgi", "worker", "--interval", "0.2", "--no-reconcile"],
        cwd=ROOT,
        env=_environment(database_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        lines = []
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            lines.append(line)
            if "worker pass:" in line:
                break
        assert any("worker pass:" in line for line in lines), "".join(lines)
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert "SIGTERM received" in rest and "worker stopped" in rest
