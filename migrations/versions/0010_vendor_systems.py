"""the vendor's systems know: events for the vendor, in an outbox

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 12:00:00

Each event for the vendor's systems is a row of `vendor_messages`, written in the transaction of the change
it reports and delivered from there. A licence remembers what the vendor was last told of it (`vendor_state`)
and a platform its access as last told (`vendor_access`), so that one change makes one message however many
times it is applied. Nothing is sent for what happened before this revision.
"""

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "vendor_messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.String(length=40), nullable=False),
        sa.Column("type", sa.String(length=40), nullable=False),
        sa.Column("registration_pk", sa.Integer(), nullable=False),
        sa.Column("licence_pk", sa.Integer(), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=True),
        sa.Column("claimed_until", sa.DateTime(), nullable=True),
        sa.Column("last_attempt_at", sa.DateTime(), nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_answer", sa.String(length=300), nullable=True),
        sa.Column("delivered_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["licence_pk"], ["licences.id"]),
        sa.ForeignKeyConstraint(["registration_pk"], ["registrations.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("message_id"),
    )
    with op.batch_alter_table("vendor_messages", schema=None) as batch_op:
        batch_op.create_index(
            "ix_vendor_messages_pending_licence_pk_id",
            ["licence_pk", "id"],
            unique=False,
            postgresql_where=sa.text("status = 'pending'"),
            sqlite_where=sa.text("status = 'pending'"),
        )
        batch_op.create_index(batch_op.f("ix_vendor_messages_registration_pk"), ["registration_pk"], unique=False)
        batch_op.create_index("ix_vendor_messages_status_next_attempt_at", ["status", "next_attempt_at"], unique=False)
    with op.batch_alter_table("licences", schema=None) as batch_op:
        batch_op.add_column(sa.Column("vendor_state", sa.String(length=64), nullable=True))
    with op.batch_alter_table("registrations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("vendor_access", sa.Boolean(), nullable=True))


def downgrade():
    with op.batch_alter_table("registrations", schema=None) as batch_op:
        batch_op.drop_column("vendor_access")
    with op.batch_alter_table("licences", schema=None) as batch_op:
        batch_op.drop_column("vendor_state")
    with op.batch_alter_table("vendor_messages", schema=None) as batch_op:
        batch_op.drop_index("ix_vendor_messages_status_next_attempt_at")
        batch_op.drop_index(batch_op.f("ix_vendor_messages_registration_pk"))
        batch_op.drop_index("ix_vendor_messages_pending_licence_pk_id")
    op.drop_table("vendor_messages")
