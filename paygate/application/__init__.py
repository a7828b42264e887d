"""The payment-gated LTI registration service."""

import os
import secrets

from flask import Flask, g, jsonify, render_template, request
from flask.globals import request_ctx
from flask_migrate import Migrate
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from paygate.core import logs
from paygate.core.config import check_standins, load_settings
from paygate.core.db import db
from paygate.core.languages import gettext
from paygate.web import guard

migrate = Migrate()
# The checkout: migrations/ sits beside the package.
_REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _Flask(Flask):
    """Flask, deciding once per view or hook, not on every request, that it is no coroutine function
    (Flask asks `ensure_sync` for each of a request's hooks and its view: a dozen a status poll)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._sync_functions: dict = {}

    def ensure_sync(self, func):
        try:
            return self._sync_functions[func]
        except KeyError:
            sync = super().ensure_sync(func)
            if sync is func:
                self._sync_functions[func] = func
            return sync
        except TypeError:  # not hashable
            return super().ensure_sync(func)


def create_app(test_config: dict | None = None, standins_state_dir: str | None = None) -> Flask:
    """Build the application; `test_config` overrides settings (lower-case Settings field names). The local
    stand-ins (APP_ENV=local) keep their state in `standins_state_dir` across restarts, or in memory without it."""
    app = _Flask("paygate", instance_relative_config=True)
    settings = load_settings(test_config)
    os.makedirs(app.instance_path, exist_ok=True)
    database_url = settings.database_url or f"sqlite:///{os.path.join(app.instance_path, 'paygate.sqlite')}"
    if database_url.startswith("postgres://"):
        database_url = "postgresql+psycopg://" + database_url[len("postgres://") :]
    app.config.update(
        SETTINGS=settings,
        SECRET_KEY=settings.secret_key,
        SQLALCHEMY_DATABASE_URI=database_url,
        SQLALCHEMY_ENGINE_OPTIONS={"pool_pre_ping": True},
        PREFERRED_URL_SCHEME="https" if settings.public_url.startswith("https") else "http",
        SESSION_COOKIE_SECURE=settings.public_url.startswith("https"),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        TESTING=settings.app_env == "test",
    )
    # Hosts not served answered 400 before Flask, SCRIPT_NAME folded into the path: paygate/web/guard.py. Inside
    # ProxyFix, so that a trusted proxy's X-Forwarded-Host is checked as the Host it becomes.
    app.wsgi_app = guard.HostGuard(app.wsgi_app, settings.public_url, settings.app_env, settings.trusted_proxies)
    if settings.trusted_proxies:
        app.wsgi_app = ProxyFix(
            app.wsgi_app,
            x_for=settings.trusted_proxies,
            x_proto=settings.trusted_proxies,
            x_host=settings.trusted_proxies,
        )
    # The format (LOG_FORMAT), redaction, the request id of every request and log line: paygate/core/logs.py.
    logs.setup(app, settings.log_format, settings.trusted_proxies)

    db.init_app(app)
    migrate.init_app(
        app, db, directory=os.path.join(_REPOSITORY, "migrations"), render_as_batch=True, compare_type=True
    )
    from paygate.core import languages
    from paygate.web import identity  # the admin's language (Accept-Language), the vendor and support contact

    languages.init_app(app)
    identity.init_app(app)
    from paygate.ops import metrics_page  # GET /metrics; its request hooks come first, so latency covers the others

    metrics_page.init_app(app)
    guard.init_app(app)  # bounded bodies (64 KB, the webhook 1 MB), refused before they are read

    from paygate.application import cli
    from paygate.web import favicon, flow, health, openapi, webhooks
    from paygate.web.licence import (
        invoicing,  # noqa: F401 - paying a licence by invoice: its routes join it too
        paying,  # noqa: F401 - paying a licence: its routes join the licence blueprint
    )

    app.register_blueprint(health.bp)
    app.register_blueprint(favicon.bp)  # GET /favicon.ico, which browsers ask for
    app.register_blueprint(openapi.bp)  # GET /openapi.json
    app.register_blueprint(flow.bp)
    app.register_blueprint(webhooks.bp)
    from paygate.web import licence  # the licence page: its key (or one-hour link) in the URL is the credential
    from paygate.web.licence import actions, page  # noqa: F401 - its routes

    app.register_blueprint(licence.bp)
    from paygate.web import licence_api  # GET /api/v1/platforms/<id>/licence: the vendor's tool, at launch

    app.register_blueprint(licence_api.bp)
    cli.register(app)
    if settings.uses_standins:  # never in production: APP_ENV=local only, and never beside anything real
        check_standins(settings)
        from paygate.standins import create_standins_blueprint

        app.register_blueprint(create_standins_blueprint(settings, standins_state_dir))
    from paygate.web import throttling  # rates per address, remembered dead ids, the bound on LTIaaS lookups

    throttling.init_app(app)
    from paygate.web import operator  # sign-in (Flask-Login), CSRF on every form but webhook and stand-ins

    operator.init_app(app)
    # The licence page's forms post to its own URL, whose key is the credential (no cookie, so no CSRF token).
    app.extensions["csrf"].exempt(licence.bp)
    app.extensions["csrf"].exempt(licence_api.bp)  # a bearer token, never a cookie

    from paygate.web import after_answer  # the vendor's messages a request wrote, delivered after its answer

    app.after_request(after_answer.deliver_written)
    _register_security_headers(app)
    _register_error_pages(app)
    return app


def _register_security_headers(app: Flask) -> None:
    @app.before_request
    def _nonce():
        g.csp_nonce = secrets.token_urlsafe(16)

    hsts = app.config["SETTINGS"].public_url.startswith("https://")  # browsers keep to https for two years

    from paygate.web.identity import logo_origin

    logo = logo_origin(app.jinja_env.globals.get("vendor_logo_url"))  # VENDOR_LOGO_URL's origin may serve images
    img_src = "img-src 'self' data:" + (" " + logo if logo else "") + "; "

    @app.after_request
    def _headers(response):
        # Each header only where the view (or a blueprint's hook) has not set it: one pass over the
        # response's few headers (Werkzeug's setdefault raises and catches a KeyError per missing one).
        headers = response.headers
        present = {name.lower() for name, _ in headers}
        if "x-content-type-options" not in present:
            headers.add("X-Content-Type-Options", "nosniff")
        if "referrer-policy" not in present:
            headers.add("Referrer-Policy", "no-referrer")
        if hsts and "strict-transport-security" not in present:
            headers.add("Strict-Transport-Security", guard.HSTS)
        if request.path.startswith("/_local/"):
            return response  # the stand-ins imitate other parties and set their own headers
        # Only the registration flow may be framed (by any LMS host); everything else refuses frames.
        context = g._get_current_object()
        frameable = getattr(context, "frameable", False)
        ancestors = app.config["SETTINGS"].frame_ancestors if frameable else "'none'"
        if not frameable and "x-frame-options" not in present:
            headers.add("X-Frame-Options", "DENY")
        # strict-dynamic lets our nonced script insert the completion script LTIaaS returns.
        if "content-security-policy" not in present:
            headers.add(
                "Content-Security-Policy",
                "default-src 'self'; script-src 'nonce-"
                + getattr(context, "csp_nonce", "")
                + "' 'strict-dynamic'; style-src 'self' 'unsafe-inline'; "
                + img_src
                + "frame-ancestors "
                + ancestors
                + "; base-uri 'none'; form-action 'self'"
                + getattr(context, "form_targets", ""),
            )
        return response


def wants_json() -> bool:
    return (
        request.path.startswith(("/webhooks/", "/operator/api/", "/api/"))
        or request.path.endswith("/status")
        or request.accept_mimetypes.best == "application/json"
    )


def _register_error_pages(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        if exc.code == 413:  # Werkzeug's own (a chunked body cut off) too: one sentence with the limit
            exc = guard.too_large()
        if request_ctx.url_adapter is None:  # a request Flask could not bind: no template can build a URL
            _status, headers, body = guard.fixed_response(
                exc.code, exc.name, exc.description or exc.name, wants_json(), False
            )
            return app.response_class(body, status=exc.code, headers=[h for h in headers if h[0] != "Content-Length"])
        # In the admin's language: ours come translated, Werkzeug's own have catalog entries
        # (paygate/core/languages.py).
        title, message = gettext(exc.name), gettext(exc.description) if exc.description else ""
        if wants_json():
            response = jsonify(error=exc.name, message=message)
            if request.path.startswith("/api/"):  # the licence API's refusals are never kept (its 200s are)
                response.headers["Cache-Control"] = "no-store"
            return response, exc.code
        return render_template("message.html", title=title, message=message, show_support=exc.code >= 500), exc.code

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        app.logger.exception("unexpected error on %s %s", request.method, request.path)
        db.session.rollback()
        message = gettext("Something went wrong on our side. Nothing was charged twice; please try again in a moment.")
        if wants_json():
            return jsonify(error="Internal Server Error", message=message), 500
        return render_template(
            "message.html", title=gettext("Something went wrong"), message=message, show_support=True
        ), 500
