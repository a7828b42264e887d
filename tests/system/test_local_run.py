"""A newcomer's first hour: `make run`'s process (`python -m paygate.application.local`) on a chosen PORT, its
SECRET_KEY kept in instance/ so that sign-ins survive a restart, the status poll's access line at
DEBUG, a clean stop (the LMS stand-in's screens, in a browser: tests/browser/test_local_standins.py)."""

import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from paygate.application import local
from tests.helpers.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
FLASK = str(Path(sys.executable).with_name("flask"))


def test_the_local_secret_key_is_made_once_then_reused(tmp_path):
    first = local.local_secret_key(str(tmp_path / "instance"))
    assert len(first) >= 32
    path = tmp_path / "instance" / local.SECRET_KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # owner-only
    assert local.local_secret_key(str(tmp_path / "instance")) == first


def test_port_and_secret_key_of_the_local_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no .env here
    for name in ("PORT", "PUBLIC_URL", "SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(local, "local_secret_key", lambda path: "kept-in-instance-" + "k" * 32)
    assert local.local_overrides() == {"app_env": "local", "secret_key": "kept-in-instance-" + "k" * 32}

    monkeypatch.setenv("PORT", "5017")
    assert local.local_overrides()["public_url"] == "http://127.0.0.1:5017"
    monkeypatch.setenv("SECRET_KEY", "s" * 40)  # a key of one's own is never replaced
    monkeypatch.setenv("PUBLIC_URL", "http://127.0.0.1:8080")
    assert local.local_overrides() == {"app_env": "local"}

    (tmp_path / ".env").write_text("port=not-a-port\n")
    monkeypatch.delenv("PORT")
    with pytest.raises(SystemExit, match="PORT is malformed"):
        local.local_overrides()


def _wait_until_up(base: str, process, log: Path) -> None:
    for _ in range(100):
        if process.poll() is not None:
            pytest.fail(f"the local run exited: {log.read_text()[-2000:]}")
        try:
            if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    pytest.fail("the local run did not start")


def _stop(process) -> int:
    process.send_signal(signal.SIGTERM)  # what Ctrl+C does too (SIGINT)
    return process.wait(timeout=20)


def test_the_local_run_on_its_port_keeps_sign_ins_across_a_restart_and_polls_quiet(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "PUBLIC_URL", "DATABASE_URL", "PORT")}
    env.update(APP_ENV="local", DATABASE_URL=f"sqlite:///{tmp_path / 'local.sqlite'}", PORT=str(port))
    subprocess.run([FLASK, "--app", "wsgi", "db", "upgrade"], cwd=ROOT, env=env, check=True, capture_output=True)
    created = subprocess.run(
        [FLASK, "--app", "wsgi", "operator", "create", "ops@local.example", "--password-stdin"],
        cwd=ROOT,
        env=env,
        input="twelve chars!\n",
        text=True,
        capture_output=True,
    )
    assert created.returncode == 0, created.stderr
    base = f"http://127.0.0.1:{port}"

    log = tmp_path / "run.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "paygate.application.local"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        _wait_until_up(base, process, log)
        frame = requests.get(
            f"{base}/_local/ltiaas/lti/register",
            params={"openid_configuration": "x", "registration_token": "local-token-t"},
            timeout=30,
        )
        token = re.search(r'data-status-url="/flow/([^/"]+)/status"', frame.text).group(1)
        for _ in range(3):
            assert requests.get(f"{base}/flow/{token}/status", timeout=10).status_code == 200

        operator = requests.Session()
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', operator.get(f"{base}/operator/sign-in").text).group(1)
        signed = operator.post(
            f"{base}/operator/sign-in",
            allow_redirects=False,
            data={"csrf_token": csrf, "email": "ops@local.example", "password": "twelve chars!"},
        )
        assert signed.status_code == 303
        assert operator.get(f"{base}/operator/", allow_redirects=False).status_code == 200
        assert _stop(process) == 0
    finally:
        if process.poll() is None:
            process.kill()
    first_run = log.read_text()
    assert f"http://localhost:{port}/_local/lms" in first_run and "Stopped." in first_run
    assert "GET /pre-approval" in first_run  # access lines are logged...
    assert "/status" not in first_run  # ...but the frame's poll only at DEBUG

    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "paygate.application.local"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        _wait_until_up(base, process, log)
        # The same cookie, after a restart: still signed in (the SECRET_KEY was kept in instance/).
        assert operator.get(f"{base}/operator/", allow_redirects=False).status_code == 200
    finally:
        _stop(process) if process.poll() is None else None
        if process.poll() is None:
            process.kill()
