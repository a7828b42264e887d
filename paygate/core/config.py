"""Settings, read from the environment and a `.env` file in the working directory."""

import base64
import json
import re
import secrets
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, urlsplit

from email_validator import EmailNotValidError, validate_email
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from paygate.core.notify_config import parse_recipients, parse_smtp_url

LOCAL_PORT = 5000
# SECRET_KEY signs operator sessions and form ids: a short one can be guessed offline from one cookie.
SECRET_KEY_MIN = 32
# Offers shown in the frame at once: an LMS dialog holds a few, not a catalogue.
MAX_OFFERS = 6


class ConfigError(Exception):
    """A missing or malformed setting; the message names the variable, never its value."""


# The local run's (APP_ENV=local), printed in the README: known to anyone, so never accepted in production.
LOCAL_LICENCE_API_TOKEN = "local-licence-api-token-known-to-everyone"  # noqa: S105 - the local run's
LOCAL_VENDOR_WEBHOOK_SECRET = "whsec_bG9jYWwtdmVuZG9yLXNpZ25pbmctc2VjcmV0LWtub3du"  # noqa: S105 - the local run's


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    # production: every required setting must be given. local: stand-ins fill in what is missing.
    app_env: Literal["production", "local", "test"] = "production"

    database_url: str = ""
    ltiaas_url: str = ""
    ltiaas_api_key: str = ""
    ltiaas_platforms_path: str = "/admin/platforms"
    # Complete Registration body; whatever is unset is left to the LTIaaS portal's defaults, except
    # autoActivate, which the licence decides (paygate/licensing/access.py).
    ltiaas_platform_name: str | None = None
    ltiaas_messages: str | None = None
    # Every outgoing LTIaaS call is bounded; the webhook must answer Stripe promptly.
    ltiaas_timeout_seconds: float = 5.0
    # LTIaaS lookups of new registration ids in flight at once per process; more are answered "busy"
    # at once, so that a slow LTIaaS holds at most this many of a process's threads (paygate/web/throttling.py).
    ltiaas_lookup_concurrency: int = Field(default=2, ge=1, le=64)

    stripe_secret_key: str = ""
    stripe_webhook_secret: str = ""
    stripe_price_id: str = ""
    stripe_api_base: str | None = None
    stripe_max_network_retries: int = 2
    # Card (wallets included) by default: a delayed method (SEPA, ACH...) confirms days later, long
    # after the LMS token has died. Empty: whatever the Stripe dashboard enables.
    stripe_payment_method_types: str = "card"
    # Offers (README "Offers"): promotion codes in Checkout and the invoice form; Stripe Tax on every payment
    # with the school's tax ID; a Stripe invoice with every one-time card payment.
    promotion_codes: bool = False
    stripe_tax: bool = False
    card_payment_invoice: bool = False

    public_url: str = ""
    secret_key: str = ""
    # Number of reverse proxies in front of the service whose X-Forwarded-* headers are trusted.
    trusted_proxies: int = 0
    # LMS registration tokens live about an hour: the whole paid flow must fit in it.
    registration_window_minutes: int = 60
    # Who may frame the registration flow pages: the LMS hosts are not known in advance.
    frame_ancestors: str = "*"
    # Where rate counts (sign-in failures, the flow's upstream work) are kept; memory:// is per process.
    ratelimit_storage_uri: str = "memory://"

    # Who the admin pays, and whom to ask (shown on the flow's pages; paygate/web/identity.py).
    vendor_name: str | None = None
    support_contact: str | None = None  # an e-mail address or an https URL
    vendor_logo_url: str | None = None  # an https URL of an image, allowed by the pages' CSP

    # Licences: an overdue invoice keeps its platform active this many days after its due date.
    licence_grace_days: int = Field(default=14, ge=0, le=365)
    # "Pay by invoice" beside the card payment, with this payment term in days (unset or 0: card only).
    invoice_days_until_due: int | None = Field(default=None, ge=0, le=365)
    # An invoiced platform is active from completion (immediate) or only once the invoice is paid.
    invoice_access: Literal["immediate", "on_payment"] = "immediate"
    # Invoice requests accepted per billing e-mail domain in 24 hours: nobody makes the vendor's Stripe
    # account e-mail invoices to many addresses of one school (or of a stranger's domain).
    invoice_requests_per_domain_per_day: int = Field(default=3, ge=1, le=10_000)
    # A free pilot of this many days beside paying (unset or 0: none); the local run offers 30.
    pilot_days: int | None = Field(default=None, ge=0, le=3650)
    # How many LMS platforms one licence holds at once (a school's production and test LMS).
    platforms_per_licence: int = Field(default=2, ge=1, le=1000)
    # How far back reconciliation re-reads charges for refunds and disputes.
    licence_recheck_days: float = Field(default=120, gt=0)

    # The vendor's own systems (README "The vendor's systems"): the licence API's bearer token (unset: the API
    # is not served), and where events are POSTed, signed as Standard Webhooks (unset: none are sent).
    licence_api_token: str | None = None
    vendor_webhook_url: str | None = None
    vendor_webhook_secret: str | None = None

    # Operators (README "Operators"): a TOTP code at sign-in (`required`, the default outside APP_ENV=local)
    # or not (`off`); where notifications are sent from (smtp:// or smtps://, unset: no e-mail) and to whom.
    operator_2fa: Literal["required", "off"] | None = None
    smtp_url: str | None = None
    notify_emails: str | None = None

    metrics_token: str | None = None
    log_format: Literal["text", "json"] = "text"

    # The worker (`flask --app wsgi worker`): seconds between passes.
    worker_interval_seconds: float = Field(default=10.0, gt=0)
    # A paid registration nobody has tried to complete for this long is the worker's (the webhook or
    # the return goes first).
    worker_grace_seconds: float = Field(default=15.0, ge=0)
    # An attempt "completing" for longer than this was cut short (a process died): its outcome is
    # unknown. Must exceed the longest possible Complete call; unset: 2 x LTIaaS timeout + 30 s.
    worker_stale_seconds: float | None = Field(default=None, gt=0)
    # Minutes between the worker's reconciliations with Stripe (0: never), and how far back they look.
    worker_reconcile_minutes: float = Field(default=10.0, ge=0)
    reconcile_since_hours: float = Field(default=48.0, gt=0)
    # The worker command serves its own metrics (its passes, its LTIaaS and Stripe calls) on this port,
    # with the same METRICS_TOKEN rule as GET /metrics; unset: not served.
    worker_metrics_port: int | None = Field(default=None, ge=1, le=65535)
    # Days after which `flask prune` (and the worker, hourly) deletes other integrations' Stripe events
    # and abandoned registrations without money on them (paygate/ops/retention.py); 0: never.
    retention_days: int = Field(default=90, ge=0, le=36500)

    @field_validator("retention_days")
    @classmethod
    def _outlives_stripe_retries(cls, value):
        # Stripe redelivers an event for up to 3 days: its id must be remembered longer than that.
        if 0 < value < 7:
            raise ValueError("must be 0 (never prune) or at least 7 days")
        return value

    @field_validator("ltiaas_messages")
    @classmethod
    def _messages_are_json_list(cls, value):
        if value is None or value == "":
            return None
        parsed = json.loads(value)
        if not isinstance(parsed, list) or not all(isinstance(m, dict) and "type" in m for m in parsed):
            raise ValueError("must be a JSON list of {type, placements}")
        return value

    @model_validator(mode="after")
    def _fill_local_defaults(self):
        if self.operator_2fa is None:
            self.operator_2fa = "off" if self.app_env == "local" else "required"
        if self.app_env != "local":
            return self
        self.public_url = self.public_url or f"http://127.0.0.1:{LOCAL_PORT}"
        if self.invoice_days_until_due is None:  # a newcomer sees both ways to pay (0 turns it off)
            self.invoice_days_until_due = 30
        if self.pilot_days is None:  # and the free pilot (0 turns it off)
            self.pilot_days = 30
        self.secret_key = self.secret_key or secrets.token_urlsafe(32)
        if not self.ltiaas_url:
            self.ltiaas_url = self.standin_url("ltiaas")
            self.ltiaas_api_key = self.ltiaas_api_key or "local-standin-api-key"
        if not self.stripe_secret_key:
            self.stripe_secret_key = "sk_test_local_standin"  # noqa: S105 - the local stand-in's, not Stripe's
            self.stripe_webhook_secret = self.stripe_webhook_secret or "whsec_local_standin"
            # Three offers to choose among: per student and year, once, and per teacher by volume.
            self.stripe_price_id = (
                self.stripe_price_id or "price_local_seats_yearly,price_local_registration,price_local_tiered"
            )
            self.stripe_api_base = self.stripe_api_base or self.standin_url("stripe")
            if "promotion_codes" not in self.model_fields_set:  # the stand-in's codes can be tried (SCHOOL20...)
                self.promotion_codes = True
        # The vendor's systems: a stand-in endpoint receives the events; the licence API answers a known token.
        if "vendor_webhook_url" not in self.model_fields_set and self.uses_standins:  # mounted beside them only
            self.vendor_webhook_url = self.standin_url("vendor") + "/events"
            self.vendor_webhook_secret = self.vendor_webhook_secret or LOCAL_VENDOR_WEBHOOK_SECRET
        if "licence_api_token" not in self.model_fields_set:
            self.licence_api_token = LOCAL_LICENCE_API_TOKEN
        # A newcomer sees who sells and whom to ask, as a vendor's deployment would show them.
        if "vendor_name" not in self.model_fields_set:
            self.vendor_name = "Example Learning Tools"
        if "support_contact" not in self.model_fields_set:
            self.support_contact = "support@tools.example"
        return self

    def standin_url(self, name: str) -> str:
        """Where the local run serves its stand-in of `name` (ltiaas, stripe): on this service itself."""
        return f"{self.public_url.rstrip('/')}/_local/{name}"

    def completion_body(self, active: bool) -> dict:
        """Complete Registration's body; `active` is what the licence says the platform's access is."""
        body = {"autoActivate": active}
        if self.ltiaas_platform_name:
            body["platformName"] = self.ltiaas_platform_name
        if self.ltiaas_messages:
            body["messages"] = json.loads(self.ltiaas_messages)
        return body

    @property
    def invoicing(self) -> bool:
        """Whether the admin may choose to pay by invoice."""
        return bool(self.invoice_days_until_due)

    @property
    def price_ids(self) -> list[str]:
        """STRIPE_PRICE_ID's Prices, in the order given (the offers), each once."""
        return list(dict.fromkeys(p.strip() for p in self.stripe_price_id.split(",") if p.strip()))

    @property
    def payment_method_types(self) -> list[str]:
        return [t.strip() for t in self.stripe_payment_method_types.split(",") if t.strip()]

    @property
    def uses_standins(self) -> bool:
        """Local run pointing at the built-in stand-ins (the run command's default)."""
        return self.app_env == "local" and any(
            "/_local/" in (url or "") for url in (self.ltiaas_url, self.stripe_api_base)
        )

    @property
    def stale_after_seconds(self) -> float:
        """When an attempt in "completing" is given up as cut short."""
        return self.worker_stale_seconds or 2 * self.ltiaas_timeout_seconds + 30

    @property
    def stripe_live(self) -> bool:
        return self.stripe_secret_key.startswith(("sk_live_", "rk_live_"))


_REQUIRED = {
    "ltiaas_url": ("http://", "https://"),
    "ltiaas_api_key": None,
    "stripe_secret_key": ("sk_", "rk_"),
    "stripe_webhook_secret": ("whsec_",),
    "stripe_price_id": ("price_",),
    "public_url": ("http://", "https://"),
    "secret_key": None,
}


def load_settings(overrides: dict | None = None) -> Settings:
    """Read and check the settings; raise ConfigError naming the first bad variable."""
    try:
        settings = Settings(**(overrides or {}))
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]).upper() if err["loc"] else "settings"
        raise ConfigError(f"{name} is malformed: {err['msg']}") from None
    for field, prefixes in _REQUIRED.items():
        value = getattr(settings, field)
        if not value:
            raise ConfigError(f"{field.upper()} is required")
        if prefixes and not value.startswith(prefixes):
            raise ConfigError(f"{field.upper()} is malformed: must start with {' or '.join(prefixes)}")
    if not settings.price_ids or not all(p.startswith("price_") for p in settings.price_ids):
        raise ConfigError("STRIPE_PRICE_ID is malformed: must be Stripe Price ids (price_...) separated by commas")
    if len(settings.price_ids) > MAX_OFFERS:
        raise ConfigError(f"STRIPE_PRICE_ID is malformed: at most {MAX_OFFERS} Prices")
    if settings.app_env == "production" and len(settings.secret_key) < SECRET_KEY_MIN:
        raise ConfigError(
            f"SECRET_KEY is malformed: must be at least {SECRET_KEY_MIN} characters (make one with "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    if settings.database_url:
        try:
            make_url(settings.database_url)
        except ArgumentError:
            raise ConfigError("DATABASE_URL is malformed: not an SQLAlchemy URL") from None
    if settings.stripe_api_base and not settings.stripe_api_base.startswith(("http://", "https://")):
        raise ConfigError("STRIPE_API_BASE is malformed: must start with http:// or https://")
    if settings.worker_stale_seconds and settings.worker_stale_seconds <= settings.ltiaas_timeout_seconds + 5:
        raise ConfigError(
            "WORKER_STALE_SECONDS is malformed: must exceed LTIAAS_TIMEOUT_SECONDS + 5 "
            "(an attempt still running must never be given up)"
        )
    # Checkout Sessions expire 5 minutes before the window ends and Stripe takes 30 min to 24 h.
    if not 36 <= settings.registration_window_minutes <= 24 * 60 + 5:
        raise ConfigError(
            "REGISTRATION_WINDOW_MINUTES is malformed: must be between 36 and 1445, so that "
            "a Checkout Session can expire 30 minutes to 24 hours after it opens"
        )
    if not settings.ltiaas_platforms_path.startswith("/"):
        raise ConfigError("LTIAAS_PLATFORMS_PATH is malformed: must start with /")
    try:
        parse_support(settings.support_contact)
    except ValueError as exc:
        raise ConfigError(f"SUPPORT_CONTACT is malformed: {exc}") from None
    try:
        parse_logo(settings.vendor_logo_url, allow_http=settings.app_env != "production")
    except ValueError as exc:
        raise ConfigError(f"VENDOR_LOGO_URL is malformed: {exc}") from None
    _check_vendor_systems(settings)
    _check_notifications(settings)
    if settings.vendor_name is not None:
        settings.vendor_name = " ".join(settings.vendor_name.split())[:120] or None
    return settings


def _check_notifications(settings: Settings) -> None:
    """SMTP_URL parses (its value, which holds a password, is never repeated) and has someone to write to."""
    for name, parse in (("SMTP_URL", parse_smtp_url), ("NOTIFY_EMAILS", parse_recipients)):
        try:
            parse(getattr(settings, name.lower()))
        except ValueError as exc:
            raise ConfigError(f"{name} is malformed: {exc}") from None
    settings.smtp_url = (settings.smtp_url or "").strip() or None
    settings.notify_emails = ", ".join(parse_recipients(settings.notify_emails)) or None
    if settings.smtp_url and not settings.notify_emails:
        raise ConfigError("NOTIFY_EMAILS is required with SMTP_URL (the operators' addresses, separated by commas)")


LICENCE_API_TOKEN_MIN = 32


def _check_vendor_systems(settings: Settings) -> None:
    """The licence API's token is long enough to guess at no rate; events need both a URL and a Standard
    Webhooks secret, which the library reads as `whsec_` + base64 of 24 to 64 bytes."""
    token = settings.licence_api_token = settings.licence_api_token or None
    if token is not None and (len(token) < LICENCE_API_TOKEN_MIN or not token.isascii() or not token.isprintable()):
        raise ConfigError(
            f"LICENCE_API_TOKEN is malformed: must be at least {LICENCE_API_TOKEN_MIN} printable ASCII characters "
            "(make one with python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    if settings.app_env == "production" and token == LOCAL_LICENCE_API_TOKEN:
        raise ConfigError("LICENCE_API_TOKEN is malformed: it is the local run's, which the README prints")
    url = settings.vendor_webhook_url = settings.vendor_webhook_url or None
    secret = settings.vendor_webhook_secret = settings.vendor_webhook_secret or None
    if url is None:
        return
    allowed = ("https://",) if settings.app_env == "production" else ("https://", "http://")
    if not url.startswith(allowed) or len(url) > 2000 or not url.isascii() or not url.isprintable():
        raise ConfigError(f"VENDOR_WEBHOOK_URL is malformed: must be an {' or '.join(allowed)} URL")
    if secret is None:
        raise ConfigError("VENDOR_WEBHOOK_SECRET is required with VENDOR_WEBHOOK_URL")
    if settings.app_env == "production" and secret == LOCAL_VENDOR_WEBHOOK_SECRET:
        raise ConfigError("VENDOR_WEBHOOK_SECRET is malformed: it is the local run's, which the README prints")
    try:
        raw = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except ValueError:
        raw = b""
    if not secret.startswith("whsec_") or not 24 <= len(raw) <= 64:
        raise ConfigError(
            "VENDOR_WEBHOOK_SECRET is malformed: must be whsec_ followed by the base64 of 24 to 64 random bytes "
            '(make one with python -c \'import base64,secrets; print("whsec_" + '
            "base64.b64encode(secrets.token_bytes(32)).decode())')"
        )


def check_standins(settings: Settings) -> None:
    """Before the stand-ins are mounted (APP_ENV=local): they imitate LTIaaS and Stripe beside nothing real.

    A real LTIaaS with the Stripe stand-in registers real platforms for pretend money; a real Stripe
    behind the LTIaaS stand-in, or a key that is not a test key, takes real money for nothing. Raises
    ConfigError naming the first variable at fault, never its value."""
    if settings.ltiaas_url.rstrip("/") != settings.standin_url("ltiaas"):
        raise ConfigError(
            "LTIAAS_URL is not the LTIaaS stand-in, and the local stand-ins (APP_ENV=local) run "
            "only beside each other: unset LTIAAS_URL, or set STRIPE_SECRET_KEY, "
            "STRIPE_WEBHOOK_SECRET and STRIPE_PRICE_ID and unset STRIPE_API_BASE"
        )
    if settings.stripe_api_base and settings.stripe_api_base.rstrip("/") != settings.standin_url("stripe"):
        raise ConfigError(
            "STRIPE_API_BASE is not the Stripe stand-in, and the local stand-ins (APP_ENV=local) run "
            "only beside each other or Stripe's test mode: unset STRIPE_API_BASE"
        )
    if not settings.stripe_secret_key.startswith("sk_test_"):
        raise ConfigError(
            "STRIPE_SECRET_KEY is not a test key (sk_test_...), and the local stand-ins "
            "(APP_ENV=local) run only with one"
        )


# SUPPORT_CONTACT and VENDOR_LOGO_URL, checked at start-up and read by the pages (paygate/web/identity.py).


@dataclass(frozen=True, slots=True)
class Support:
    """SUPPORT_CONTACT as a link: an e-mail address (mailto:) or an https URL."""

    href: str
    text: str
    email: bool


_CONTROL = re.compile(r"[\x00-\x20\x7f<>\"'`]")


def parse_support(value: str | None) -> Support | None:
    """None when unset; ValueError when it is neither an e-mail address nor an https URL."""
    value = (value or "").strip()
    if not value:
        return None
    if value.lower().startswith("mailto:"):
        value = value[len("mailto:") :]
    if value.lower().startswith("https://"):
        parts = urlsplit(value)
        if not parts.hostname or _CONTROL.search(value):
            raise ValueError("must be an e-mail address or an https:// URL")
        return Support(href=value, text=value, email=False)
    if "://" in value or ":" in value.split("@")[0]:
        raise ValueError("must be an e-mail address or an https:// URL")
    try:
        email = validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError:
        raise ValueError("must be an e-mail address or an https:// URL") from None
    return Support(href="mailto:" + quote(email, safe="@.+-_"), text=email, email=True)


def parse_logo(value: str | None, allow_http: bool = False) -> str | None:
    """VENDOR_LOGO_URL: an https URL (http too in a local run), or None."""
    value = (value or "").strip()
    if not value:
        return None
    schemes = ("https://", "http://") if allow_http else ("https://",)
    if not value.lower().startswith(schemes) or not urlsplit(value).hostname or _CONTROL.search(value):
        raise ValueError("must be an https:// URL of an image")
    return value
