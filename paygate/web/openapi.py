"""GET /openapi.json: the description of every route (paygate/web/openapi.json, kept by hand beside the code)."""

import os

from flask import Blueprint, Response

bp = Blueprint("openapi", __name__)
PATH = os.path.join(os.path.dirname(__file__), "openapi.json")


@bp.get("/openapi.json")
def description():
    """The OpenAPI 3.1 description that operators' scripts (and the fuzz test) read."""
    with open(PATH, "rb") as f:
        body = f.read()
    return Response(body, mimetype="application/json", headers={"Cache-Control": "public, max-age=300"})
