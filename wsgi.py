"""WSGI entry point: `gunicorn wsgi:app`, `flask --app wsgi ...`."""

import sys

from paygate.application import create_app
from paygate.core.config import ConfigError

try:
    app = create_app()
except ConfigError as exc:
    # One clear line naming the variable, never its value.
    print(f"configuration error: {exc}", file=sys.stderr)
    sys.exit(2)
