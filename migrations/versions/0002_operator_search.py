"""operator search: lower-cased payer e-mail, LMS URL prefix

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 10:00:00

Exact search on the payer's e-mail whatever its case, and prefix search on the LMS URL
(`lower(lms_url) LIKE 'https://canvas.%'`), both by index at a million registrations. On
PostgreSQL the URL index uses text_pattern_ops so that LIKE can use it under any collation.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    op.create_index("ix_registrations_payer_email_lower", "registrations", [sa.text("lower(payer_email)")])
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE INDEX ix_registrations_lms_url_lower ON registrations (lower(lms_url) text_pattern_ops)")
    else:
        op.create_index("ix_registrations_lms_url_lower", "registrations", [sa.text("lower(lms_url)")])


def downgrade():
    op.drop_index("ix_registrations_lms_url_lower", table_name="registrations")
    op.drop_index("ix_registrations_payer_email_lower", table_name="registrations")
