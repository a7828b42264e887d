"""Operator pages and API under /operator: review registrations, payments and platforms, and act on them.

Views are thin: reading the list is in `queries`, one registration in `detail`, its JSON shape in `as_json`,
the CSV rows in `export`, acting in `actions`, sign-in in `auth`; the blueprint and its routes are in `views`.
"""

from flask import Flask

from paygate.web.operator import auth, views


def init_app(app: Flask) -> None:
    """Sign-in, CSRF and throttling for the app, and the operator blueprint."""
    auth.init_app(app)
    app.register_blueprint(views.bp)
