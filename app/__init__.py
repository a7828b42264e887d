"""The payment-gated LTI registration service."""
import os
import secrets

from flask import Flask, g, jsonify, render_template, request
from flask_migrate import Migrate
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from . import logs
from .config import load_settings
from .db import db

migrate = Migrate()


def create_app(test_config: dict | None = None) -> Flask:
    """Build the application; `test_config` overrides settings (lower-case Settings field names)."""
    app = Flask(__name__, instance_relative_config=True)
    settings = load_settings(test_config)
    os.makedirs(app.instance_path, exist_ok=True)
    database_url = settings.database_url or f"sqlite:///{os.path.join(app.instance_path, 'paygate.sqlite')}"
    if database_url.startswith("postgres://"):
        database_url = "postgresql+psycopg://" + database_url[len("postgres://"):]
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
    if settings.trusted_proxies:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies, x_proto=settings.trusted_proxies,
                                x_host=settings.trusted_proxies)
    # The format (LOG_FORMAT), redaction, the request id of every request and log line: app/logs.py.
    logs.setup(app, settings.log_format, settings.trusted_proxies)

    db.init_app(app)
    migrate.init_app(app, db, directory=os.path.join(os.path.dirname(os.path.dirname(__file__)), "migrations"),
                     render_as_batch=True, compare_type=True)
    from . import metrics  # GET /metrics; its request hooks come first, so latency covers the others
    metrics.init_app(app)

    from . import cli, flow, health, webhooks
    app.register_blueprint(health.bp)
    app.register_blueprint(flow.bp)
    app.register_blueprint(webhooks.bp)
    cli.register(app)
    if settings.uses_standins:  # never in production: APP_ENV=local only
        from .standins import create_standins_blueprint
        app.register_blueprint(create_standins_blueprint(settings))
    from . import operator  # sign-in (Flask-Login), CSRF on every form but webhook and stand-ins, limiter
    operator.init_app(app)

    _register_security_headers(app)
    _register_error_pages(app)
    return app


def _register_security_headers(app: Flask) -> None:
    @app.before_request
    def _nonce():
        g.csp_nonce = secrets.token_urlsafe(16)

    @app.after_request
    def _headers(response):
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        if request.path.startswith("/_local/"):
            return response  # the stand-ins imitate other parties and set their own headers
        # Only the registration flow may be framed (by any LMS host); everything else refuses frames.
        frameable = getattr(g, "frameable", False)
        ancestors = app.config["SETTINGS"].frame_ancestors if frameable else "'none'"
        if not frameable:
            response.headers.setdefault("X-Frame-Options", "DENY")
        # strict-dynamic lets our nonced script insert the completion script LTIaaS returns.
        response.headers.setdefault(
            "Content-Security-Policy",
            f"default-src 'self'; script-src 'nonce-{g.get('csp_nonce', '')}' 'strict-dynamic'; "
            f"style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors {ancestors}; "
            "base-uri 'none'; form-action 'self'",
        )
        return response


def wants_json() -> bool:
    return (request.path.startswith(("/webhooks/", "/operator/api/")) or request.path.endswith("/status")
            or request.accept_mimetypes.best == "application/json")


def _register_error_pages(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        if wants_json():
            return jsonify(error=exc.name, message=exc.description), exc.code
        return render_template("message.html", title=exc.name, message=exc.description), exc.code

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        app.logger.exception("unexpected error on %s %s", request.method, request.path)
        db.session.rollback()
        message = "Something went wrong on our side. Nothing was charged twice; please try again in a moment."
        if wants_json():
            return jsonify(error="Internal Server Error", message=message), 500
        return render_template("message.html", title="Something went wrong", message=message), 500
