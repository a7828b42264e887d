"""Where an operator is sent after signing in: only the operator pages, compared exactly (a prefix check
without the slash let `/operatorx/../../x` through). And the local stand-ins: never mounted beside a real
LTIaaS or a real Stripe, nor with a key that is not a test key (real registrations for free)."""

import os
import subprocess
import sys

import pytest

from paygate.application import create_app
from paygate.core.config import ConfigError, load_settings
from paygate.web.operator.auth import safe_next

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize(
    "target",
    [
        "/operator",
        "/operator/",
        "/operator/registrations",
        "/operator/registrations/7?x=1",
        "/operator/registrations?state=paid&q=a%40b",
    ],
)
def test_operator_paths_are_returned_to(target):
    assert safe_next(target) == target


@pytest.mark.parametrize(
    "target",
    [
        None,
        "",
        "/operatorx",
        "/operatorx/../../x",
        "/operator/../x",
        "/operator/./../x",
        "/operator/..",
        "/operator/%2e%2e/x",
        "/operator/%2E%2E/flow",
        "/operator/.%2e/x",
        "/operator/a/../../x",
        "/operator//evil.example",
        "//evil.example/operator",
        "/operator\\@evil",
        "/operator/%5c%5cevil",
        "https://evil.example/operator/",
        "http:/operator",
        "/operator/\x00",
        "/operator/\r\nLocation: x",
        "operator/registrations",
        "/Operator/registrations",
        "/operator/sign-in",
        "/operator/sign-out",
        "/operator/%2f%2fevil.example",
        "/operator/x/%2e./y",
        "\t/operator/",
        "/flow/x",
    ],
)
def test_everything_else_is_refused(target):
    assert safe_next(target) is None, target


def test_signing_in_with_a_climbing_next_lands_on_the_operator_pages(client):
    from paygate.core.db import db
    from paygate.core.models import Operator
    from paygate.web.operator.passwords import hash_password

    with client.application.app_context():
        db.session.add(
            Operator(
                email="ops@vendor.example",
                password_hash=hash_password("a long password here"),
                password_set_at=db.func.current_timestamp(),
            )
        )
        db.session.commit()
    import re

    page = client.get("/operator/sign-in?next=/operatorx/../../x")
    assert "/operatorx" not in page.text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    signed = client.post(
        "/operator/sign-in",
        data={
            "email": "ops@vendor.example",
            "password": "a long password here",
            "next": "/operatorx/../../x",
            "csrf_token": csrf,
        },
    )
    assert signed.status_code == 303 and signed.headers["Location"] == "/operator/overview"


# The stand-ins

LOCAL = {"app_env": "local", "database_url": "sqlite://", "public_url": "http://127.0.0.1:5998", "secret_key": "k" * 40}
REAL_LTIAAS = {"ltiaas_url": "https://school.ltiaas.com", "ltiaas_api_key": "real-key"}
REAL_STRIPE = {
    "stripe_secret_key": "sk_test_real",
    "stripe_webhook_secret": "whsec_real",
    "stripe_price_id": "price_real",
}


def mounted(app) -> bool:
    return "standins" in app.blueprints


def test_the_local_run_with_nothing_set_mounts_the_standins():
    assert mounted(create_app(LOCAL))


def test_both_real_mounts_nothing():
    assert not mounted(create_app({**LOCAL, **REAL_LTIAAS, **REAL_STRIPE}))


@pytest.mark.parametrize(
    "settings, variable",
    [
        # A real LTIaaS with the Stripe stand-in: real registrations, paid with pretend money.
        ({**REAL_LTIAAS}, "LTIAAS_URL"),
        ({**REAL_LTIAAS, **REAL_STRIPE, "stripe_api_base": "http://127.0.0.1:5998/_local/stripe"}, "LTIAAS_URL"),
        # The LTIaaS stand-in, with Stripe somewhere else than the stand-in.
        ({**REAL_STRIPE, "stripe_api_base": "https://stripe-proxy.example"}, "STRIPE_API_BASE"),
        # Stand-ins on another host than this service: the URL only looks like one.
        ({"ltiaas_url": "https://evil.example/_local/ltiaas", "ltiaas_api_key": "k"}, "LTIAAS_URL"),
        ({**REAL_STRIPE, "stripe_api_base": "https://evil.example/_local/stripe"}, "STRIPE_API_BASE"),
        # Only test keys with the stand-ins.
        (
            {
                "stripe_secret_key": "sk_live_real",
                "stripe_webhook_secret": "whsec_x",
                "stripe_price_id": "price_x",
                "stripe_api_base": "http://127.0.0.1:5998/_local/stripe",
            },
            "STRIPE_SECRET_KEY",
        ),
        (
            {
                "stripe_secret_key": "rk_test_restricted",
                "stripe_webhook_secret": "whsec_x",
                "stripe_price_id": "price_x",
                "stripe_api_base": "http://127.0.0.1:5998/_local/stripe",
            },
            "STRIPE_SECRET_KEY",
        ),
    ],
)
def test_the_standins_refuse_to_mount_beside_anything_real(settings, variable):
    with pytest.raises(ConfigError) as refused:
        create_app({**LOCAL, **settings})
    message = str(refused.value)
    assert message.startswith(variable + " ") and "\n" not in message, message
    assert "stand-in" in message
    for value in ("real-key", "sk_live_real", "rk_test_restricted", "whsec_real"):
        assert value not in message


def test_a_real_stripe_test_key_beside_the_ltiaas_standin_is_allowed():
    """Stripe's own test mode with the LTIaaS stand-in: nothing real is registered, nothing real is paid."""
    assert mounted(create_app({**LOCAL, **REAL_STRIPE}))


def test_settings_say_which_standin_urls_are_ours():
    settings = load_settings({**LOCAL})
    assert settings.ltiaas_url == "http://127.0.0.1:5998/_local/ltiaas"
    assert settings.stripe_api_base == "http://127.0.0.1:5998/_local/stripe"


def test_make_run_stops_with_one_line_naming_the_variable(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LTIAAS_", "STRIPE_", "APP_ENV", "PUBLIC_URL"))}
    env.update(
        PYTHONPATH=ROOT,
        APP_ENV="local",
        LTIAAS_URL="https://school.ltiaas.com",
        LTIAAS_API_KEY="real-key",
        DATABASE_URL=f"sqlite:///{tmp_path / 'local.sqlite'}",
        PORT="5997",
        SECRET_KEY="k" * 40,
    )
    result = subprocess.run(
        [sys.executable, "-m", "paygate.application.local"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("configuration error: LTIAAS_URL "), result.stderr
    assert "real-key" not in result.stderr + result.stdout
