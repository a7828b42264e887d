"""The admin's flow over HTTP: the frame opened from the LMS, and the status it polls."""

import re


def open_frame(client, ltiaas_api, **lms):
    registration_id = ltiaas_api.add(**lms)
    page = client.get(f"/pre-approval?registrationId={registration_id}")
    assert page.status_code == 200, page.text
    token = re.search(r'data-status-url="/flow/([^/]+)/status"', page.text).group(1)
    return registration_id, token, page


def status(client, token):
    response = client.get(f"/flow/{token}/status")
    assert response.status_code == 200
    return response.get_json()
