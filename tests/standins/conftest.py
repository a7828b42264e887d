"""The stand-ins' fixtures (a Flask app serving them, outgoing HTTP routed to it, a `stripe` client), for the
test files beside test_standins.py."""

from tests.standins.test_standins import app, net, sc, web  # noqa: F401
