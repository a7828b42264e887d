"""the operators' overview: indexes for its counts and sums, and the table of its summary

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-08 10:00:00

Money per month is summed from an index on licence payments that holds every column it reads (by month of
payment); active platforms and their licences are counted from a partial index of the completed platforms whose
access is decided on; registrations paid before licences, from a partial index of their own (few or none).
Overdue invoices are counted, summed and listed from a partial index of the open invoices by due date. The worker
keeps the aggregate figures in one row of overview_summaries (paygate/ops/overview_summary.py).
"""

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

ACTIVE_PLATFORM = "state = 'completed' AND platform_id IS NOT NULL AND access_wanted = true"
LEGACY_PAID = "licence_pk IS NULL AND amount_paid IS NOT NULL"
OPEN_INVOICE = "kind = 'invoice' AND status = 'open'"


def upgrade():
    op.create_index(
        "ix_licence_payments_paid_at_money",
        "licence_payments",
        ["paid_at", "currency", "amount", "amount_refunded", "dispute_status"],
    )
    op.create_index(
        "ix_registrations_active_platform",
        "registrations",
        ["licence_pk"],
        postgresql_where=sa.text(ACTIVE_PLATFORM),
        sqlite_where=sa.text(ACTIVE_PLATFORM),
    )
    op.create_index(
        "ix_registrations_legacy_paid",
        "registrations",
        ["paid_at"],
        postgresql_where=sa.text(LEGACY_PAID),
        sqlite_where=sa.text(LEGACY_PAID),
    )
    op.create_index(
        "ix_licences_open_invoice_due_at",
        "licences",
        ["due_at", "id"],
        postgresql_where=sa.text(OPEN_INVOICE),
        sqlite_where=sa.text(OPEN_INVOICE),
        postgresql_include=["currency", "amount_remaining"],
    )
    op.create_table(
        "overview_summaries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("figures", sa.JSON(), nullable=True),
        sa.Column("computed_at", sa.DateTime(), nullable=True),
        sa.Column("took_ms", sa.Integer(), nullable=True),
        sa.Column("refreshing_since", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade():
    op.drop_table("overview_summaries")
    op.drop_index("ix_licences_open_invoice_due_at", table_name="licences")
    op.drop_index("ix_registrations_legacy_paid", table_name="registrations")
    op.drop_index("ix_registrations_active_platform", table_name="registrations")
    op.drop_index("ix_licence_payments_paid_at_money", table_name="licence_payments")
