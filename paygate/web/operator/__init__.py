"""Operator pages and API under /operator: review registrations, payments and platforms, and act on them.

Views are thin: reading the list is in `queries`, one registration in `detail`, its JSON shape in `as_json`,
the CSV rows in `export`, acting in `actions`, sign-in in `auth`; the blueprint and what every request of it
shares are in `blueprint`, and its routes in one module per page: `views` (registrations), `signing_in`, `team` (the
operators page and the set-password links), `money_actions` (refunds in full or in part, cancel at the period's
end), `key_actions` (an admin replaces a licence key), `overview_views` (the overview and its charts), `account`
(one's own).
"""

from flask import Flask

from paygate.web.operator import account, auth, key_actions, money_actions, overview_views, signing_in, team, views
from paygate.web.operator.blueprint import bp

# Each adds its routes to `bp` when imported.
ROUTE_MODULES = (signing_in, account, team, views, money_actions, key_actions, overview_views)


def init_app(app: Flask) -> None:
    """Sign-in, CSRF and throttling for the app, and the operator blueprint."""
    auth.init_app(app)
    app.register_blueprint(bp)
