"""The operators' CSV export never hands a spreadsheet a formula: every cell of outside text that starts
with a character a spreadsheet reads as one, or skips before looking (OWASP "CSV Injection"), starts
with a quote instead, and keeps its text."""

import csv
import io

from tests.helpers.flow import open_frame
from tests.helpers.operators import seed

FORMULA = 'HYPERLINK("http://evil.example","x")'
LEADERS = [
    "=",
    "+",
    "-",
    "@",
    "\t",
    "\r",
    "\n",
    " ",
    "\uff1d",
    "\uff0b",
    "\uff0d",
    "\uff20",
    "\ufe66",
    "\u2212",
    "\u00a0",
    "\u3000",
    "\u200b",
    "\x0b",
]


def export(client) -> list[dict]:
    response = client.get("/operator/registrations.csv")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    return list(csv.DictReader(io.StringIO(response.get_data(as_text=True), newline="")))


def test_a_cell_a_spreadsheet_would_run_starts_with_a_quote(app, ops):
    for leader in LEADERS:
        seed(
            app,
            1,
            lms_family=leader + "SUM(1)",
            lms_version=leader + FORMULA,
            payer_email=leader + FORMULA,
            lms_url=leader + FORMULA,
        )
    rows = export(ops)
    assert len(rows) == len(LEADERS)
    for row in rows:
        for column in ("lms_family", "lms_version", "payer_email", "lms_url"):
            cell = row[column]
            assert cell[:1] == "'" and cell[1:2] in LEADERS and cell[2:] in ("SUM(1)", FORMULA), (column, cell)


def test_harmless_cells_are_left_as_they_are(app, ops):
    seed(
        app,
        1,
        lms_version="4.4.1+ (Build: 20240705)",
        payer_email="it@school.example",
        amount_paid=4900,
        lms_url="https://moodle.school.example",
    )
    [row] = export(ops)
    assert (row["lms_version"], row["payer_email"], row["amount_paid"], row["lms_url"]) == (
        "4.4.1+ (Build: 20240705)",
        "it@school.example",
        "4900",
        "https://moodle.school.example",
    )


def test_what_an_lms_reports_cannot_run_in_the_export(ops, stripe_api, ltiaas_api):
    """LTIaaS relays the LMS's family and version as the LMS sent them; they are stored as one line of text
    (the line break folded away), and a cell that then starts a formula is still neutralised."""
    open_frame(ops, ltiaas_api, family="\uff1dSUM(1)", version="\n=" + FORMULA)
    [row] = export(ops)
    assert row["lms_family"] == "'\uff1dSUM(1)" and row["lms_version"] == "'=" + FORMULA
