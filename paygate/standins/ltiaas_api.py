"""Local LTIaaS stand-in: dynamic registration with pre-approval, and the platform API, in memory."""
import functools
import hmac
import json
import logging
import secrets
import string
import threading
import time
from urllib.parse import urlencode, urlsplit

from flask import Response, redirect, request

log = logging.getLogger(__name__)

# LMS registration tokens live about an hour; an abandoned registrationId dies with them.
REGISTRATION_TTL_SECONDS = 3600
CLOSE_HTML = "<script>(window.opener || window.parent).postMessage({subject:'org.imsglobal.lti.close'}, '*');</script>"
UNAUTHORIZED = {"status": 401, "error": "Unauthorized",
                "details": {"message": "INVALID_LTIK_AUTH_AUTHORIZATION_HEADER", "description": "Invalid API key"}}
SCOPES = [
    "https://purl.imsglobal.org/spec/lti-ags/scope/lineitem",
    "https://purl.imsglobal.org/spec/lti-ags/scope/lineitem.readonly",
    "https://purl.imsglobal.org/spec/lti-ags/scope/result.readonly",
    "https://purl.imsglobal.org/spec/lti-ags/scope/score",
    "https://purl.imsglobal.org/spec/lti-nrps/scope/contextmembership.readonly",
    "openid",
]
MESSAGES = [{"type": "LtiResourceLinkRequest"}, {"type": "LtiDeepLinkingRequest", "placements": ["ContentArea"]}]
PLATFORM_PREFIXES = ("/ltiaas/admin/platforms", "/ltiaas/api/platforms")  # docs path and Node SDK path

_lock = threading.Lock()
_registrations: dict[str, dict] = {}
_platforms: dict[str, dict] = {}


def reset() -> None:
    with _lock:
        _registrations.clear()
        _platforms.clear()


def _json(body, status: int = 200) -> Response:
    return Response(json.dumps(body), status, mimetype="application/json")


def _envelope(status: int, error: str, message: str) -> Response:
    return _json({"status": status, "error": error, "details": {"message": message}}, status)


def family_of(lms: str | None) -> str:
    """The familyCode LTIaaS reports for the LMS stand-in's `lms` choice."""
    return {"moodle": "moodle", "brightspace": "desire2learn"}.get(lms or "", "canvas")


def refuse_completion(registration_id: str) -> None:
    """Make Complete of this registration fail as when the LMS refuses it (the local LMS stand-in's
    "needs attention" registration): LTIaaS answers 400 with externalError."""
    with _lock:
        if registration_id in _registrations:
            _registrations[registration_id]["refuse"] = True


def _lms(query: dict) -> dict:
    """The fake LMS behind a registration: Canvas unless the query asks for Moodle or Brightspace."""
    if query.get("lms") == "brightspace":
        url = "https://brightspace.school.example"
        return {"url": url, "familyCode": "desire2learn", "version": "20.25.1",
                "auth": f"{url}/d2l/lti/authenticate", "token": "https://auth.brightspace.com/core/connect/token",
                "jwks": "https://brightspace.school.example/d2l/.well-known/jwks"}
    if query.get("lms") == "moodle":
        oidc = urlsplit(query.get("openid_configuration", ""))
        url = f"{oidc.scheme}://{oidc.netloc}" if oidc.scheme in ("http", "https") and oidc.netloc \
            else "https://moodle.school.example"
        return {"url": url, "familyCode": "moodle", "version": "4.4.1+ (Build: 20240705)",
                "auth": f"{url}/mod/lti/auth.php", "token": f"{url}/mod/lti/token.php",
                "jwks": f"{url}/mod/lti/certs.php"}
    sso = "https://sso.canvaslms.com"
    return {"url": "https://canvas.instructure.com", "familyCode": "canvas", "version": "cloud",
            "auth": f"{sso}/api/lti/authorize_redirect", "token": f"{sso}/login/oauth2/token",
            "jwks": f"{sso}/api/lti/security/jwks"}


def _live(registration_id: str) -> dict | None:
    """The registration if it can still be used; caller holds _lock."""
    reg = _registrations.get(registration_id)
    if reg and time.time() - reg["created"] > REGISTRATION_TTL_SECONDS:
        del _registrations[registration_id]
        return None
    return reg


def _completion_body() -> dict | None:
    """The optional JSON body of Complete Registration, or None when malformed."""
    raw = request.get_data()
    try:
        body = json.loads(raw) if raw.strip() else {}
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    messages = body.get("messages", [])
    if ("platformName" in body and not isinstance(body["platformName"], str)) \
            or ("autoActivate" in body and not isinstance(body["autoActivate"], bool)) \
            or not isinstance(messages, list) \
            or not all(isinstance(m, dict) and isinstance(m.get("type"), str) for m in messages):
        return None
    return body


def register(bp, settings) -> None:
    """Add the LTIaaS routes (/_local/ltiaas/...) to `bp`."""
    base = settings.public_url.rstrip("/")
    expected = f"Bearer {settings.ltiaas_api_key}".encode()

    def api(fn):
        @functools.wraps(fn)
        def view(**kwargs):
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return _json(UNAUTHORIZED, 401)
            with _lock:
                return fn(**kwargs)
        return view

    @bp.get("/ltiaas/lti/register")
    def ltiaas_register():
        query = request.args.to_dict()
        registration_id = secrets.token_urlsafe(16)
        lms = _lms(query)
        with _lock:
            _registrations[registration_id] = {"query": query, "lms": lms, "created": time.time()}
        # The query holds the LMS's registration token: log only what identifies the attempt.
        log.info("local LTIaaS: registration %s started by a %s LMS", registration_id, lms["familyCode"])
        return redirect(f"{base}/pre-approval?{urlencode({'registrationId': registration_id})}", 302)

    @bp.get("/ltiaas/api/registrations/<registration_id>")
    @api
    def ltiaas_registration(registration_id):
        reg = _live(registration_id)
        if reg is None:
            return _envelope(404, "Not Found", "REGISTRATION_NOT_FOUND")
        lms = reg["lms"]
        if request.args.get("raw") == "true":
            return _json({"openIdConfiguration": {"issuer": lms["url"], "authorization_endpoint": lms["auth"],
                                                  "token_endpoint": lms["token"], "jwks_uri": lms["jwks"]},
                          "registrationToken": reg["query"].get("registration_token")})
        return _json({"url": lms["url"], "familyCode": lms["familyCode"], "version": lms["version"],
                      "supportedScopes": SCOPES, "supportedMessages": MESSAGES})

    @bp.post("/ltiaas/api/registrations/<registration_id>/complete")
    @api
    def ltiaas_complete(registration_id):
        if _live(registration_id) is None:
            return _envelope(404, "Not Found", "REGISTRATION_NOT_FOUND")
        body = _completion_body()
        if body is None:
            return _envelope(400, "Bad Request", "INVALID_PARAMETERS")
        if _registrations[registration_id].get("refuse"):
            log.info("local LTIaaS: registration %s: the LMS refused the completion (as asked)", registration_id)
            return _json({"status": 400, "error": "Bad Request",
                          "details": {"message": "REGISTRATION_FAILED", "externalError": True}}, 400)
        lms = _registrations.pop(registration_id)["lms"]  # an id completes once, ever
        platform_id = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(19))
        _platforms[platform_id] = {
            "id": platform_id, "url": lms["url"], "clientId": f"10000000000{secrets.randbelow(10**4):04d}",
            "name": body.get("platformName") or f"{lms['familyCode'].title()} (local stand-in)",
            "authenticationEndpoint": lms["auth"], "accesstokenEndpoint": lms["token"],
            "authConfig": {"key": lms["jwks"], "method": "JWK_SET"}, "publicKey": None,
            "active": body.get("autoActivate", True),
        }
        log.info("local LTIaaS: registration %s completed as platform %s", registration_id, platform_id)
        return _json({"platformId": platform_id, "html": CLOSE_HTML})

    @api
    def platforms_list():
        wanted = {k: request.args[k] for k in ("id", "url", "clientId") if k in request.args}
        found = [p for p in _platforms.values() if all(p[k] == v for k, v in wanted.items())]
        return _json({"platforms": found})

    @api
    def platform_get(platform_id):
        if platform_id not in _platforms:
            return _envelope(404, "Not Found", "PLATFORM_NOT_FOUND")
        return _json(_platforms[platform_id])

    @api
    def platform_set_active(platform_id, action):
        if platform_id not in _platforms:
            return _envelope(404, "Not Found", "PLATFORM_NOT_FOUND")
        _platforms[platform_id]["active"] = action == "activate"
        return Response(status=204)

    for n, prefix in enumerate(PLATFORM_PREFIXES):
        bp.add_url_rule(prefix, f"ltiaas_platforms_{n}", platforms_list, methods=["GET"])
        bp.add_url_rule(f"{prefix}/<platform_id>", f"ltiaas_platform_{n}", platform_get, methods=["GET"])
        bp.add_url_rule(f"{prefix}/<platform_id>/<any(activate, deactivate):action>",
                        f"ltiaas_platform_active_{n}", platform_set_active, methods=["POST"])
