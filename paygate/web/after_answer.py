"""Work that waits on LTIaaS runs after the sender has its answer (docs/architecture.md, invariant 9).

What is registered here runs once the response has been sent (the WSGI server closes it), in a fresh
application context. It is driven by what the request committed, so if the process dies first the
worker finds the same facts and does it (a paid registration nobody completed, a platform whose access
differs from what LTIaaS was told).
"""

import logging

from flask import Response, current_app, g

from paygate.core.db import db
from paygate.core.logs import current_request_id

log = logging.getLogger(__name__)


def after_answer(response: Response, work) -> Response:
    """Run `work()` after `response` is sent; returns the response."""
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

    response.call_on_close(run)
    return response
