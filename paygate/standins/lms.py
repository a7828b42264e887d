"""Local LMS stand-in: a page imitating Canvas's Dynamic Registration modal (origin check included),
Brightspace's new tab, and registrations set up to reach the screens a happy path never shows."""

import secrets
from datetime import timedelta
from urllib.parse import parse_qs, urlencode, urlsplit

import requests
from flask import Response, abort, current_app, jsonify, redirect, render_template_string, request
from sqlalchemy import select, update

from paygate.core.db import db
from paygate.core.models import Registration
from paygate.standins import ltiaas_api

LMS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Local LMS stand-in — Dynamic Registration</title>
<style>body{font-family:system-ui,sans-serif;margin:2rem}.modal{border:1px solid #888;padding:1rem;max-width:52rem}
#registration{width:800px;max-width:100%;height:600px;border:1px solid #ccc;display:block;margin-top:1rem}
#lms-log{color:#555}fieldset{margin:.75rem 0}button{margin:.25rem .25rem 0 0}</style>
</head><body>
<p><strong>Local LMS stand-in</strong> (imitates {{ imitates }}; LTIaaS sees it as <code>{{ family }}</code>).
  Other LMSes: <a href="?lms=canvas">Canvas</a> · <a href="?lms=moodle">Moodle</a> ·
  <a href="?lms=brightspace">Brightspace</a> · What the vendor's systems received:
  <a href="{{ vendor_url }}" id="vendor-standin">vendor stand-in</a></p>
<div class="modal">
  <label for="registration-url">Registration URL</label>
  <input id="registration-url" type="url" size="70" value="{{ registration_url }}">
  <fieldset>
    <legend>The LMS opens the registration</legend>
    <label><input type="radio" name="mode" value="frame" id="mode-frame"{% if mode == "frame" %} checked{% endif %}>
      in a dialog's frame (Canvas, Moodle)</label>
    <label><input type="radio" name="mode" value="tab" id="mode-tab"{% if mode == "tab" %} checked{% endif %}>
      in a new tab (Brightspace)</label>
  </fieldset>
  <button id="register" type="button">Register</button>
  <fieldset>
    <legend>Screens a happy path never shows</legend>
    <button id="register-timed-out" type="button" data-scenario="timed_out">Register a timed-out registration</button>
    <button id="register-needs-attention" type="button" data-scenario="needs_attention">Register; LTIaaS will refuse
      the completion after the payment (needs attention)</button>
  </fieldset>
  <div id="frame-holder"></div>
  <p id="lms-status">Waiting for the tool…</p>
  <ul id="lms-log"></ul>
</div>
<script>
(function () {
  var extraQuery = {{ query|tojson }};
  var scenarioBase = {{ scenario_base|tojson }};
  var allowedOrigin = null;  // like Canvas: the origin of the URL the admin typed, and nothing else
  var tab = null;            // Brightspace: the registration's tab, whose opener is this page
  var statusLine = document.getElementById('lms-status');
  function logLine(text) {
    var li = document.createElement('li');
    li.textContent = text;
    document.getElementById('lms-log').appendChild(li);
  }
  function start(scenario) {
    var url;
    try { url = new URL(document.getElementById('registration-url').value.trim()); }
    catch (e) { statusLine.textContent = 'That is not a URL.'; return; }
    allowedOrigin = url.origin;
    Object.keys(extraQuery).forEach(function (k) { url.searchParams.set(k, extraQuery[k]); });
    if (scenario) {  // the stand-in sets the registration up, then sends the frame or tab on as LTIaaS would
      var set_up = new URL(scenarioBase + scenario);
      set_up.search = url.search;
      url = set_up;
    }
    var old = document.getElementById('registration');
    if (old) { old.remove(); }
    if (document.getElementById('mode-tab').checked) {
      tab = window.open(url.toString(), '_blank');  // synchronous in the click, as Brightspace does
      statusLine.textContent = tab ? 'Registering in the new tab…' : 'The browser blocked the registration tab.';
      return;
    }
    var frame = document.createElement('iframe');
    frame.id = 'registration';
    frame.title = 'Tool registration';
    frame.src = url.toString();
    document.getElementById('frame-holder').appendChild(frame);
    statusLine.textContent = 'Waiting for the tool…';
  }
  document.getElementById('register').addEventListener('click', function () { start(null); });
  Array.prototype.forEach.call(document.querySelectorAll('[data-scenario]'), function (button) {
    button.addEventListener('click', function () { start(button.getAttribute('data-scenario')); });
  });
  window.addEventListener('message', function (event) {
    if (allowedOrigin === null || event.origin !== allowedOrigin) {
      logLine('ignored message from ' + event.origin);
      return;
    }
    var data = event.data;
    if (!data || data.subject !== 'org.imsglobal.lti.close') {
      logLine('ignored message from ' + event.origin + ' (not org.imsglobal.lti.close)');
      return;
    }
    var frame = document.getElementById('registration');
    if (frame) { frame.remove(); }
    if (tab && event.source === tab) { tab.close(); tab = null; }
    statusLine.textContent = 'Registration complete: the LMS received org.imsglobal.lti.close';
  });
})();
</script>
</body></html>"""

IMITATES = {
    "canvas": ("Canvas: Apps → LTI Registration → Dynamic Registration", "frame"),
    "moodle": ("Moodle: Site administration → External tool → Manage tools", "frame"),
    "brightspace": ("Brightspace: Manage Extensibility → LTI Advantage → Register Tool", "tab"),
}


def register(bp, settings, ltiaas: ltiaas_api.State) -> None:
    """Add the LMS routes (/_local/lms...) to `bp`."""
    # Every URL comes from PUBLIC_URL: browser tests open this page on another site than the service.
    base = settings.public_url.rstrip("/")

    @bp.get("/lms")
    def lms_page():
        lms = request.args.get("lms") if request.args.get("lms") in IMITATES else "canvas"
        query = {
            "openid_configuration": f"{base}/_local/lms/openid-configuration",
            "registration_token": "local-token-" + secrets.token_urlsafe(16),
        }
        if lms != "canvas":
            query["lms"] = lms
        imitates, mode = IMITATES[lms]
        html = render_template_string(
            LMS_PAGE,
            registration_url=f"{base}/lti/register",
            query=query,
            family=ltiaas_api.family_of(lms),
            imitates=imitates,
            mode=mode,
            scenario_base=f"{base}/_local/lms/scenario/",
            vendor_url=f"{base}/_local/vendor",
        )
        return Response(html, mimetype="text/html", headers={"Cache-Control": "no-store"})

    @bp.get("/lms/scenario/<any(timed_out, needs_attention):scenario>")
    def lms_scenario(scenario):
        """Start a registration at the LTIaaS stand-in (with the LMS's query, as /lti/register would),
        set it up for the screen asked for, and send the frame or tab to its pre-approval page."""
        started = requests.get(
            f"{base}/_local/ltiaas/lti/register", params=request.args.to_dict(), allow_redirects=False, timeout=10
        )
        location = started.headers.get("Location", "")
        registration_id = (parse_qs(urlsplit(location).query).get("registrationId") or [""])[0]
        if started.status_code != 302 or not registration_id:
            abort(502, description="The LTIaaS stand-in did not start a registration.")
        if scenario == "needs_attention":
            # The admin pays as usual; LTIaaS then refuses Complete (the LMS said no): paid, not registered.
            ltiaas.refuse_completion(registration_id)
        else:
            # The service opens the registration (its first visit), which is then made older than the
            # LMS token's hour: the page says it timed out and nothing was charged.
            opened = requests.get(f"{base}/pre-approval", params={"registrationId": registration_id}, timeout=30)
            if opened.status_code != 200:
                abort(502, description="The service did not open the registration.")
            window = timedelta(minutes=current_app.config["SETTINGS"].registration_window_minutes + 1)
            created_at = db.session.scalars(
                select(Registration.created_at).where(Registration.registration_id == registration_id)
            ).one()
            db.session.execute(
                update(Registration)
                .where(Registration.registration_id == registration_id)
                .values(created_at=created_at - window)
            )
            db.session.commit()
        return redirect(f"{base}/pre-approval?{urlencode({'registrationId': registration_id})}", 302)

    @bp.get("/lms/openid-configuration")
    def lms_openid_configuration():
        sso = "https://sso.canvaslms.com"
        return jsonify(
            {
                "issuer": "https://canvas.instructure.com",
                "authorization_endpoint": f"{sso}/api/lti/authorize_redirect",
                "token_endpoint": f"{sso}/login/oauth2/token",
                "jwks_uri": f"{sso}/api/lti/security/jwks",
                "registration_endpoint": f"{base}/_local/lms/registrations",
                "scopes_supported": ["openid", "https://purl.imsglobal.org/spec/lti-ags/scope/score"],
                "https://purl.imsglobal.org/spec/lti-platform-configuration": {
                    "product_family_code": "canvas",
                    "version": "cloud",
                    "messages_supported": [{"type": "LtiResourceLinkRequest"}, {"type": "LtiDeepLinkingRequest"}],
                },
            }
        )
