"""Operator pages and API under /operator: review registrations, payments and platforms, and act on them.

Views are thin: reading the list is in `queries`, one registration in `detail`, its JSON shape in `as_json`,
the CSV rows in `export`, acting in `actions`, sign-in in `auth`; the blueprint and what every request of it
shares are in `blueprint`, and its routes in one module per page: `views` (registrations), `signing_in`,
`account` (one's own).
"""

from flask import Flask

from paygate.web.operator import account, auth, signing_in, views
from paygate.web.operator.blueprint import bp

ROUTE_MODULES = (signing_in, views, account)  # each adds its routes to `bp` when imported


def init_app(app: Flask) -> None:
    """Sign-in, CSRF and throttling for the app, and the operator blueprint."""
    auth.init_app(app)
    app.register_blueprint(bp)
