"""Local stand-in for the vendor's own systems: the endpoint VENDOR_WEBHOOK_URL points at in a local run, which
verifies each event's Standard Webhooks signature and lists what arrived, and a page that asks the licence API
what the vendor's tool would ask at a launch."""

import json
import threading
from datetime import UTC, datetime
from urllib.parse import quote

import requests
from flask import Response, redirect, render_template_string, request
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

# The newest deliveries kept (memory and instance/ stay small however long a local run goes on).
KEPT = 200
BODY_MAX = 256 * 1024
FAIL_MAX = 20

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Local vendor stand-in — events and the licence API</title>
<style>body{font-family:system-ui,sans-serif;margin:1rem 2rem}
table{border-collapse:collapse;width:100%;margin-bottom:2rem}
td,th{border:1px solid #ccc;padding:.3rem;text-align:left;vertical-align:top;font-size:.9rem}
.banner{background:#fff3cd;border:1px solid #d6b656;padding:.5rem 1rem}code,pre{font-size:.8rem}
pre{margin:0;white-space:pre-wrap;max-width:60rem}#notice{background:#e7f1ff;padding:.5rem 1rem}
.refused{color:#a00}.verified{color:#060}form{margin:.5rem 0}</style></head><body>
<p class="banner"><strong>Local vendor stand-in</strong>: what the vendor's own systems would receive from this
  service (VENDOR_WEBHOOK_URL = <code>{{ events_url }}</code>) · <a href="{{ base }}/lms">LMS stand-in</a> ·
  <a href="{{ base }}/stripe/dashboard">Stripe dashboard</a> ·
  <a href="{{ public_url }}/operator/">Operator pages</a></p>
{% if notice %}<p id="notice">{{ notice }}</p>{% endif %}

<h2>Ask the licence API at launch</h2>
<form method="post" action="{{ base }}/vendor/ask">
  <label>Platform id <input name="platform_id" id="ask-platform-id" value="{{ asked or '' }}" maxlength="200"
    required></label>
  <button id="ask">Ask, as the tool would at a launch</button>
</form>
{% if answer %}<div id="licence-answer"><p>GET <code>{{ answer.url }}</code> →
  <strong id="licence-status">{{ answer.status }}</strong></p><pre>{{ answer.body }}</pre></div>{% endif %}

<h2>Events received</h2>
<form method="post" action="{{ base }}/vendor/fail">
  <label>Fail the next <input type="number" name="n" min="0" max="{{ fail_max }}" value="{{ failing or 1 }}"
    id="fail-n" style="width:4rem"> deliveries (answer 503)</label> <button id="fail">Set</button>
  {% if failing %}<span id="failing">{{ failing }} more will fail: watch the same webhook id come back.</span>
  {% endif %}
</form>
{% if deliveries %}
<table id="deliveries"><tr><th>webhook id</th><th>type</th><th>received</th><th>signature</th><th>times received</th>
<th>answered</th><th>body</th></tr>
{% for d in deliveries %}<tr class="delivery">
<td><code>{{ d.id }}</code></td><td>{{ d.type or "" }}</td><td>{{ d.received_at }}</td>
<td class="{{ 'verified' if d.verified else 'refused' }}">
  {{- "signature verified" if d.verified else "refused: " ~ d.refused }}</td>
<td class="times">{{ d.times }}</td><td class="answered">{{ d.answered }}</td>
<td><pre>{{ d.body }}</pre></td></tr>
{% endfor %}</table>
{% else %}<p id="no-deliveries">Nothing received yet: register a platform on the LMS stand-in, then look again.</p>
{% endif %}
</body></html>"""


class State:
    """The deliveries received (newest last) and how many of the next ones to fail. `on_change` is called (lock
    held) after each change."""

    def __init__(self):
        self.lock = threading.RLock()
        self.deliveries: list[dict] = []
        self.fail_next = 0
        self.on_change = None

    def changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self)

    def reset(self) -> None:
        with self.lock:
            self.deliveries.clear()
            self.fail_next = 0
            self.changed()

    def dump(self) -> dict:
        with self.lock:
            return {"deliveries": self.deliveries, "fail_next": self.fail_next}

    def load(self, saved: dict) -> None:
        with self.lock:
            self.deliveries[:] = [d for d in saved.get("deliveries") or [] if isinstance(d, dict)][-KEPT:]
            fail_next = saved.get("fail_next")
            self.fail_next = fail_next if isinstance(fail_next, int) and 0 <= fail_next <= FAIL_MAX else 0

    def receive(self, raw: bytes, headers: dict, secret: str | None) -> int:
        """Verify and record one delivery; the HTTP status to answer."""
        message_id = headers.get("webhook-id") or ""
        refused = _refusal(raw, headers, secret)
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        with self.lock:
            status = 400 if refused else 204
            if not refused and self.fail_next > 0:
                self.fail_next -= 1
                status = 503
            self.deliveries.append(
                {
                    "id": message_id[:100],
                    "type": body.get("type") if isinstance(body, dict) and isinstance(body.get("type"), str) else None,
                    "received_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
                    "verified": not refused,
                    "refused": refused,
                    "times": 1 + sum(1 for d in self.deliveries if message_id and d["id"] == message_id),
                    "answered": status,
                    "body": json.dumps(body, indent=2, ensure_ascii=False)
                    if body is not None
                    else raw[:2000].decode("utf-8", "replace"),
                }
            )
            del self.deliveries[:-KEPT]
            self.changed()
        return status

    def fail(self, n: int) -> None:
        with self.lock:
            self.fail_next = max(0, min(FAIL_MAX, n))
            self.changed()


def _refusal(raw: bytes, headers: dict, secret: str | None) -> str | None:
    """Why the delivery is not the service's (as the vendor's own code would refuse it), or None."""
    if not secret:
        return "no VENDOR_WEBHOOK_SECRET is set here"
    try:
        Webhook(secret).verify(raw, headers, json_parse=False)
    except WebhookVerificationError as exc:
        return str(exc)
    return None


def register(bp, settings, state: State) -> None:
    """Add the vendor's routes (/_local/vendor...) to `bp`."""
    public_url = settings.public_url.rstrip("/")
    base = f"{public_url}/_local"

    def page(notice=None, asked=None, answer=None, status=200):
        with state.lock:
            html = render_template_string(
                PAGE,
                base=base,
                public_url=public_url,
                events_url=settings.vendor_webhook_url or "(not set)",
                deliveries=list(reversed(state.deliveries)),
                failing=state.fail_next,
                fail_max=FAIL_MAX,
                notice=notice,
                asked=asked,
                answer=answer,
            )
        return Response(html, status=status, mimetype="text/html", headers={"Cache-Control": "no-store"})

    @bp.post("/vendor/events")
    def vendor_events():
        if (request.content_length or 0) > BODY_MAX:
            return Response("too large", status=413, mimetype="text/plain")
        raw = request.get_data()
        headers = {k.lower(): v for k, v in request.headers.items() if k.lower().startswith("webhook-")}
        status = state.receive(raw, headers, settings.vendor_webhook_secret)
        if status == 204:
            return Response(status=204)
        reason = "signature refused" if status == 400 else "failing on purpose (the stand-in's dial)"
        return Response(reason, status=status, mimetype="text/plain")

    @bp.get("/vendor")
    def vendor_page():
        return page(notice=request.args.get("notice"))

    @bp.post("/vendor/fail")
    def vendor_fail():
        try:
            n = int(request.form.get("n", ""))
        except ValueError:
            return page(notice="Say how many: a whole number.", status=400)
        state.fail(n)
        return redirect(f"{base}/vendor?notice=" + quote(f"The next {state.fail_next} deliveries will fail."), 303)

    @bp.post("/vendor/ask")
    def vendor_ask():
        platform_id = (request.form.get("platform_id") or "").strip()[:200]
        if not platform_id:
            return page(notice="Give a platform id (the operator pages show it).", status=400)
        url = f"{public_url}/api/v1/platforms/{quote(platform_id, safe='')}/licence"
        try:
            got = requests.get(url, headers={"Authorization": f"Bearer {settings.licence_api_token or ''}"}, timeout=10)
        except requests.RequestException as exc:
            answer = {"url": url, "status": "no answer", "body": type(exc).__name__}
        else:
            try:
                body = json.dumps(got.json(), indent=2, ensure_ascii=False)
            except ValueError:
                body = got.text[:2000]
            answer = {"url": url, "status": got.status_code, "body": body}
        return page(asked=platform_id, answer=answer)
