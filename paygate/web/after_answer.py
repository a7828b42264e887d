"""Work that waits on LTIaaS runs after the sender has its answer (docs/architecture.md, invariant 9).

What is registered here runs once the response has been sent (the WSGI server closes it), in a fresh
application context. It is driven by what the request committed, so if the process dies first the
worker finds the same facts and does it (a paid registration nobody completed, a platform whose access
differs from what LTIaaS was told).

So are the vendor's messages (invariant 12): whoever writes messages adds their licence pks to
`g.vendor_messages_written`; the request's, and those the work after its answer wrote, are delivered after
the answer (paygate/ops/vendor_outbox.py), and the worker delivers whatever that leaves. Notifications to
operators likewise: one written (paygate/core/notifications.py sets its flag in flask.g) is e-mailed after the
answer by paygate/ops/notify_outbox.py, first tries only.
"""

import logging

from flask import Response, current_app, g

from paygate.core import notifications
from paygate.core.db import db
from paygate.core.logs import current_request_id
from paygate.ops import notify_outbox, vendor_outbox

log = logging.getLogger(__name__)

WRITTEN = "vendor_messages_written"  # the name in flask.g of the set of licence pks whose messages were written


def after_answer(response: Response, work) -> Response:
    """Run `work()` after `response` is sent, then deliver the vendor's messages it wrote; returns the response."""
    app = current_app._get_current_object()
    request_id = current_request_id()  # its log lines and LTIaaS calls carry the request's id

    def run():
        with app.app_context():
            if request_id:
                g.request_id = request_id
            try:
                work()
            except Exception:
                db.session.rollback()
                log.exception("after the answer: failed; the worker will finish it")
            _deliver(g.get(WRITTEN))
            _notify(g.get(notifications.WRITTEN))

    response.call_on_close(run)
    return response


def deliver_written(response: Response) -> Response:
    """`after_request`: the vendor's messages and the notifications this request wrote go out after its answer."""
    written, noted = g.get(WRITTEN), g.get(notifications.WRITTEN)
    if (written and current_app.config["SETTINGS"].vendor_webhook_url) or noted:
        licence_pks = set(written or ())

        def work():
            _deliver(licence_pks)
            if noted:
                g.setdefault(notifications.WRITTEN, True)

        after_answer(response, work)
    return response


def _notify(written) -> None:
    """Notifications never tried yet, e-mailed now; what fails is the worker's to retry."""
    if not written:
        return
    try:
        notify_outbox.send_due(first_tries=True, budget=notify_outbox.AFTER_ANSWER_BUDGET)
    except Exception:
        db.session.rollback()
        log.exception("after the answer: e-mailing notifications failed; the worker will")
    g.pop(notifications.WRITTEN, None)


def _deliver(licence_pks) -> None:
    """The due messages of `licence_pks` (if any), delivered now; what fails is the worker's to retry."""
    if not licence_pks or not current_app.config["SETTINGS"].vendor_webhook_url:
        return
    try:
        # Only first tries, for a while: a retry (the endpoint failing) is the worker's, never a web thread's.
        vendor_outbox.deliver_due(
            licence_pks=set(licence_pks), first_tries=True, budget=vendor_outbox.AFTER_ANSWER_BUDGET
        )
    except Exception:
        db.session.rollback()
        log.exception("after the answer: delivering the vendor's messages failed; the worker will")
    g.pop(WRITTEN, None)
