"""The LTIaaS API: the one module that talks to it (registrations and platforms)."""

import functools
import json
import logging
import re
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote, urlsplit

import requests
from flask import current_app
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    StringConstraints,
    ValidationError,
)

from paygate.core import telemetry
from paygate.core.logs import current_request_id
from paygate.core.text import clean

log = logging.getLogger(__name__)

# LTIaaS does not document the alphabet of its ids; these are URL-safe and can never climb a path.
_ID = re.compile(r"^(?!\.+$)[A-Za-z0-9._~-]{1,128}$")
LMS_URL_MAX = 500  # registrations.lms_url


class LtiaasError(Exception):
    """A failed call. `retryable` when trying again may help; `uncertain` when it may have taken effect."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        details: dict | None = None,
        retryable: bool = False,
        uncertain: bool = False,
    ):
        super().__init__(message)
        self.status = status
        self.details = details or {}
        self.retryable = retryable
        self.uncertain = uncertain

    def as_dict(self) -> dict:
        return {
            "message": str(self),
            "status": self.status,
            "details": self.details,
            "retryable": self.retryable,
            "uncertain": self.uncertain,
        }


class UnusableLms(LtiaasError):
    """LTIaaS describes the LMS without an address that can be one (none, not http(s), no host): the LMS
    cannot be registered, and asking again gives the same answer."""


class UnexpectedAnswer(LtiaasError):
    """LTIaaS answered 2xx with a body that does not fit its documented shape (no JSON object; for the
    completion, a number for a string, a NUL, a missing field). The message names the fields, never
    their values."""


# What LTIaaS documents it answers, checked before anything is stored (docs/architecture.md, invariant 7):
# the database refuses NULs and numbers in text columns, on every retry alike. What only describes the LMS
# to a person (its URL, family, version, scopes and messages) is normalised instead (paygate/core/text.py),
# so that an odd description never stops the admin; only an LMS URL that cannot be one refuses (UnusableLms).


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("contains a NUL character")
    return value


def _texts(value, max_len: int = 200, max_items: int = 200) -> list[str]:
    """A list of display strings: its items cleaned, those that are no text left out; not a list: []."""
    if not isinstance(value, list):
        return []
    return [text for text in (clean(item, max_len) for item in value[:max_items]) if text is not None]


def _messages(value) -> list[dict]:
    """supportedMessages: [{type, placements?}], what does not fit that shape left out."""
    messages = []
    for item in value[:200] if isinstance(value, list) else []:
        kind = clean(item.get("type"), 200) if isinstance(item, dict) else None
        if kind is not None:
            placements = item.get("placements")
            messages.append({"type": kind} if placements is None else {"type": kind, "placements": _texts(placements)})
    return messages


def _display(max_len: int):
    return BeforeValidator(lambda value: clean(value, max_len))


_Url = Annotated[str | None, _display(LMS_URL_MAX + 1)]  # one more: a longer URL is refused, never cut
_Id = Annotated[StrictStr, StringConstraints(pattern=r"^[A-Za-z0-9._~-]{1,128}$")]


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)  # LTIaaS may add fields


class _RegistrationAnswer(_Answer):
    """GET /api/registrations/{id}: {url, familyCode, version, supportedScopes, supportedMessages}."""

    url: _Url = None
    family: Annotated[str | None, _display(100)] = Field(None, alias="familyCode")
    version: Annotated[str | None, _display(200)] = None
    supported_scopes: Annotated[list[str], BeforeValidator(_texts)] = Field(
        default_factory=list, alias="supportedScopes"
    )
    supported_messages: Annotated[list[dict], BeforeValidator(_messages)] = Field(
        default_factory=list, alias="supportedMessages"
    )


def usable_url(value: str | None) -> bool:
    """Whether `value` (clean text) can be an LMS's address: http(s), a host, no spaces, fits its column."""
    if not value or len(value) > LMS_URL_MAX or " " in value:
        return False
    try:
        parts = urlsplit(value)
        return parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:  # e.g. an unclosed [ of an IPv6 host
        return False


class _CompletionAnswer(_Answer):
    """POST /api/registrations/{id}/complete: {platformId, html}."""

    platform_id: _Id | StrictInt = Field(alias="platformId")
    html: Annotated[StrictStr, StringConstraints(min_length=1, max_length=100_000), AfterValidator(_no_nul)]


def _validated(model: type[_Answer], response: requests.Response, what: str, **flags) -> _Answer:
    """The response's JSON body as `model`, or UnexpectedAnswer naming what did not fit (no values)."""
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}"
            for e in exc.errors(include_input=False, include_url=False)[:3]
        )
        raise UnexpectedAnswer(f"LTIaaS answered unexpectedly to {what} ({problems})", **flags) from None


def _json_object(response: requests.Response, what: str, **flags) -> dict:
    """The response's body as a JSON object, read by Python's parser (a lone surrogate or a NaN is then
    text for `clean`, not a refusal), or UnexpectedAnswer."""
    try:
        body = json.loads(response.content)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, nested beyond reason
        body = None
    if not isinstance(body, dict):
        raise UnexpectedAnswer(f"LTIaaS answered unexpectedly to {what} (not a JSON object)", **flags)
    return body


def _error_details(body) -> tuple[str | None, dict]:
    """LTIaaS's error envelope `{status, error, details}`, reduced to what is safe to store and show
    (the message goes into the timeline and the operator pages, the details into JSON columns)."""
    if not isinstance(body, dict):
        return None, {}
    error = body.get("error")
    error = error if isinstance(error, str) and error.isprintable() and len(error) <= 100 else None
    details = body.get("details")
    return error, _printable(details) if isinstance(details, dict) else {}


def _printable(value, depth: int = 0):
    """`value` (parsed JSON) with control characters dropped from its strings, and bounded in size."""
    if isinstance(value, str):
        return "".join(c for c in value[:500] if c.isprintable())
    if isinstance(value, dict) and depth < 4:
        return {_printable(str(k), depth + 1): _printable(v, depth + 1) for k, v in list(value.items())[:20]}
    if isinstance(value, list) and depth < 4:
        return [_printable(v, depth + 1) for v in value[:20]]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return None


@dataclass(frozen=True)
class LmsDetails:
    url: str
    family: str | None
    version: str | None
    supported_scopes: list
    supported_messages: list


@dataclass(frozen=True)
class Completion:
    platform_id: str
    html: str


def valid_id(value: str | None) -> bool:
    """Whether `value` is a plausible LTIaaS id, safe to put into a URL path."""
    return bool(value) and _ID.match(value) is not None


def _measured(call):
    """Counts and times each call by its operation, a fixed name (paygate_ltiaas_calls_total,
    paygate/core/telemetry.py)."""

    @functools.wraps(call)
    def measured(self, method: str, url: str, *, operation: str, **kwargs):
        with telemetry.outbound("ltiaas", operation):
            return call(self, method, url, **kwargs)

    return measured


class Ltiaas:
    def __init__(self, base_url: str, api_key: str, platforms_path: str, timeout: float):
        self.base_url = base_url.rstrip("/")
        self.platforms_path = "/" + platforms_path.strip("/")
        self.timeout = timeout
        self._http = requests.Session()
        self._http.headers["Authorization"] = f"Bearer {api_key}"

    def _url(self, *parts: str) -> str:
        for part in parts[1:]:
            if not valid_id(part) and part not in {"complete", "activate", "deactivate"}:
                raise ValueError("not an LTIaaS id")
        return self.base_url + parts[0] + "".join("/" + quote(p, safe="") for p in parts[1:])

    @_measured
    def _call(self, method: str, url: str, **kwargs) -> requests.Response:
        request_id = current_request_id()  # the request (or after-answer work) this call is made for
        if request_id:
            kwargs["headers"] = {**(kwargs.get("headers") or {}), "X-Request-ID": request_id}
        # A connect timeout means nothing was sent; a read timeout or a reset may have reached LTIaaS.
        try:
            response = self._http.request(method, url, timeout=(min(3.05, self.timeout), self.timeout), **kwargs)
        except requests.ConnectTimeout:
            raise LtiaasError("LTIaaS could not be reached (connect timeout)", retryable=True) from None
        except requests.ConnectionError as exc:
            # Only a connection that was never made proves nothing was sent; a read that timed out
            # or broke off (requests reports both as ConnectionError too) may have reached LTIaaS.
            text = str(exc).lower()
            sent = not any(
                sign in text
                for sign in ("newconnectionerror", "failed to establish", "connection refused", "nameresolution")
            )
            raise LtiaasError("LTIaaS connection failed", retryable=True, uncertain=sent) from None
        except requests.Timeout:
            raise LtiaasError("LTIaaS did not answer in time", retryable=True, uncertain=True) from None
        except requests.RequestException as exc:  # e.g. the answer broke off mid-body: it was sent
            raise LtiaasError(f"LTIaaS call failed ({type(exc).__name__})", retryable=True, uncertain=True) from None
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {}
            error, details = _error_details(body)
            retryable = response.status_code in (408, 425, 429) or response.status_code >= 500
            raise LtiaasError(
                f"LTIaaS answered {response.status_code}" + (f" {error}" if error else ""),
                status=response.status_code,
                details=details,
                retryable=retryable,
                # A 500 may come after the work was done, a 502/504 from a proxy that gave up waiting.
                uncertain=response.status_code in (500, 502, 504),
            )
        return response

    def get_registration(self, registration_id: str) -> LmsDetails:
        """GET /api/registrations/{id}: which LMS is registering."""
        response = self._call("GET", self._url("/api/registrations", registration_id), operation="get_registration")
        # Retryable: LTIaaS may answer properly next time, and nothing was changed there.
        # Every JSON object fits the model (it normalises); only the URL can leave the LMS unregistrable.
        body = _RegistrationAnswer.model_validate(_json_object(response, "the registration lookup", retryable=True))
        if not usable_url(body.url):
            raise UnusableLms("LTIaaS gave no usable LMS URL for the registration")
        return LmsDetails(
            url=body.url,
            family=body.family,
            version=body.version,
            supported_scopes=body.supported_scopes,
            supported_messages=body.supported_messages,
        )

    def complete_registration(self, registration_id: str, body: dict) -> Completion:
        """POST /api/registrations/{id}/complete: can succeed once per id, ever."""
        response = self._call(
            "POST",
            self._url("/api/registrations", registration_id, "complete"),
            json=body,
            operation="complete_registration",
        )
        # Uncertain: LTIaaS may have registered the platform all the same.
        body = _validated(_CompletionAnswer, response, "the completion", uncertain=True)
        completion = Completion(platform_id=str(body.platform_id), html=body.html)
        if not valid_id(completion.platform_id):
            raise UnexpectedAnswer("LTIaaS sent an implausible platformId", uncertain=True)
        return completion

    def get_platform(self, platform_id: str) -> dict:
        response = self._call("GET", self._url(self.platforms_path, platform_id), operation="get_platform")
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise UnexpectedAnswer("LTIaaS answered unexpectedly to the platform lookup (not a JSON object)")
        return body

    def set_platform_active(self, platform_id: str, active: bool) -> None:
        """POST {platforms}/{id}/activate or /deactivate (no body)."""
        self._call(
            "POST",
            self._url(self.platforms_path, platform_id, "activate" if active else "deactivate"),
            operation="set_platform_active",
        )


def client() -> Ltiaas:
    """The application's LTIaaS client (one per app, shared connection pool)."""
    ext = current_app.extensions
    if "ltiaas" not in ext:
        s = current_app.config["SETTINGS"]
        ext["ltiaas"] = Ltiaas(s.ltiaas_url, s.ltiaas_api_key, s.ltiaas_platforms_path, s.ltiaas_timeout_seconds)
    return ext["ltiaas"]
