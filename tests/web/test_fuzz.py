"""No input gets a 5xx: every route of the published description (paygate/web/openapi.json, GET /openapi.json)
fuzzed in-process by schemathesis on Hypothesis, data that fits the description and data that does not,
as an anonymous caller and as a signed-in operator (session cookie, CSRF token, API bearer token).

Bounded: FUZZ_EXAMPLES examples per route and mode (default 25), a deadline per request, the same
examples on every run (FUZZ_RANDOM=1 draws new ones; FUZZ_EXAMPLES=500 to search harder)."""
import json
import os
import re
import time
from collections import Counter
from datetime import timedelta

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from paygate.core.db import db
from paygate.core.models import Operator
from paygate.web.openapi import PATH as DESCRIPTION
from paygate.web.operator.auth import new_api_token
from tests.helpers.apps import make_app
from tests.helpers.flow import open_frame
from tests.helpers.operators import add_operator, sign_in

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
RANDOM = os.environ.get("FUZZ_RANDOM") == "1"
# Values that broke services like this one; now and then one of them replaces one generated value
# (Hypothesis seldom draws a NUL into the one field that reaches the database).
HOSTILE = ["\x00", "a\x00b@school.example", "cs_\x00", "\x07\x1b[31m", "\u202egnp.exe", "\ufeff", "%00",
           "9999-12-31", "0001-01-01", "2147483648", "-2147483649", "99999999999999999999", "-1", "0", "1e309",
           "NaN", "' OR '1'='1", "../../../etc/passwd", "<script>alert(1)</script>", "x" * 5000,
           "\uff1d1+1", "2026-02-30", "2026-01-01T00:00:00~99999999999", "pi_" + "9" * 300]


@pytest.fixture
def fuzzed(pg_url):
    """The service on PostgreSQL (which refuses what SQLite lets through: a NUL, an integer past 2^31-1
    in a column, a string for a number), with every optional route on: pay by invoice, /metrics."""
    app = make_app(pg_url, invoice_days_until_due=30, metrics_token="metrics-token-for-fuzzing")
    yield app
    with app.app_context():
        db.engine.dispose()


def _operator_credentials(app) -> dict:
    """A signed-in session (its cookie and CSRF token) and an API token, for the operator routes."""
    add_operator(app)
    client = app.test_client()
    assert sign_in(client).status_code == 303
    page = client.get("/operator/")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    token, stored = new_api_token()
    with app.app_context():
        db.session.scalars(db.select(Operator)).one().api_token_hash = stored
        db.session.commit()
    return {"cookie": client.get_cookie("session").value, "csrf": csrf, "bearer": token}


def _plant(case, value: str, where: int) -> None:
    """Put `value` in place of one of the case's query, form or path values (picked by `where`)."""
    places = [(part, key) for part in ("query", "body", "path_parameters")
              if isinstance(getattr(case, part, None), dict) for key in getattr(case, part)]
    if places:
        part, key = places[where % len(places)]
        getattr(case, part)[key] = value


def test_the_description_is_published_and_names_every_route(client):
    """Operators' scripts read it from the service; a route added without it would go unfuzzed."""
    response = client.get("/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    described = {re.sub(r"\{(\w+)\}", r"<\1>", path) for path in response.get_json()["paths"]}
    served = {re.sub(r"<(?:\w+:)?(\w+)>", r"<\1>", rule.rule) for rule in client.application.url_map.iter_rules()
              if not rule.rule.startswith(("/static/", "/_local/"))}
    assert served == described


def test_no_input_gets_a_5xx(fuzzed, stripe_api, ltiaas_api):
    app = fuzzed
    client = app.test_client()
    # Real rows for the fuzzed ids to find now and then: a pending registration (its flow token) and its number.
    _, token, _ = open_frame(client, ltiaas_api)
    with app.app_context():
        pk = db.session.execute(db.text("SELECT max(id) FROM registrations")).scalar_one()
    credentials = _operator_credentials(app)
    with open(DESCRIPTION) as f:
        schema = schemathesis.openapi.from_dict(json.load(f))
    requests, server_errors, statuses = 0, [], Counter()
    started = time.monotonic()

    # Signing out ends the operator's session (server side): last, so that the other routes run signed in.
    operations = sorted((result.ok() for result in schema.get_all_operations()),
                        key=lambda operation: operation.path == "/operator/sign-out")
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(max_examples=EXAMPLES, deadline=timedelta(seconds=3), derandomize=not RANDOM, database=None,
                      phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode), known=st.sampled_from([False, True]),
                   csrf=st.sampled_from([True, True, False]), signed_in=st.sampled_from([True, True, True, False]),
                   hostile=st.none() | st.sampled_from(HOSTILE), where=st.integers(0, 99))
            def call(case, known, csrf, signed_in, hostile, where):
                nonlocal requests
                if hostile is not None:
                    _plant(case, hostile, where)
                if known and case.path_parameters:  # now and then a route's own rows, not only unknown ids
                    if "token" in case.path_parameters:
                        case.path_parameters["token"] = token
                    if "pk" in case.path_parameters:
                        case.path_parameters["pk"] = pk
                if isinstance(case.body, dict) and case.method == "POST" and csrf:
                    case.body["csrf_token"] = credentials["csrf"]  # mostly past CSRF, into the views
                # Each request from its own address: the per-address throttles (tested elsewhere) would
                # otherwise answer 429 before the views under test run.
                address = f"10.{requests // 62500 % 250}.{requests // 250 % 250}.{requests % 250 + 1}"
                response = case.call(app=app, environ_base={"REMOTE_ADDR": address}, **({
                    "headers": {"Authorization": f"Bearer {credentials['bearer']}"},
                    "cookies": {"session": credentials["cookie"]}} if signed_in else {}))
                requests += 1
                statuses[response.status_code // 100] += 1
                if response.status_code >= 500:
                    server_errors.append(f"{case.method} {case.formatted_path} {case.query or ''} "
                                         f"{str(case.body)[:200]} -> {response.status_code}")

            try:
                call()
            except Unsatisfiable:  # nothing to get wrong: a route without parameters or body
                assert mode is GenerationMode.NEGATIVE

    elapsed = time.monotonic() - started
    print(f"\nfuzz: {requests} requests in {elapsed:.1f} s, by status class {dict(sorted(statuses.items()))}, "
          f"{len(server_errors)} 5xx")
    assert requests >= 10 * len(operations)
    assert not server_errors, "\n".join(server_errors[:40])
