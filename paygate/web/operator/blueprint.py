"""The operator blueprint and what every operator request shares: sign-in required (but on the sign-in pages), the
role checked against paygate/web/operator/roles.py before any view runs, no caching, the templates' helpers. Routes
are added by the route modules (`views`, and one module per page of its own), mounted by `__init__`."""

import secrets
import unicodedata
from datetime import datetime

from flask import Blueprint, abort, g, request
from flask_login import current_user

from paygate.core.models import State
from paygate.core.money import format_amount
from paygate.gateways import payments
from paygate.web.operator import attention, auth, queries, roles, sold, standing

bp = Blueprint("operator", __name__, url_prefix="/operator")
# Before the operator is signed in: the password, then the second factor (auth.passed_password guards those two), and
# the set-password page of a one-time link (whoever holds the link).
PUBLIC_ENDPOINTS = {"operator.sign_in", "operator.sign_in_code", "operator.sign_in_enrol", "operator.set_password"}


@bp.before_request
def _require_operator():
    g.frameable = False  # operator pages are never framed
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    if not current_user.is_authenticated:
        return auth.login_manager.unauthorized()
    if not roles.may(current_user.role, request.endpoint):
        # Checked before any view reads or changes anything (docs/architecture.md, invariant 13).
        abort(
            403,
            description=f"Your role ({current_user.role}) may not do this; it needs {roles.needed(request.endpoint)}.",
        )
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


@bp.context_processor
def _helpers():
    return {
        "fmt_time": _fmt_time,
        "money": format_amount,
        "stripe_url": lambda kind, object_id: payments.gateway().dashboard_url(kind, object_id),
        "states": [s.value for s in State],
        "attention_reasons": attention.ATTENTION_REASONS,
        "form_id": lambda: secrets.token_urlsafe(16),
        "access_filters": queries.ACCESS_FILTERS,
        "licence_filters": queries.LICENCE_FILTERS,
        "sold": sold.sold,
        "standing": standing.standing,
        "joined_from": standing.joined_from,
        "on_licence": standing.on_licence,
        "pilot_end": standing.pilot_end,
        "web_url": _web_url,
        "may": lambda endpoint: roles.may(current_user.role, endpoint),
    }


@bp.app_template_filter("visible")
def _visible(value) -> str:
    """Control and format characters (ESC, U+202E...) as their code, so that none hides or reorders a page."""
    if value is None:
        return ""
    return "".join(f"\\u{ord(c):04x}" if unicodedata.category(c) in ("Cc", "Cf", "Cs") else c for c in str(value))


def _web_url(value: str | None) -> str | None:
    """`value` if it can be a link (Stripe's invoice pages), else None: no javascript: or data: in an href."""
    return value if value and value.startswith(("https://", "http://")) else None


def _fmt_time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") + " UTC" if value else ""
