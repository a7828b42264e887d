"""How much work one client may cause: rates per address, kept in a store every process shares
(RATELIMIT_STORAGE_URI); registration ids LTIaaS does not know, remembered so that repeats cost no
call; and a per-process bound on LTIaaS lookups in flight, so that a slow LTIaaS cannot hold every
thread.

Only the views that cause upstream work (or a password check) ask here, and only at the point where
that work would start: the status poll and a repeat visit of a known registration never do.
"""

import hashlib
import ipaddress
import logging
import threading
from contextlib import contextmanager, suppress

from flask import Flask, current_app, request
from limits import RateLimitItem, parse_many
from limits.errors import ConfigurationError
from limits.storage import Storage, storage_from_string
from limits.strategies import FixedWindowRateLimiter

from paygate.core.config import ConfigError

log = logging.getLogger(__name__)

# What each rate counts, per client address. An LMS admin registers one platform at a time and pays
# once; these rates are far above what a person does and far below a flood.
LOOKUP = "lookup"  # a registration id not known here: one LTIaaS call (and the price, cached)
CHECKOUT = "checkout"  # the payment popup: a Checkout Session opened or reused at Stripe
RETURN = "return"  # Stripe's success return: Stripe asked about the session (per registration too)
INVOICE = "invoice"  # pay by invoice: a Customer and an Invoice made at Stripe
SIGN_IN = "sign-in"  # failed operator sign-ins, per address and account
SIGN_IN_ANY = "sign-in-any"  # failed operator sign-ins, per address, whatever the account
LICENCE_KEY = "licence-key"  # wrong licence keys, per address: the licence page and the frame's key form
RATES = {
    LOOKUP: "40 per minute;400 per hour",
    CHECKOUT: "40 per minute;400 per hour",
    RETURN: "20 per minute;100 per hour",
    INVOICE: "20 per minute;100 per hour",
    # No rate counts per account alone: guesses from elsewhere must never lock the operator out.
    SIGN_IN: "5 per minute;20 per hour",
    SIGN_IN_ANY: "20 per minute;100 per hour",
    # README "Licence keys": a key is 80 random bits; this keeps guessing hopeless and a typo harmless.
    LICENCE_KEY: "10 per minute;30 per hour",
}
RETRY_AFTER_SECONDS = 60
# A registration id LTIaaS refused stays refused (ids are never reused): remembered for an hour, the
# life of an LMS registration token, so that reloads and floods of it cost no LTIaaS call.
DEAD_ID_SECONDS = 3600
BUSY_RETRY_AFTER_SECONDS = 5
_STORE_TIMEOUT_SECONDS = 0.5  # a store that hangs must not hold a web thread


class StoreUnavailable(Exception):
    """The rate store did not answer."""


class _Throttle:
    """One application's store, its rates and its lookup slots."""

    def __init__(self, uri: str, lookups: int):
        shared = uri.split(":", 1)[0] in ("redis", "rediss", "redis+unix", "valkey", "valkeys")
        options = (
            {"socket_timeout": _STORE_TIMEOUT_SECONDS, "socket_connect_timeout": _STORE_TIMEOUT_SECONDS}
            if shared
            else {}
        )
        try:
            self.storage: Storage = storage_from_string(uri, **options)
        except (ConfigurationError, ValueError):
            # Never the value: a store URL may carry a password.
            raise ConfigError(
                "RATELIMIT_STORAGE_URI is malformed: not a storage URL the limits library "
                "knows (memory:// or redis://host:6379/0)"
            ) from None
        self.window = FixedWindowRateLimiter(self.storage)
        self.rates = {name: parse_many(text) for name, text in RATES.items()}
        self.lookups = threading.BoundedSemaphore(lookups)
        self.prefix = "paygate"


def init_app(app: Flask) -> None:
    """The application's store and lookup bound; a warning when the store is not shared."""
    settings = app.config["SETTINGS"]
    app.extensions["throttling"] = _Throttle(settings.ratelimit_storage_uri, settings.ltiaas_lookup_concurrency)
    problem = unshared_store(settings.ratelimit_storage_uri, settings.app_env)
    if problem:
        log.warning(problem)


def unshared_store(uri: str, app_env: str, workers: int = 1) -> str | None:
    """The warning due when rates are kept per process where several processes (or restarts) serve."""
    if not uri.startswith("memory"):
        return None
    if workers > 1:
        return (
            f"RATELIMIT_STORAGE_URI is memory:// with {workers} gunicorn workers: each keeps its own "
            f"counts, so every rate limit is {workers} times looser; set redis://host:6379/0"
        )
    if app_env not in ("local", "test"):
        return (
            "RATELIMIT_STORAGE_URI is memory:// outside APP_ENV=local: counts are per process and "
            "lost at each restart; set redis://host:6379/0 (docker-compose.yml does)"
        )
    return None


def _throttle() -> _Throttle:
    return current_app.extensions["throttling"]


def client_address() -> str:
    """The client as rates count it: its address, an IPv6 one by its /64 (what one subscriber gets)."""
    address = request.remote_addr or "unknown"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if ip.version == 6 and ip.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(getattr(ip, "ipv4_mapped", None) or ip)


def _take(throttle: _Throttle, counts: list[tuple[str, tuple]]) -> list[tuple[RateLimitItem, tuple]] | None:
    """Take one unit of each rate of each (name, key), atomically per counter: the units taken, or
    None (and nothing taken) when one of them is spent. Parallel callers can never all pass."""
    taken = []
    for name, key in counts:
        for item in throttle.rates[name]:
            identifiers = (throttle.prefix, name, *key)
            taken.append((item, identifiers))
            if not throttle.window.hit(item, *identifiers):
                _give_back(throttle, taken)
                return None
    return taken


def _give_back(throttle: _Throttle, taken) -> None:
    # A window that ended meanwhile starts the next one at -1: one extra unit, once, at worst.
    for item, identifiers in taken:
        throttle.storage.incr(item.key_for(*identifiers), item.get_expiry(), amount=-1)


def allow(name: str, *key: str) -> bool:
    """Count one unit of the flow's rate `name` for this client (and `key`); False once spent.

    A store that does not answer lets the request through, logged: payments must not stop with it,
    and the per-process lookup bound still holds."""
    throttle = _throttle()
    try:
        allowed = _take(throttle, [(name, (client_address(), *key))]) is not None
    except throttle.storage.base_exceptions as exc:
        log.error("rate store unavailable (RATELIMIT_STORAGE_URI): %s not counted (%s)", name, type(exc).__name__)
        return True
    if not allowed:
        log.info("rate %s spent for a client address: answered 429", name)
    return allowed


class SignInAttempt:
    """Units of the failed-sign-in rates (or of wrong licence keys), taken before the secret is checked."""

    def __init__(self, throttle: _Throttle, taken):
        self._throttle, self._taken = throttle, taken

    def succeeded(self) -> None:
        """The password was right: successes are not counted."""
        with suppress(self._throttle.storage.base_exceptions):  # else it stays counted as a failure: harmless
            _give_back(self._throttle, self._taken)


def sign_in_attempt(email: str) -> SignInAttempt | None:
    """Take a sign-in attempt for this address and (address, account) before the password is checked,
    so that parallel guesses cannot exceed the rate; None when spent. Raises StoreUnavailable: unlike
    the flow, sign-in fails closed (unthrottled guessing is worse than a short wait)."""
    throttle = _throttle()
    address = client_address()
    account = hashlib.sha256(email.encode()).hexdigest()[:32]
    try:
        taken = _take(throttle, [(SIGN_IN_ANY, (address,)), (SIGN_IN, (address, account))])
    except throttle.storage.base_exceptions as exc:
        log.error("rate store unavailable (RATELIMIT_STORAGE_URI): sign-in refused (%s)", type(exc).__name__)
        raise StoreUnavailable from None
    if taken is None:
        log.warning("failed sign-ins: rate spent for a client address; answered 429")
        return None
    return SignInAttempt(throttle, taken)


def key_attempt() -> SignInAttempt | None:
    """Take a licence-key attempt for this address before the key is looked up (so that parallel guesses
    cannot exceed the rate); `succeeded()` gives it back when the key was right. None when spent. Raises
    StoreUnavailable: like sign-in, fails closed."""
    throttle = _throttle()
    try:
        taken = _take(throttle, [(LICENCE_KEY, (client_address(),))])
    except throttle.storage.base_exceptions as exc:
        log.error("rate store unavailable (RATELIMIT_STORAGE_URI): licence key refused (%s)", type(exc).__name__)
        raise StoreUnavailable from None
    if taken is None:
        log.warning("wrong licence keys: rate spent for a client address; answered 429")
        return None
    return SignInAttempt(throttle, taken)


class KeyGuess:
    """A licence key about to be looked up, checked against the wrong-key rate without spending it."""

    def __init__(self, throttle: _Throttle, address: str):
        self._throttle, self._address = throttle, address

    def wrong(self) -> None:
        """The key named no licence: count it (a right key costs no write to the store)."""
        throttle = self._throttle
        try:
            for item in throttle.rates[LICENCE_KEY]:
                throttle.window.hit(item, throttle.prefix, LICENCE_KEY, self._address)
        except throttle.storage.base_exceptions as exc:  # the key was wrong anyway: its answer stays the 404
            log.error(
                "rate store unavailable (RATELIMIT_STORAGE_URI): a wrong licence key not counted (%s)",
                type(exc).__name__,
            )


def key_guess() -> KeyGuess | None:
    """Check the wrong-key rate of this address before a key is looked up (a read of the counters, no write);
    `wrong()` counts the key once it named no licence. None when spent. Raises StoreUnavailable: fails closed.

    Why a read first and a write only for a wrong key, where `key_attempt` takes a unit before the lookup and
    gives it back for a right one: every right key (each visit of a licence page) then costs two reads instead
    of four writes. The price: guesses sent at once, all checked before any of them is counted, can pass the
    rate by the number of this address's requests in flight at that moment, which the web threads bound (every
    gunicorn worker's --threads: 8 with the default settings). Once counted, the rate refuses every key,
    right or wrong, as before; against 80 random bits, 8 more guesses in a window change nothing.
    """
    throttle = _throttle()
    address = client_address()
    try:
        spent = not all(
            throttle.window.test(item, throttle.prefix, LICENCE_KEY, address) for item in throttle.rates[LICENCE_KEY]
        )
    except throttle.storage.base_exceptions as exc:
        log.error("rate store unavailable (RATELIMIT_STORAGE_URI): licence key refused (%s)", type(exc).__name__)
        raise StoreUnavailable from None
    if spent:
        log.warning("wrong licence keys: rate spent for a client address; answered 429")
        return None
    return KeyGuess(throttle, address)


def _dead_key(throttle: _Throttle, registration_id: str) -> str:
    # A digest: the store never holds an id that could open a flow.
    return f"{throttle.prefix}/dead-registration/" + hashlib.sha256(registration_id.encode()).hexdigest()[:32]


def known_dead(registration_id: str) -> bool:
    """Whether LTIaaS refused this registration id lately (any process asked)."""
    throttle = _throttle()
    try:
        return throttle.storage.get(_dead_key(throttle, registration_id)) > 0
    except throttle.storage.base_exceptions:
        return False


def remember_dead(registration_id: str) -> None:
    """LTIaaS does not know this id (or it is finished): answer repeats without asking it."""
    throttle = _throttle()
    with suppress(throttle.storage.base_exceptions):  # else the next repeat asks LTIaaS again: correct, only dearer
        throttle.storage.incr(_dead_key(throttle, registration_id), DEAD_ID_SECONDS)


@contextmanager
def lookup_slot():
    """Yields whether this process may start an LTIaaS lookup now; never waits for a slot."""
    slots = _throttle().lookups
    if not slots.acquire(blocking=False):
        log.warning(
            "pre-approval: every LTIaaS lookup slot of this process is in use (LTIAAS_LOOKUP_CONCURRENCY); "
            "answered busy"
        )
        yield False
        return
    try:
        yield True
    finally:
        slots.release()
