"""The table of the overview's aggregate figures as last computed (paygate/ops/overview_summary.py keeps it)."""

from datetime import datetime

from sqlalchemy import JSON, DateTime, Integer
from sqlalchemy.orm import Mapped, mapped_column

from paygate.core.db import db


class OverviewSummary(db.Model):
    """One row (id 1): the figures too costly to count on every view of the overview, and when they were counted."""

    __tablename__ = "overview_summaries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    figures: Mapped[dict | None] = mapped_column(JSON)
    computed_at: Mapped[datetime | None] = mapped_column(DateTime)
    took_ms: Mapped[int | None] = mapped_column(Integer)
    # Set by the one worker refreshing the figures (a conditional UPDATE), cleared when it stores them; a claim
    # older than a bound was cut short (a killed worker) and may be taken over.
    refreshing_since: Mapped[datetime | None] = mapped_column(DateTime)
