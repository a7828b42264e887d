"""The overview's summary: counted again by the worker when due and not before, by one worker at a time (a claim
cut short is taken over), shown "as of" the time it was counted, and counted by the page itself when there is
none or it is stale (no worker running)."""

import re
import threading
from datetime import timedelta

from sqlalchemy import update

from paygate.core.db import db, utcnow
from paygate.core.models import OverviewSummary
from paygate.ops import overview_summary, worker
from tests.helpers.operators import seed

REFRESH = timedelta(seconds=overview_summary.REFRESH_SECONDS)


def opened(app, n: int = 1) -> None:
    """`n` registrations opened just now: the funnel of the last 30 days counts them."""
    seed(app, n, state="pending", created_at=utcnow())


def stored(app) -> OverviewSummary | None:
    with app.app_context():
        row = db.session.get(OverviewSummary, overview_summary.ROW)
        if row is not None:
            db.session.expunge(row)
        return row


def funnel_opened(page: str) -> str:
    return re.search(r'id="funnel-opened">([^<]*)<', page).group(1)


def test_the_worker_counts_again_when_due_and_not_before(app):
    opened(app, 2)
    start = utcnow() - timedelta(hours=1)
    with app.app_context():
        result = worker.run_once(start)
        assert result["overview_ms"] >= 0
    first = stored(app)
    assert first.computed_at == start and first.figures["funnel"][0] == 2 and first.refreshing_since is None

    opened(app)
    with app.app_context():
        assert "overview_ms" not in worker.run_once(start + REFRESH - timedelta(seconds=1))
    assert stored(app).computed_at == start and stored(app).figures["funnel"][0] == 2  # not due yet

    with app.app_context():
        assert overview_summary.refresh_due(start + REFRESH) is not None
    again = stored(app)
    assert again.computed_at == start + REFRESH and again.figures["funnel"][0] == 3


def test_one_worker_counts_at_a_time_and_a_claim_cut_short_is_taken_over(app):
    opened(app)
    start = utcnow() - timedelta(hours=1)
    with app.app_context():
        overview_summary.refresh_due(start)
        # Another worker claimed the due refresh a minute ago and is counting.
        db.session.execute(update(OverviewSummary).values(refreshing_since=start + REFRESH))
        db.session.commit()
    opened(app)
    later = start + REFRESH + timedelta(minutes=1)
    with app.app_context():
        assert overview_summary.refresh_due(later) is None
    assert stored(app).computed_at == start and stored(app).figures["funnel"][0] == 1

    # That worker was killed: once its claim is CLAIM_SECONDS old, the next pass counts.
    taken_over = start + REFRESH + timedelta(seconds=overview_summary.CLAIM_SECONDS + 1)
    with app.app_context():
        assert overview_summary.refresh_due(taken_over) is not None
    row = stored(app)
    assert (row.computed_at, row.figures["funnel"][0], row.refreshing_since) == (taken_over, 2, None)


def test_two_workers_at_once_count_once(pg_app):
    opened(pg_app)
    now = utcnow()
    barrier = threading.Barrier(2)
    results = []

    def one_worker():
        with pg_app.app_context():
            barrier.wait()
            results.append(overview_summary.refresh_due(now))

    threads = [threading.Thread(target=one_worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 2 and results.count(None) == 1  # the other found the refresh claimed, or done
    assert stored(pg_app).computed_at == now and stored(pg_app).figures["funnel"][0] == 1


def test_the_page_shows_the_stored_figures_as_of_when_they_were_counted(app, ops):
    opened(app, 2)
    counted = (utcnow() - timedelta(minutes=2)).replace(microsecond=0)
    with app.app_context():
        overview_summary.refresh_due(counted)
    opened(app)  # after the count: the page shows it at the next one
    page = ops.get("/operator/overview").text
    assert funnel_opened(page) == "2"
    assert f"{counted:%H:%M} UTC</time>" in page and f'datetime="{counted:%Y-%m-%dT%H:%M:%SZ}"' in page
    assert "counted again every 5 minutes" in page
    assert "1 opened" not in ops.get("/operator/overview/funnel.svg").text  # the chart says what its table says
    assert "2 opened" in ops.get("/operator/overview/funnel.svg").text


def test_the_page_counts_the_figures_itself_when_there_are_none_or_they_are_stale(app, ops):
    opened(app)
    assert stored(app) is None  # a fresh install: no worker has counted yet
    assert funnel_opened(ops.get("/operator/overview").text) == "1"
    first = stored(app)
    assert first.figures["funnel"][0] == 1 and first.computed_at > utcnow() - timedelta(minutes=1)

    opened(app, 2)
    stale = utcnow() - timedelta(seconds=overview_summary.STALE_SECONDS + 1)
    with app.app_context():
        db.session.execute(update(OverviewSummary).values(computed_at=stale))
        db.session.commit()
    assert funnel_opened(ops.get("/operator/overview").text) == "3"  # the worker is not running: counted now
    row = stored(app)
    assert row.figures["funnel"][0] == 3 and row.computed_at > stale


def test_a_failed_count_leaves_the_figures_and_frees_the_claim(app, monkeypatch):
    opened(app)
    start = utcnow() - timedelta(hours=1)
    with app.app_context():
        overview_summary.refresh_due(start)

    def broken():
        raise RuntimeError("the database went away")

    monkeypatch.setattr(overview_summary, "recurring", broken)
    with app.app_context():
        result = worker.run_once(start + REFRESH)
    assert result["overview_failed"] == 1 and "overview_ms" not in result
    row = stored(app)
    assert (row.computed_at, row.refreshing_since) == (start, None)  # the next pass tries again
