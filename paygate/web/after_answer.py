"""Work that waits on LTIaaS runs after the sender has its answer (docs/architecture.md, invariant 9).

What is registered here runs once the response has been sent (the WSGI server closes it), in a fresh
application context. It is driven by what the request committed, so if the process dies first the
worker finds the same facts and does it (a paid registration nobody completed, a platform whose access
differs from what LTIaaS was told).

So are the vendor's messages (invariant 12): whoever writes messages adds their licence pks to
`g.vendor_messages_written`; the request's, and those the work after its answer wrote, are delivered after
the answer (paygate/ops/vendor_outbox.py), and the worker delivers whatever that leaves.
"""

import logging

from flask import Response, current_app, g

from paygate.core.db import db
from paygate.core.logs import current_request_id
from paygate.ops import vendor_outbox

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

    response.call_on_close(run)
    return response


def deliver_written(response: Response) -> Response:
    """`after_request`: the vendor's messages this request wrote are delivered after its answer."""
    written = g.get(WRITTEN)
    if written and current_app.config["SETTINGS"].vendor_webhook_url:
        licence_pks = set(written)
        after_answer(response, lambda: _deliver(licence_pks))
    return response


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
