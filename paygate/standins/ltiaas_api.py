"""Local LTIaaS stand-in: dynamic registration with pre-approval, and the platform API.

Its state is a `State` (registrations, platforms, the calls made and the faults scripted for the next ones): the
local run keeps one in instance/ across restarts, the tests make one each (tests/fakes.Ltiaas).
"""

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
UNAUTHORIZED = {
    "status": 401,
    "error": "Unauthorized",
    "details": {"message": "INVALID_LTIK_AUTH_AUTHORIZATION_HEADER", "description": "Invalid API key"},
}
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


class State:
    """What LTIaaS holds, what it was asked, and what it is told to get wrong next.

    `registrations` maps a registrationId to the JSON LTIaaS answers for it (any JSON, so that tests can make it
    answer oddly); `details` holds what the stand-in knows of one started at /lti/register (its LMS, when, whether
    the LMS will refuse its completion). Faults: `get_failure` (a status for every lookup), `complete_failures`
    and `activation_failures` (statuses, or exceptions to raise, one per call), delays, and `probe` (called with
    the call's name while the caller waits). `on_change` is called (lock held) after each change.
    """

    def __init__(self, api_key: str):
        self.api_key = api_key
        self.lock = threading.RLock()
        self.registrations: dict[str, object] = {}
        self.details: dict[str, dict] = {}
        self.platforms: dict[str, dict] = {}
        self.complete_calls: list[str] = []
        self.complete_bodies: list = []
        self.platform_calls: list[tuple[str, str]] = []  # (activate|deactivate, platform id)
        self.get_failure: int | None = None
        self.complete_failures: list = []
        self.complete_delay = 0.0
        self.activation_failures: list = []
        self.activation_delay = 0.0
        self.probe = None
        self.on_change = None

    def changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self)

    def reset(self) -> None:
        """Forget every registration and platform."""
        with self.lock:
            self.registrations.clear()
            self.details.clear()
            self.platforms.clear()
            self.changed()

    def dump(self) -> dict:
        """What survives a restart."""
        with self.lock:
            return {"registrations": self.registrations, "details": self.details, "platforms": self.platforms}

    def load(self, saved: dict) -> None:
        with self.lock:
            for name in ("registrations", "details", "platforms"):
                store = getattr(self, name)
                store.clear()
                store.update(saved.get(name) or {})

    def add(
        self,
        registration_id: str | None = None,
        family: str = "canvas",
        url: str = "https://canvas.instructure.com",
        version: str = "cloud",
    ) -> str:
        """A registration an LMS started (as /lti/register would, without its query); returns its id."""
        registration_id = registration_id or secrets.token_urlsafe(12)
        with self.lock:
            self.registrations[registration_id] = {
                "url": url,
                "familyCode": family,
                "version": version,
                "supportedScopes": list(SCOPES),
                "supportedMessages": MESSAGES,
            }
            self.changed()
        return registration_id

    def refuse_completion(self, registration_id: str) -> None:
        """Make Complete of this registration fail as when the LMS refuses it (the local LMS stand-in's
        "needs attention" registration): LTIaaS answers 400 with externalError."""
        with self.lock:
            if registration_id in self.registrations:
                self.details.setdefault(registration_id, {})["refuse"] = True
                self.changed()

    def calls_for(self, platform_id: str) -> list[str]:
        """activate/deactivate calls made for one platform, in order."""
        return [action for action, pid in self.platform_calls if pid == platform_id]

    def live(self, registration_id: str):
        """The registration's answer if it can still be used, else None. Call with the lock held."""
        created = self.details.get(registration_id, {}).get("created")
        if created is not None and time.time() - created > REGISTRATION_TTL_SECONDS:
            self.registrations.pop(registration_id, None)
            self.details.pop(registration_id, None)
            self.changed()
        return self.registrations.get(registration_id)


def _json(body, status: int = 200) -> Response:
    return Response(json.dumps(body), status, mimetype="application/json")


def _envelope(status: int, error: str, message: str) -> Response:
    return _json({"status": status, "error": error, "details": {"message": message}}, status)


def _scripted(failure):
    """The answer of a scripted failure (a status, or an exception raised as a dropped connection)."""
    if isinstance(failure, BaseException):
        raise failure
    return _json({"status": failure, "error": "Failure", "details": {}}, failure)


def family_of(lms: str | None) -> str:
    """The familyCode LTIaaS reports for the LMS stand-in's `lms` choice."""
    return {"moodle": "moodle", "brightspace": "desire2learn"}.get(lms or "", "canvas")


def _lms(query: dict) -> dict:
    """The fake LMS behind a registration: Canvas unless the query asks for Moodle or Brightspace."""
    if query.get("lms") == "brightspace":
        url = "https://brightspace.school.example"
        return {
            "url": url,
            "familyCode": "desire2learn",
            "version": "20.25.1",
            "auth": f"{url}/d2l/lti/authenticate",
            "token": "https://auth.brightspace.com/core/connect/token",
            "jwks": "https://brightspace.school.example/d2l/.well-known/jwks",
        }
    if query.get("lms") == "moodle":
        oidc = urlsplit(query.get("openid_configuration", ""))
        url = (
            f"{oidc.scheme}://{oidc.netloc}"
            if oidc.scheme in ("http", "https") and oidc.netloc
            else "https://moodle.school.example"
        )
        return {
            "url": url,
            "familyCode": "moodle",
            "version": "4.4.1+ (Build: 20240705)",
            "auth": f"{url}/mod/lti/auth.php",
            "token": f"{url}/mod/lti/token.php",
            "jwks": f"{url}/mod/lti/certs.php",
        }
    sso = "https://sso.canvaslms.com"
    return {
        "url": "https://canvas.instructure.com",
        "familyCode": "canvas",
        "version": "cloud",
        "auth": f"{sso}/api/lti/authorize_redirect",
        "token": f"{sso}/login/oauth2/token",
        "jwks": f"{sso}/api/lti/security/jwks",
    }


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
    if (
        ("platformName" in body and not isinstance(body["platformName"], str))
        or ("autoActivate" in body and not isinstance(body["autoActivate"], bool))
        or not isinstance(messages, list)
        or not all(isinstance(m, dict) and isinstance(m.get("type"), str) for m in messages)
    ):
        return None
    return body


def _new_platform(state: State, registration_id: str, body: dict) -> str:
    """Complete a live registration: it becomes a platform (an id completes once, ever). Lock held."""
    answer = state.registrations.pop(registration_id)
    lms = state.details.pop(registration_id, {}).get("lms")
    if lms is None:  # added without an LMS query: what the answer says
        url = answer.get("url") if isinstance(answer, dict) and isinstance(answer.get("url"), str) else ""
        lms = {
            "url": url,
            "familyCode": answer.get("familyCode", "lms") if isinstance(answer, dict) else "lms",
            "auth": f"{url}/auth",
            "token": f"{url}/token",
            "jwks": f"{url}/jwks",
        }
    platform_id = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(19))
    state.platforms[platform_id] = {
        "id": platform_id,
        "url": lms["url"],
        "clientId": f"10000000000{secrets.randbelow(10**4):04d}",
        "name": body.get("platformName") or f"{str(lms['familyCode']).title()} (local stand-in)",
        "authenticationEndpoint": lms["auth"],
        "accesstokenEndpoint": lms["token"],
        "authConfig": {"key": lms["jwks"], "method": "JWK_SET"},
        "publicKey": None,
        "active": body.get("autoActivate", True),
    }
    state.changed()
    return platform_id


def register(bp, state: State, public_url: str) -> None:
    """Add the LTIaaS routes (/ltiaas/...) to `bp`, serving `state`; the pre-approval page is at `public_url`."""
    base = public_url.rstrip("/")

    def authorized() -> bool:
        given = request.headers.get("Authorization", "").encode()
        return secrets.compare_digest(given, f"Bearer {state.api_key}".encode())

    @bp.get("/ltiaas/lti/register")
    def ltiaas_register():
        query = request.args.to_dict()
        registration_id = secrets.token_urlsafe(16)
        lms = _lms(query)
        with state.lock:
            state.registrations[registration_id] = {
                "url": lms["url"],
                "familyCode": lms["familyCode"],
                "version": lms["version"],
                "supportedScopes": SCOPES,
                "supportedMessages": MESSAGES,
            }
            state.details[registration_id] = {"query": query, "lms": lms, "created": time.time()}
            state.changed()
        # The query holds the LMS's registration token: log only what identifies the attempt.
        log.info("local LTIaaS: registration %s started by a %s LMS", registration_id, lms["familyCode"])
        return redirect(f"{base}/pre-approval?{urlencode({'registrationId': registration_id})}", 302)

    @bp.get("/ltiaas/api/registrations/<registration_id>")
    def ltiaas_registration(registration_id):
        state.probe and state.probe("get")
        if not authorized():
            return _json(UNAUTHORIZED, 401)
        if state.get_failure:
            return _scripted(state.get_failure)
        with state.lock:
            answer = state.live(registration_id)
            if answer is None:
                return _envelope(404, "Not Found", "REGISTRATION_NOT_FOUND")
            lms = state.details.get(registration_id, {}).get("lms")
            if request.args.get("raw") == "true" and lms:
                return _json(
                    {
                        "openIdConfiguration": {
                            "issuer": lms["url"],
                            "authorization_endpoint": lms["auth"],
                            "token_endpoint": lms["token"],
                            "jwks_uri": lms["jwks"],
                        },
                        "registrationToken": state.details[registration_id]["query"].get("registration_token"),
                    }
                )
            return _json(answer)

    @bp.post("/ltiaas/api/registrations/<registration_id>/complete")
    def ltiaas_complete(registration_id):
        state.probe and state.probe("complete")
        if not authorized():
            return _json(UNAUTHORIZED, 401)
        body = _completion_body()
        with state.lock:
            state.complete_calls.append(registration_id)
            state.complete_bodies.append(body if body is not None else request.get_data(as_text=True))
            failure = state.complete_failures.pop(0) if state.complete_failures else None
        if state.complete_delay:
            time.sleep(state.complete_delay)
        if failure is not None:
            return _scripted(failure)
        with state.lock:
            if state.live(registration_id) is None:
                return _envelope(404, "Not Found", "REGISTRATION_NOT_FOUND")
            if body is None:
                return _envelope(400, "Bad Request", "INVALID_PARAMETERS")
            if state.details.get(registration_id, {}).get("refuse"):
                log.info("local LTIaaS: registration %s: the LMS refused the completion (as asked)", registration_id)
                return _json(
                    {
                        "status": 400,
                        "error": "Bad Request",
                        "details": {"message": "REGISTRATION_FAILED", "externalError": True},
                    },
                    400,
                )
            platform_id = _new_platform(state, registration_id, body)
        log.info("local LTIaaS: registration %s completed as platform %s", registration_id, platform_id)
        return _json({"platformId": platform_id, "html": CLOSE_HTML})

    def platforms_list():
        if not authorized():
            return _json(UNAUTHORIZED, 401)
        wanted = {k: request.args[k] for k in ("id", "url", "clientId") if k in request.args}
        with state.lock:
            return _json(
                {"platforms": [p for p in state.platforms.values() if all(p.get(k) == v for k, v in wanted.items())]}
            )

    def platform_get(platform_id):
        if not authorized():
            return _json(UNAUTHORIZED, 401)
        with state.lock:
            if platform_id not in state.platforms:
                return _envelope(404, "Not Found", "PLATFORM_NOT_FOUND")
            return _json(state.platforms[platform_id])

    def platform_set_active(platform_id, action):
        state.probe and state.probe("activation")
        if not authorized():
            return _json(UNAUTHORIZED, 401)
        with state.lock:
            state.platform_calls.append((action, platform_id))
            failure = state.activation_failures.pop(0) if state.activation_failures else None
        if state.activation_delay:
            time.sleep(state.activation_delay)
        if failure:
            return _scripted(failure)
        with state.lock:
            if platform_id not in state.platforms:
                return _envelope(404, "Not Found", "PLATFORM_NOT_FOUND")
            state.platforms[platform_id]["active"] = action == "activate"
            state.changed()
        return Response(status=204)

    for n, prefix in enumerate(PLATFORM_PREFIXES):
        bp.add_url_rule(prefix, f"ltiaas_platforms_{n}", platforms_list, methods=["GET"])
        bp.add_url_rule(f"{prefix}/<platform_id>", f"ltiaas_platform_{n}", platform_get, methods=["GET"])
        bp.add_url_rule(
            f"{prefix}/<platform_id>/<any(activate, deactivate):action>",
            f"ltiaas_platform_active_{n}",
            platform_set_active,
            methods=["POST"],
        )
