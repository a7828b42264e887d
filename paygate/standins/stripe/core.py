"""The stand-in's shared machinery: stores, Stripe's error objects, form decoding, idempotency, rendering
(its events are sent by paygate/standins/stripe/events.py)."""

import calendar
import copy
import functools
import hmac
import json
import logging
import re
import secrets
import string
import time
from datetime import UTC, datetime

import stripe
from flask import Response, request

from paygate.standins.stripe import parameters

known = parameters.known  # routes declare what they know with core.known(...)

log = logging.getLogger(__name__)

DAY = 24 * 3600
API = "/stripe/v1"  # under the blueprint's /_local

# Fields that hold an id and may be expanded into the object (expand[]=latest_invoice.payments ...).
EXPANDABLE = {
    "customer": "customer",
    "latest_invoice": "invoice",
    "latest_charge": "charge",
    "charge": "charge",
    "payment_intent": "payment_intent",
    "subscription": "subscription",
    "invoice": "invoice",
}
# Object type -> (field or fields, fn(body, obj, expand)) adding what Stripe returns only when asked
# (invoice.payments ...).
INCLUDES: dict = {}


def rand(n: int) -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(n))


def now() -> int:
    return int(time.time())


class StripeFail(Exception):
    """An API error, answered as Stripe's {"error": {...}} object."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        param: str | None = None,
        kind: str = "invalid_request_error",
    ):
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.kind = status, message, code, param, kind

    def response(self) -> Response:
        error = {"type": self.kind, "message": self.message, "code": self.code}
        if self.param:
            error["param"] = self.param
        return _raw(json.dumps({"error": error}, indent=2), self.status)


def _raw(text: str, status: int = 200, replayed: bool = False) -> Response:
    headers = {"Request-Id": "req_" + rand(14), "Stripe-Version": stripe.api_version}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(text, status, headers=headers, mimetype="application/json")


def missing(kind: str, object_id: str, param: str | None = "id", status: int = 404) -> StripeFail:
    return StripeFail(status, f"No such {kind}: '{object_id}'", "resource_missing", param)


def state_error(message: str, param: str | None = None) -> StripeFail:
    """An object is not in a state that allows the call."""
    return StripeFail(400, message, None, param)


def required(params: dict, name: str):
    if params.get(name) in (None, ""):
        raise StripeFail(400, f"Missing required param: {name}.", "parameter_missing", name)
    return params[name]


def decode_form(pairs) -> dict:
    """Stripe's bracket notation (a[b][0][c]=v, a[]=v) back into nested dicts and lists."""
    root: dict = {}
    for key, value in pairs:
        match = re.fullmatch(r"([^\[\]]+)((?:\[[^\[\]]*\])*)", key)
        if not match:
            raise StripeFail(400, f"Invalid parameter name: {key}", "parameter_unknown", key)
        parts = [match.group(1), *re.findall(r"\[([^\[\]]*)\]", match.group(2))]
        node = root
        for depth, part in enumerate(parts):
            if not isinstance(node, dict):
                raise StripeFail(400, f"Invalid parameter: {key}", "parameter_invalid", key)
            part = part or str(len(node))  # a[] appends
            if depth == len(parts) - 1:
                node[part] = value
            else:
                node = node.setdefault(part, {})
    return _listify(root)


def _listify(node, name: str = ""):
    if not isinstance(node, dict):
        return node
    out = {k: _listify(v, k) for k, v in node.items()}
    # metadata keys are the caller's own and may well be digits
    if out and name != "metadata" and all(k.isdigit() for k in out):
        return [out[k] for k in sorted(out, key=int)]
    return out


def to_int(value, param: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise StripeFail(400, f"Invalid integer: {value}", "parameter_invalid_integer", param) from None


def to_bool(value, param: str) -> bool:
    if value in (None, "", "false", False):
        return False
    if value in ("true", True):
        return True
    raise StripeFail(400, f"Invalid boolean: {value}", "parameter_invalid_boolean", param)


def as_list(params: dict, name: str) -> list:
    value = params.get(name) or []
    if not isinstance(value, list):
        raise StripeFail(400, "Invalid array", "parameter_invalid", name)
    return value


def expansions(params: dict) -> set:
    value = params.get("expand", [])
    return set(value if isinstance(value, list) else [value])


def metadata(value, param: str = "metadata") -> dict:
    if value in (None, ""):  # "" unsets, as in Stripe
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise StripeFail(400, "Invalid object", "parameter_invalid", param)
    return value


def custom_fields(value, param: str = "custom_fields") -> list | None:
    """Invoice custom fields: at most 4, names up to 40 and values up to 140 characters."""
    if value in (None, ""):
        return None
    if not isinstance(value, list) or len(value) > 4:
        raise StripeFail(400, "Invalid array: at most 4 custom fields", "parameter_invalid", param)
    for i, field in enumerate(value):
        for name, most in (("name", 40), ("value", 140)):
            text = field.get(name) if isinstance(field, dict) else None
            if not text or len(text) > most:
                raise StripeFail(
                    400,
                    f"{param}[{i}][{name}] must be 1 to {most} characters.",
                    "parameter_invalid",
                    f"{param}[{i}][{name}]",
                )
    return [{"name": f["name"], "value": f["value"]} for f in value]


def add_interval(ts: int, interval: str, count: int = 1) -> int:
    """`ts` moved on by whole days, weeks, calendar months or years, as Stripe bills."""
    if interval in ("day", "week"):
        return ts + count * DAY * (7 if interval == "week" else 1)
    moment = datetime.fromtimestamp(ts, UTC)
    months = moment.month - 1 + count * (12 if interval == "year" else 1)
    year, month = moment.year + months // 12, months % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])  # 31 Jan + 1 month = 28/29 Feb
    return int(moment.replace(year=year, month=month, day=day).timestamp())


# --- objects --------------------------------------------------------------------------------------------------


def create(st, kind: str, prefix: str, id_length: int = 24, **fields) -> dict:
    """A new object of `kind` in its store, with the fields every Stripe object has."""
    obj = {
        "id": prefix + rand(id_length),
        "object": kind,
        "created": now(),
        "livemode": False,
        "metadata": {},
        **fields,
        "_seq": st.next_seq(),
    }
    st.stores[kind][obj["id"]] = obj
    return obj


def get(st, kind: str, object_id, param: str | None = None) -> dict:
    """The stored object; unknown: 404 for the path's id, 400 naming `param` for a parameter."""
    obj = st.stores[kind].get(object_id) if isinstance(object_id, str) else None
    if obj is not None and kind == "payment_intent" and not _still_named(st, obj):
        obj = None
    if obj is None:
        raise missing(kind, str(object_id), param or "id", 400 if param else 404)
    return obj


def _still_named(st, pi: dict) -> bool:
    """With `payments_follow_sessions`, a Checkout payment is known only while a session names it."""
    return not (st.payments_follow_sessions and pi.get("_session")) or any(
        s.get("payment_intent") == pi["id"] for s in st.stores["checkout.session"].values()
    )


def newest(st, kind: str, test=lambda obj: True) -> list[dict]:
    return sorted(
        (o for o in st.stores[kind].values() if test(o)), key=lambda o: (o["created"], o.get("_seq", 0)), reverse=True
    )


def render(st, obj: dict, expand=()) -> dict:
    """The object's JSON as the API answers it: private fields dropped, `expand` paths filled in."""
    body = copy.deepcopy({k: v for k, v in obj.items() if not k.startswith("_")})
    expand = set(expand)
    include = INCLUDES.get(obj["object"])
    if include:
        include[1](body, obj, expand)
    for field in {path.split(".", 1)[0] for path in expand}:
        kind = EXPANDABLE.get(field)
        if kind and isinstance(body.get(field), str) and body[field] in st.stores[kind]:
            deeper = {path.split(".", 1)[1] for path in expand if path.startswith(field + ".")}
            body[field] = render(st, st.stores[kind][body[field]], deeper)
    return body


def check_expand(obj: dict, expand) -> None:
    """Refuse, as Stripe does, to expand what the object has no expandable field for."""
    include = INCLUDES.get(obj["object"], ((),))[0]
    included = (include,) if isinstance(include, str) else include  # one name, or a tuple of them
    for path in expand:
        field = path.split(".", 1)[0]
        if not (field in EXPANDABLE and field in obj) and field not in included:
            raise StripeFail(400, f"This property cannot be expanded ({path}).", None, "expand")


def list_of(data: list, url: str) -> dict:
    """A list object holding all of `data`."""
    return {"object": "list", "data": data, "has_more": False, "url": url}


def page(st, kind: str, objs: list[dict], params: dict, url: str) -> dict:
    """One page of `objs` (newest first) after `starting_after`, `limit` long; `expand` paths name `data.<field>`."""
    limit = to_int(params.get("limit", 10), "limit")
    if not 1 <= limit <= 100:
        raise StripeFail(400, "This value must be between 1 and 100.", "parameter_invalid_integer", "limit")
    cursor = params.get("starting_after")
    if cursor:
        ids = [o["id"] for o in objs]
        if cursor not in ids:
            raise missing(kind, cursor, "starting_after", 400)
        objs = objs[ids.index(cursor) + 1 :]
    inner = {path[len("data.") :] for path in expansions(params) if path.startswith("data.")}
    return {**list_of([render(st, o, inner) for o in objs[:limit]], url), "has_more": len(objs) > limit}


# --- the API views --------------------------------------------------------------------------------------------


def scripted(status: int) -> StripeFail:
    """The error of a failure scripted into `State.failures`."""
    if status == 404:
        return StripeFail(404, "No such object", "resource_missing", "id")
    if status == 429:
        return StripeFail(429, "Too many requests", "rate_limit")
    if status < 500:
        return StripeFail(status, "Stripe refused the request")
    return StripeFail(status, "Stripe is having trouble", kind="api_error")


def api(st, op: str, params: dict | None = None):
    """A decorator for the view of operation `op`: auth, parameter decoding (refusing any parameter not in `params`,
    a tree from `known`, when given), one lock around the whole call, idempotent replays, scripted failures, error
    objects."""

    def wrap(fn):
        @functools.wraps(fn)
        def view(**kwargs):
            key = request.headers.get("Idempotency-Key") if request.method != "GET" else None
            if st.probe is not None:
                st.probe(op)
            with st.lock:
                if st.calls is not None:
                    st.calls.append((op, key or next(iter(kwargs.values()), None) or request.full_path))
                try:
                    return _answer(st, op, fn, kwargs, key if request.method == "POST" else None, params)
                except StripeFail as exc:
                    return exc.response()

        return view

    return wrap


def _answer(st, op: str, fn, kwargs: dict, key: str | None, spec: dict | None = None) -> Response:
    expected = f"Bearer {st.settings.stripe_secret_key}".encode()
    if not hmac.compare_digest(request.headers.get("Authorization", "").encode(), expected):
        raise StripeFail(401, "Invalid API Key provided.")
    pairs = list((request.form if request.method == "POST" else request.args).items(multi=True))
    params = decode_form(pairs)
    name = parameters.first_unknown(params, spec) if spec is not None else None
    if name:
        raise StripeFail(400, f"Received unknown parameter: {name}", "parameter_unknown", name)
    fingerprint = json.dumps([request.path, sorted(pairs)])
    if key:
        if len(key) > 255:
            raise StripeFail(400, "Idempotency keys are at most 255 characters long.", param="Idempotency-Key")
        seen = st.idempotency.get(key)
        if seen and seen[0] != fingerprint:
            raise StripeFail(
                400,
                "Keys for idempotent requests can only be used with the same parameters they "
                f"were first used with. Try using a key other than '{key}' if you meant to execute a "
                "different request.",
                kind="idempotency_error",
            )
        if seen:
            return _raw(seen[2], seen[1], replayed=True)
    failure = st.failures[op].pop(0) if st.failures.get(op) else None
    if isinstance(failure, BaseException):
        raise failure
    if failure is not None:
        answer = scripted(failure).response()
        if failure >= 500 and key:  # Stripe keeps a 5xx under its key; a 429 or a refusal it does not
            st.idempotency[key] = [fingerprint, failure, answer.get_data(as_text=True)]
        return answer
    try:
        text = json.dumps(fn(params, **kwargs), indent=2)
        if key:  # like Stripe, only requests that ran are remembered; failed validation is not
            st.idempotency[key] = [fingerprint, 200, text]
    finally:
        if request.method != "GET":
            st.changed()
    return _raw(text)


def api_routes(bp, st):
    """`route(rule, *methods, op=None, params=None)` (GET by default): a decorator adding an `api` view at
    /stripe/v1{rule} to `bp`; the operation is named `op`, or after the function ("customer_create",
    "retrieve_charge", ...). With `params` (a tree from `known`) any other parameter is refused as Stripe refuses
    it; without, the route accepts anything (opt-in, route by route)."""

    def route(rule: str, *methods: str, op: str | None = None, params: dict | None = None):
        def add(fn):
            endpoint = f"stripe_{fn.__module__.rsplit('.', 1)[-1]}_{fn.__name__}"
            view = api(st, op or fn.__name__, params)(fn)
            bp.add_url_rule(API + rule, endpoint, view, methods=list(methods or ["GET"]))
            return fn

        return add

    return route


RETRIEVE = known("expand[]")  # what every retrieval knows


def add_retrieve(st, route, rule: str, kind: str, params: dict | None = None) -> None:
    """GET {rule} (ending in <object_id>): the stored `kind` object, with `expand`; `params` as in `route`."""

    def retrieve(params, object_id):
        obj = get(st, kind, object_id)
        check_expand(obj, expansions(params))
        return render(st, obj, expansions(params))

    retrieve.__name__ = f"retrieve_{kind.replace('.', '_')}"
    route(rule, params=params)(retrieve)


LIST = ("limit", "starting_after", "expand[]")  # what every list knows, besides its filters


def add_list(st, route, path: str, kind: str, keys: tuple, params: dict | None = None) -> None:
    """GET /v1{path}: the stored `kind` objects, newest first, filtered by equality on `keys`; `params` as in
    `route` (e.g. `known(*LIST, *keys)`)."""

    def view(params):
        wanted = {k: params[k] for k in keys if params.get(k)}
        found = newest(st, kind, lambda obj: all(obj.get(k) == v for k, v in wanted.items()))
        return page(st, kind, found, params, "/v1" + path)

    view.__name__ = f"list_{kind}s"
    route(path, params=params)(view)


def money(amount: int, currency: str) -> str:
    return f"{amount / 100:.2f} {currency.upper()}"


def html(body: str, status: int = 200) -> Response:
    """A stand-in page: like Stripe's own, never framed and never cached."""
    return Response(
        body,
        status,
        mimetype="text/html",
        headers={
            "X-Frame-Options": "DENY",
            "Content-Security-Policy": "frame-ancestors 'none'",
            "Cache-Control": "no-store",
        },
    )
