"""What each operator role may do (docs/architecture.md, invariant 13): the one table every operator request is
checked against on the server, pages and API alike. A template hides a control with `may()`; hiding is a
courtesy, this table is the control."""

from paygate.core.models import ROLES

VIEWER, SUPPORT, ADMIN = ROLES

# The least role each operator endpoint needs. An endpoint not named here needs `admin`: a route added without a
# thought about who may use it is closed, not open (tests/web/test_roles.py names every route).
NEEDS: dict[str, str] = {
    "operator.sign_in": VIEWER,
    "operator.sign_out": VIEWER,
    "operator.set_password": VIEWER,  # public: whoever holds the link (blueprint.py PUBLIC_ENDPOINTS)
    "operator.sign_in_code": VIEWER,
    "operator.sign_in_enrol": VIEWER,
    # One's own account: second factor, recovery codes, API tokens.
    "operator.account": VIEWER,
    "operator.account_recovery_codes": VIEWER,
    "operator.account_token": VIEWER,
    "operator.account_token_revoke": VIEWER,
    # Read and export.
    "operator.registrations": VIEWER,
    "operator.export_csv": VIEWER,
    "operator.detail": VIEWER,
    "operator.api_registrations": VIEWER,
    "operator.api_registration": VIEWER,
    "operator.overview": VIEWER,
    "operator.overview_money_chart": VIEWER,
    "operator.overview_funnel_chart": VIEWER,
    # Notes, retry, mark resolved, check at LTIaaS, send a message to the vendor again.
    "operator.note": SUPPORT,
    "operator.retry": SUPPORT,
    "operator.resolve": SUPPORT,
    "operator.check_access": SUPPORT,
    "operator.resend_vendor_message": SUPPORT,
    "operator.api_resend_vendor_message": SUPPORT,
    # Money and access: refund (in full or in part), cancel a subscription at its period's end, grant or revoke access.
    "operator.refund": ADMIN,
    "operator.cancel_at_period_end": ADMIN,
    "operator.access_override": ADMIN,
    # Replace a licence's key (paygate/web/operator/key_actions.py).
    "operator.replace_licence_key": ADMIN,
    # Manage operators (paygate/web/operator/team.py).
    "operator.operators": ADMIN,
    "operator.add_operator": ADMIN,
    "operator.operator_link": ADMIN,
    "operator.operator_role": ADMIN,
    "operator.disable_operator": ADMIN,
    "operator.enable_operator": ADMIN,
    "operator.remove_operator": ADMIN,
    "operator.reset_operator_factor": ADMIN,
}


def rank(role: str | None) -> int:
    """How far up the roles `role` is (-1: not a role, which may do nothing)."""
    return ROLES.index(role) if role in ROLES else -1


def needed(endpoint: str | None) -> str:
    return NEEDS.get(endpoint or "", ADMIN)


def may(role: str | None, endpoint: str) -> bool:
    """Whether an operator of `role` may use `endpoint`."""
    return rank(role) >= rank(needed(endpoint))
