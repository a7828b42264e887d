"""the payer's billing name

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 14:00:00

`payer_name`: the billing name the payer gave Stripe Checkout (`customer_details.name`), stored with
the payment's evidence. Operators see it beside the LMS URL: every Canvas cloud school registers with
the same issuer URL. Registrations paid before are left NULL (their payer e-mail still shows).
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("registrations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("payer_name", sa.String(length=200), nullable=True))


def downgrade():
    with op.batch_alter_table("registrations", schema=None) as batch_op:
        batch_op.drop_column("payer_name")
