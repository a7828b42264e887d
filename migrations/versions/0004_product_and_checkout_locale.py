"""the product a registration was shown, and Checkout's language

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 10:00:00

`product_name` and `product_description`: the Stripe Product of the Price, stored when the
registration is opened, so that every page of its flow names what is bought (and, without
VENDOR_NAME, whom the admin pays) as it was shown. Registrations opened before are left NULL: their
pages name the product of the Price last read from Stripe.
`checkout_locale`: the `locale` the registration's Checkout Sessions of the current generation are
opened with (a retry of a generation replays the same request under the same idempotency key).
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("registrations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("product_name", sa.String(length=250), nullable=True))
        batch_op.add_column(sa.Column("product_description", sa.String(length=1000), nullable=True))
        batch_op.add_column(sa.Column("checkout_locale", sa.String(length=10), nullable=True))


def downgrade():
    # SQLite drops columns by copying the table, and its copy cannot carry expression indexes
    # (migration 0002's): take them off first (if a later downgrade's copy has not already) and put them
    # back after.
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        op.execute("DROP INDEX IF EXISTS ix_registrations_lms_url_lower")
        op.execute("DROP INDEX IF EXISTS ix_registrations_payer_email_lower")
    with op.batch_alter_table("registrations", schema=None) as batch_op:
        batch_op.drop_column("checkout_locale")
        batch_op.drop_column("product_description")
        batch_op.drop_column("product_name")
    if sqlite:
        op.create_index("ix_registrations_payer_email_lower", "registrations", [sa.text("lower(payer_email)")])
        op.create_index("ix_registrations_lms_url_lower", "registrations", [sa.text("lower(lms_url)")])
