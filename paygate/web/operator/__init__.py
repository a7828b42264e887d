"""Operator pages and API under /operator: review registrations, payments and platforms, and act on them.

Views are thin: reading is in `queries`, acting in `actions`, sign-in in `auth`.
"""
from flask import Blueprint, Flask, g, request
from flask_login import current_user

from . import auth

bp = Blueprint("operator", __name__, url_prefix="/operator")
PUBLIC_ENDPOINTS = {"operator.sign_in"}


@bp.before_request
def _require_operator():
    g.frameable = False  # operator pages are never framed
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    if not current_user.is_authenticated:
        return auth.login_manager.unauthorized()
    return None


@bp.context_processor
def _operator():
    return {"current_user": current_user}  # resolved only where a template uses it


@bp.after_request
def _private(response):
    response.headers["Cache-Control"] = "no-store"
    # Forms post with a same-origin Referer, which CSRF protection requires over https.
    response.headers["Referrer-Policy"] = "same-origin"
    return response


def init_app(app: Flask) -> None:
    """Sign-in, CSRF and throttling for the app, and the operator blueprint."""
    auth.init_app(app)
    app.register_blueprint(bp)


from . import views  # noqa: E402,F401  (routes on bp)
