"""Local LMS stand-in: a page imitating Canvas's Dynamic Registration modal, origin check included."""
import secrets

from flask import Response, jsonify, render_template_string, request

LMS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Local LMS stand-in — Dynamic Registration</title>
<style>body{font-family:system-ui,sans-serif;margin:2rem}.modal{border:1px solid #888;padding:1rem;max-width:52rem}
#registration{width:800px;height:600px;border:1px solid #ccc;display:block;margin-top:1rem}#lms-log{color:#666}</style>
</head><body>
<p><strong>Local LMS stand-in</strong> (imitates Canvas: Apps → LTI Registration → Dynamic Registration;
  LTIaaS sees it as <code>{{ family }}</code>)</p>
<div class="modal">
  <label for="registration-url">Registration URL</label>
  <input id="registration-url" type="url" size="70" value="{{ registration_url }}">
  <button id="register" type="button">Register</button>
  <div id="frame-holder"></div>
  <p id="lms-status">Waiting for the tool…</p>
  <ul id="lms-log"></ul>
</div>
<script>
(function () {
  var extraQuery = {{ query|tojson }};
  var allowedOrigin = null;  // like Canvas: the origin of the URL the admin typed, and nothing else
  var statusLine = document.getElementById('lms-status');
  function logLine(text) {
    var li = document.createElement('li');
    li.textContent = text;
    document.getElementById('lms-log').appendChild(li);
  }
  document.getElementById('register').addEventListener('click', function () {
    var url;
    try { url = new URL(document.getElementById('registration-url').value.trim()); }
    catch (e) { statusLine.textContent = 'That is not a URL.'; return; }
    allowedOrigin = url.origin;
    Object.keys(extraQuery).forEach(function (k) { url.searchParams.set(k, extraQuery[k]); });
    var old = document.getElementById('registration');
    if (old) { old.remove(); }
    var frame = document.createElement('iframe');
    frame.id = 'registration';
    frame.src = url.toString();
    document.getElementById('frame-holder').appendChild(frame);
    statusLine.textContent = 'Waiting for the tool…';
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
    statusLine.textContent = 'Registration complete: the LMS received org.imsglobal.lti.close';
  });
})();
</script>
</body></html>"""


def register(bp, settings) -> None:
    """Add the LMS routes (/_local/lms...) to `bp`."""
    # Every URL comes from PUBLIC_URL: browser tests open this page on another site than the service.
    base = settings.public_url.rstrip("/")

    @bp.get("/lms")
    def lms_page():
        query = {"openid_configuration": f"{base}/_local/lms/openid-configuration",
                 "registration_token": "local-token-" + secrets.token_urlsafe(16)}
        if request.args.get("lms") == "moodle":
            query["lms"] = "moodle"
        html = render_template_string(LMS_PAGE, registration_url=f"{base}/lti/register", query=query,
                                      family=query.get("lms", "canvas"))
        return Response(html, mimetype="text/html", headers={"Cache-Control": "no-store"})

    @bp.get("/lms/openid-configuration")
    def lms_openid_configuration():
        sso = "https://sso.canvaslms.com"
        return jsonify({
            "issuer": "https://canvas.instructure.com",
            "authorization_endpoint": f"{sso}/api/lti/authorize_redirect",
            "token_endpoint": f"{sso}/login/oauth2/token", "jwks_uri": f"{sso}/api/lti/security/jwks",
            "registration_endpoint": f"{base}/_local/lms/registrations",
            "scopes_supported": ["openid", "https://purl.imsglobal.org/spec/lti-ags/scope/score"],
            "https://purl.imsglobal.org/spec/lti-platform-configuration": {
                "product_family_code": "canvas", "version": "cloud",
                "messages_supported": [{"type": "LtiResourceLinkRequest"}, {"type": "LtiDeepLinkingRequest"}]},
        })
