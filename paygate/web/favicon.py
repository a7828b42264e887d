"""GET /favicon.ico: the icon browsers ask for at the root of every site (paygate/static/favicon.ico)."""

import os

from flask import Blueprint, Response

bp = Blueprint("favicon", __name__)
PATH = os.path.join(os.path.dirname(os.path.dirname(__file__)), "static", "favicon.ico")
with open(PATH, "rb") as _file:
    ICON = _file.read()  # a few hundred bytes, read once
# A week: every page of the frame and every operator page would otherwise ask again; a new icon shows within it.
CACHE = "public, max-age=604800"


@bp.get("/favicon.ico")
def favicon():
    return Response(ICON, mimetype="image/vnd.microsoft.icon", headers={"Cache-Control": CACHE})
