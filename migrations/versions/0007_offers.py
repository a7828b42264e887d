"""offers: several Prices, seats, promotion codes, tax and the card payment's invoice

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 07:00:00

A registration stores the offer chosen (its Price was already there) with the number of seats and
their unit; a Checkout Session the choice it was opened for and its totals; a licence what Stripe
billed: Price, quantity, unit, amount after discounts, discount, tax, promotion code and the invoice's
PDF. Rows from before are one seat of the one Price (quantity 1 on registrations; NULL on licences
and sessions, read as "the registration's Price, once").
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("registrations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("quantity", sa.Integer(), server_default="1", nullable=False))
        batch_op.add_column(sa.Column("seat_unit", sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column("checkout_payer_label", sa.String(length=50), nullable=True))
    with op.batch_alter_table("checkout_sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("price_id", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("quantity", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("amounts", sa.JSON(), nullable=True))
    with op.batch_alter_table("licences", schema=None) as batch_op:
        batch_op.add_column(sa.Column("price_id", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("quantity", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("seat_unit", sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column("amount", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("discount", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("tax", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("promotion_code", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("promotion_code_id", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("billing_country", sa.String(length=2), nullable=True))
        batch_op.add_column(sa.Column("billing_postal_code", sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column("invoice_pdf", sa.Text(), nullable=True))
        batch_op.create_index(batch_op.f("ix_licences_price_id"), ["price_id"], unique=False)


def downgrade():
    with op.batch_alter_table("licences", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_licences_price_id"))
        for column in ("invoice_pdf", "billing_postal_code", "billing_country", "promotion_code_id", "promotion_code", "tax", "discount", "amount", "seat_unit", "quantity", "price_id"):
            batch_op.drop_column(column)
    with op.batch_alter_table("checkout_sessions", schema=None) as batch_op:
        for column in ("amounts", "quantity", "price_id"):
            batch_op.drop_column(column)
    with op.batch_alter_table("registrations", schema=None) as batch_op:
        batch_op.drop_column("checkout_payer_label")
        batch_op.drop_column("seat_unit")
        batch_op.drop_column("quantity")
