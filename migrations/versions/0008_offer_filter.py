"""operators filter by offer

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 12:00:00

The operator list filters by the offer chosen (the registration's Price), newest first, and lists the
Prices seen on registrations: one index on (price_id, created_at, id) serves both, so that an offer
sold rarely is found without walking every registration, as the state filter does with its own.
"""

from alembic import op


# revision identifiers, used by Alembic.
revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("registrations", schema=None) as batch_op:
        batch_op.create_index("ix_registrations_price_id_created_at_id", ["price_id", "created_at", "id"], unique=False)


def downgrade():
    with op.batch_alter_table("registrations", schema=None) as batch_op:
        batch_op.drop_index("ix_registrations_price_id_created_at_id")
