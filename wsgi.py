"""WSGI entry point: `gunicorn wsgi:app`, `flask --app wsgi ...`."""
import sys

from app import create_app
from app.config import ConfigError

try:
    app = create_app()
except ConfigError as exc:
    # One clear line naming the variable, never its value.
    print(f"configuration error: {exc}", file=sys.stderr)
    sys.exit(2)
