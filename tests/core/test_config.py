"""Settings: one clear line naming a missing or malformed variable, never a secret's value."""

import logging
import os
import subprocess
import sys

import pytest

from paygate.core.config import ConfigError, load_settings
from paygate.core.redaction import RedactSecrets
from tests.helpers.apps import BASE_CONFIG

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize(
    "field",
    [
        "ltiaas_url",
        "ltiaas_api_key",
        "stripe_secret_key",
        "stripe_webhook_secret",
        "stripe_price_id",
        "public_url",
        "secret_key",
    ],
)
def test_missing_required_setting_names_the_variable(field):
    with pytest.raises(ConfigError, match=f"^{field.upper()} is required$"):
        load_settings({**BASE_CONFIG, "app_env": "production", field: ""})


def test_malformed_setting_names_the_variable_not_its_value():
    with pytest.raises(ConfigError) as info:
        load_settings({**BASE_CONFIG, "stripe_secret_key": "pk_live_oops_publishable_key"})
    assert "STRIPE_SECRET_KEY is malformed" in str(info.value)
    assert "pk_live_oops" not in str(info.value)


def test_start_up_stops_with_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LTIAAS_", "STRIPE_", "APP_ENV"))}
    env.update(STRIPE_SECRET_KEY="sk_test_do_not_print_me", PYTHONPATH=ROOT)
    result = subprocess.run(
        [sys.executable, "-c", "import wsgi"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "configuration error: LTIAAS_URL is required"


def test_local_run_needs_no_settings():
    settings = load_settings({"app_env": "local"})
    assert settings.uses_standins and settings.stripe_api_base.endswith("/_local/stripe")


def test_standins_refuse_a_live_key():
    from paygate.standins import create_standins_blueprint

    settings = load_settings(
        {
            "app_env": "local",
            "stripe_secret_key": "sk_live_real",
            "stripe_webhook_secret": "whsec_x",
            "stripe_price_id": "price_x",
            "stripe_api_base": "http://x/_local/stripe",
        }
    )
    with pytest.raises(RuntimeError, match="live Stripe key"):
        create_standins_blueprint(settings)


def test_access_log_lines_lose_registration_tokens():
    record = logging.LogRecord(
        "werkzeug",
        logging.INFO,
        __file__,
        1,
        '%s - - "%s" %s',
        ("127.0.0.1", "GET /lti/register?openid_configuration=x&registration_token=eyJhbGciOi.secret HTTP/1.1", "302"),
        None,
    )
    RedactSecrets().filter(record)
    assert "eyJhbGciOi" not in record.getMessage() and "registration_token=[redacted]" in record.getMessage()


def test_registration_ids_and_flow_tokens_are_shortened_in_logs():
    from paygate.core.redaction import redact

    line = redact(
        "GET /pre-approval?registrationId=AbCdEfGhIjKlMnOp HTTP/1.1 /flow/AAAAAAbbbbbbccccccddddddeeee/status"
    )
    assert "AbCdEfGhIjKlMnOp" not in line and "registrationId=AbCd…" in line
    assert "bbbbbbcccccc" not in line and "/flow/AAAAAA…/status" in line


def test_malformed_database_url_names_the_variable():
    with pytest.raises(ConfigError, match=r"^DATABASE_URL is malformed"):
        load_settings({**BASE_CONFIG, "database_url": "not a url"})
