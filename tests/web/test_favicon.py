"""The site's icon: served where browsers ask for it, linked from the flow's pages, allowed by their CSP."""

import re

from tests.helpers.flow import open_frame


def test_favicon_is_served_as_an_image_and_cached(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 200
    assert response.mimetype.startswith("image/")
    assert response.data[:4] == b"\x00\x00\x01\x00"  # an ICO file's header
    assert "max-age=604800" in response.headers["Cache-Control"]


def test_the_flow_page_links_the_favicon_and_its_csp_allows_it(client, stripe_api, ltiaas_api):
    _, _, page = open_frame(client, ltiaas_api)
    assert re.search(r'<link rel="icon" href="/favicon.ico"', page.text)
    # Same origin: the pages' img-src (which governs icons) allows 'self'.
    assert re.search(r"img-src 'self'[^;]*;", page.headers["Content-Security-Policy"])
