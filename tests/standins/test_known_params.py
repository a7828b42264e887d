"""Unknown parameters: the stand-in refuses, as Stripe does, any parameter an operation does not know."""

import pytest
import stripe

from paygate.standins.stripe import core, parameters


def refusal(exc: pytest.ExceptionInfo) -> tuple:
    error = exc.value.json_body["error"]
    return exc.value.http_status, error["type"], error["code"], error["param"], error["message"]


def test_an_unknown_top_level_parameter_is_refused(sc):
    with pytest.raises(stripe.InvalidRequestError) as exc:
        sc.v1.prices.retrieve("price_local_seats_yearly", params={"foo": "1"})
    assert refusal(exc) == (400, "invalid_request_error", "parameter_unknown", "foo", "Received unknown parameter: foo")
    assert sc.v1.prices.retrieve("price_local_seats_yearly", params={"expand": ["product", "tiers"]}).id


def test_nested_parameters_are_checked_below_their_parent():
    spec = core.known("mode", "line_items[][price]", "line_items[][quantity]", "metadata[*]", "automatic_tax[enabled]")
    assert (
        parameters.first_unknown(
            {"mode": "payment", "line_items": [{"price": "p", "quantity": "2"}], "metadata": {"any": "x"}}, spec
        )
        is None
    )
    for params, name in (
        ({"line_items": [{"price": "p"}, {"price": "p", "prize": "1"}]}, "line_items[1][prize]"),
        ({"automatic_tax": {"enabled": "true", "liability": {"type": "self"}}}, "automatic_tax[liability]"),
        ({"foo": {"bar": "1"}}, "foo"),
        ({"line_items": {"price": "p"}}, "line_items[price]"),
    ):
        assert parameters.first_unknown(params, spec) == name
