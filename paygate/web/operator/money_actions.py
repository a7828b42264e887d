"""The routes that move money or end what is paid for, admin-only (paygate/web/operator/roles.py): a refund, in
full or in part, and ending a subscription at its period's end without one. Each a page-form POST with the CSRF
token and a one-time form_id, answered by a redirect to the detail page."""

from flask import abort, render_template, request
from flask_login import current_user

from paygate.web.operator import actions, cancelling, refunding
from paygate.web.operator.blueprint import bp
from paygate.web.operator.views import back, registration_or_404


def _form_id(required: bool) -> str | None:
    """The one-time id of the submitted form; a damaged one, or none where one is needed, is refused."""
    form_id = request.form.get("form_id")
    if (form_id is not None or required) and not actions.valid_form_id(form_id):
        abort(400, description="Reload the page and try again.")
    return form_id


@bp.route("/registrations/<int:pk>/refund", methods=["GET", "POST"])
def refund(pk: int):
    """The refund page (what is left to refund, a reason, a note), and its form."""
    reg = registration_or_404(pk)
    if request.method == "GET":
        return render_template(
            "operator/refund.html",
            reg=reg,
            payment_intent=refunding.refundable_payment(reg),
            can_refund=refunding.can_refund(reg),
            left=refunding.left_to_refund(reg),
            reasons=refunding.REASONS,
        )
    # A form without a form_id (a script of before partial refunds) refunds in full, once per payment.
    ask = refunding.Ask(
        amount=request.form.get("amount"),
        reason=request.form.get("reason"),
        note=request.form.get("note", ""),
        form_id=_form_id(required=False),
    )
    return back(pk, refunding.refund(reg, current_user.email, ask))


@bp.post("/registrations/<int:pk>/cancel-at-period-end")
def cancel_at_period_end(pk: int):
    """End the licence's subscription when its paid period ends; no refund, the access continues until then."""
    reg = registration_or_404(pk)
    form_id = _form_id(required=True)
    return back(pk, cancelling.cancel_at_period_end(reg, request.form.get("note", ""), current_user.email, form_id))
