"""The routes of registrations: the list, CSV, detail, actions and the JSON API (read arguments, act, answer);
who may is checked before each by paygate/web/operator/blueprint.py. Refunds and cancelling are in `money_actions`."""

import csv
import io

from flask import (
    Response,
    abort,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from flask_login import current_user

from paygate.core.db import db, utcnow
from paygate.core.models import Registration
from paygate.web.operator import actions, as_json, cancelling, deliveries, export, queries, refunding, sold
from paygate.web.operator import detail as registration_detail
from paygate.web.operator.blueprint import bp


def registration_or_404(pk: int) -> Registration:
    """The registration `pk` names, or a 404 with one sentence (every route of one registration starts here)."""
    reg = db.session.get(Registration, pk) if queries.valid_pk(pk) else None
    if reg is None:
        abort(404, description="No such registration.")
    return reg


def back(pk: int, result: actions.Result):
    """What an action on a registration answers: its sentence, on the registration's page."""
    flash(result.message, result.level)
    return redirect(url_for("operator.detail", pk=pk), 303)


# Review


def _filters_or_400() -> queries.Filters:
    try:
        return queries.Filters.from_args(request.args)
    except queries.BadQuery as exc:
        abort(400, description=str(exc))


@bp.get("/")
def registrations():
    try:
        # The list leaves pending-and-never-paid rows out unless asked (`unpaid=show`); the API and CSV keep them.
        filters = queries.Filters.from_args(request.args, hide_unpaid=True)
        page = queries.list_page(filters, after=request.args.get("after"), before=request.args.get("before"))
    except queries.BadQuery as exc:
        flash(str(exc), "error")
        filters, page = queries.Filters(hide_unpaid=True), None
    total = queries.total(filters) if page is not None else None
    attention, attention_count = [], 0
    first_page = not request.args.get("after") and not request.args.get("before")
    if first_page and not filters.attention and not filters.q:
        attention, attention_count = queries.attention_preview(filters)
    return render_template(
        "operator/list.html",
        filters=filters,
        page=page,
        attention=attention,
        attention_count=attention_count,
        count_cap=queries.ATTENTION_COUNT_CAP,
        total=total,
        total_cap=queries.TOTAL_COUNT_CAP,
        families=queries.KNOWN_FAMILIES,
        offers=sold.offers_seen(current_app.config["SETTINGS"].price_ids),
    )


@bp.get("/registrations.csv")
def export_csv():
    filters = _filters_or_400()

    def rows():
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(export.CSV_COLUMNS)
        for reg in queries.iter_all(filters):
            writer.writerow(export.csv_row(reg))
            if buffer.tell() > 64 * 1024:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue()

    name = f"registrations-{utcnow():%Y%m%d-%H%M%S}.csv"
    return Response(
        stream_with_context(rows()),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@bp.get("/registrations/<int:pk>")
def detail(pk: int):
    found = registration_detail.detail(pk)
    if found is None:
        abort(404, description="No such registration.")
    reg = found.registration
    return render_template(
        "operator/detail.html",
        d=found,
        reg=reg,
        can_retry=actions.can_retry(reg),
        can_refund=refunding.can_refund(reg),
        can_cancel=cancelling.subscription_of(reg) is not None,
    )


# Actions: each a POST with the CSRF token, answered by a redirect to the detail page.


@bp.post("/registrations/<int:pk>/retry")
def retry(pk: int):
    reg = registration_or_404(pk)
    return back(pk, actions.retry_completion(reg, current_user.email))


def _form_id_or_400() -> str:
    """The one-time id of the submitted form (a form sent twice acts once)."""
    form_id = request.form.get("form_id")
    if not actions.valid_form_id(form_id):
        abort(400, description="Reload the page and try again.")
    return form_id


@bp.post("/registrations/<int:pk>/access")
def access_override(pk: int):
    """Grant or revoke the platform's access by hand, or let the licence decide again."""
    reg = registration_or_404(pk)
    form_id = _form_id_or_400()
    choice = request.form.get("override")
    if choice not in actions.OVERRIDES:
        abort(400, description="Reload the page and try again.")
    return back(pk, actions.override_access(reg, choice, request.form.get("text", ""), current_user.email, form_id))


@bp.post("/registrations/<int:pk>/check-access")
def check_access(pk: int):
    """Read from LTIaaS whether the platform is active, where that is not known here."""
    reg = registration_or_404(pk)
    return back(pk, actions.check_access(reg, current_user.email))


@bp.post("/registrations/<int:pk>/vendor-messages/<message_id>/resend")
def resend_vendor_message(pk: int, message_id: str):
    """Send a message to the vendor's systems again (same webhook id), delivered after the answer."""
    reg, message = _vendor_message_or_404(pk, message_id)
    return back(pk, deliveries.send_again(reg, message, current_user.email))


def _vendor_message_or_404(pk: int, message_id: str):
    reg = registration_or_404(pk)
    message = deliveries.message_of(reg, message_id)
    if message is None:
        abort(404, description="No such message to the vendor on this registration.")
    return reg, message


@bp.post("/registrations/<int:pk>/notes")
def note(pk: int):
    reg = registration_or_404(pk)
    form_id = _form_id_or_400()
    return back(pk, actions.add_note(reg, request.form.get("text", ""), current_user.email, form_id))


@bp.post("/registrations/<int:pk>/resolve")
def resolve(pk: int):
    reg = registration_or_404(pk)
    form_id = _form_id_or_400()
    return back(pk, actions.resolve_attention(reg, request.form.get("text", ""), current_user.email, form_id))


# JSON API: same sign-in, or Authorization: Bearer <operator API token>.


@bp.get("/api/registrations")
def api_registrations():
    filters = _filters_or_400()
    try:
        limit = int(request.args.get("limit", queries.PAGE_SIZE))
        page = queries.list_page(
            filters, after=request.args.get("after"), before=request.args.get("before"), limit=limit
        )
    except ValueError as exc:  # BadQuery too
        abort(400, description=str(exc) if isinstance(exc, queries.BadQuery) else "limit must be a number")
    args = filters.to_args()
    return jsonify(
        items=[as_json.summary(reg) for reg in page.items],
        search=[{"kind": s.kind, "value": s.value} for s in page.searches],
        next=url_for("operator.api_registrations", after=page.older, limit=limit, **args) if page.older else None,
        previous=url_for("operator.api_registrations", before=page.newer, limit=limit, **args) if page.newer else None,
    )


@bp.get("/api/registrations/<int:pk>")
def api_registration(pk: int):
    found = registration_detail.detail(pk)
    if found is None:
        abort(404, description="No such registration.")
    return jsonify(as_json.full(found))


@bp.post("/api/registrations/<int:pk>/vendor-messages/<message_id>/resend")
def api_resend_vendor_message(pk: int, message_id: str):
    reg, message = _vendor_message_or_404(pk, message_id)
    result = deliveries.send_again(reg, message, current_user.email)
    if result.level != "ok":
        return jsonify(error="Conflict", message=result.message), 409
    return jsonify(message_id=message_id, status="pending", message=result.message), 202
