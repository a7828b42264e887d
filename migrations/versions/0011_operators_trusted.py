"""operators you can trust with money: roles, a second factor, tokens that end, notifications

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 15:30:00

Every operator from before this revision becomes an admin (each could do everything until now) with the password
they have. The one API token an operator could hold moves to `operator_tokens` and expires 90 days from the
upgrade. What is done to operator accounts is audited. Notifications to operators are an outbox, one row per
registration and reason. A licence remembers a
subscription an operator set to end at its period's end.
"""

from datetime import datetime, timedelta, timezone

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

TOKEN_DAYS = 90


def upgrade():
    with op.batch_alter_table("operators", schema=None) as batch_op:
        batch_op.add_column(sa.Column("role", sa.String(length=10), server_default="admin", nullable=False))
        batch_op.add_column(sa.Column("password_set_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("invite_token_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("invite_expires_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("disabled_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("totp_secret", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("totp_last_step", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("totp_enrolled_at", sa.DateTime(), nullable=True))
        batch_op.create_unique_constraint(batch_op.f("uq_operators_invite_token_hash"), ["invite_token_hash"])
    op.execute("UPDATE operators SET password_set_at = created_at")

    op.create_table(
        "operator_recovery_codes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("operator_id", sa.Integer(), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("used_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["operator_id"], ["operators.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("code_hash"),
    )
    with op.batch_alter_table("operator_recovery_codes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_operator_recovery_codes_operator_id"), ["operator_id"], unique=False)

    tokens = op.create_table(
        "operator_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("operator_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=100), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("last_used_at", sa.DateTime(), nullable=True),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["operator_id"], ["operators.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    with op.batch_alter_table("operator_tokens", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_operator_tokens_operator_id"), ["operator_id"], unique=False)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    held = op.get_bind().execute(
        sa.text("SELECT id, api_token_hash FROM operators WHERE api_token_hash IS NOT NULL")
    ).fetchall()
    if held:
        op.bulk_insert(
            tokens,
            [
                {
                    "operator_id": pk,
                    "token_hash": stored,
                    "label": "from before tokens expired",
                    "created_at": now,
                    "expires_at": now + timedelta(days=TOKEN_DAYS),
                }
                for pk, stored in held
            ],
        )
    with op.batch_alter_table("operators", schema=None) as batch_op:
        batch_op.drop_constraint("uq_operators_api_token_hash", type_="unique")
        batch_op.drop_column("api_token_hash")

    op.create_table(
        "operator_audit",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("actor", sa.String(length=320), nullable=False),
        sa.Column("action", sa.String(length=40), nullable=False),
        sa.Column("subject", sa.String(length=320), nullable=False),
        sa.Column("detail", sa.String(length=300), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("operator_audit", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_operator_audit_created_at"), ["created_at"], unique=False)

    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("registration_pk", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=100), nullable=False),
        sa.Column("subject", sa.String(length=300), nullable=False),
        sa.Column("body_text", sa.Text(), nullable=False),
        sa.Column("body_html", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=True),
        sa.Column("claimed_until", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.String(length=300), nullable=True),
        sa.Column("sent_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["registration_pk"], ["registrations.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.create_index("ix_notifications_status_next_attempt_at", ["status", "next_attempt_at"], unique=False)
        batch_op.create_index("uq_notifications_registration_pk_reason", ["registration_pk", "reason"], unique=True)

    with op.batch_alter_table("licences", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("cancel_at_period_end", sa.Boolean(), server_default=sa.text("false"), nullable=False)
        )


def downgrade():
    with op.batch_alter_table("licences", schema=None) as batch_op:
        batch_op.drop_column("cancel_at_period_end")
    op.drop_table("notifications")
    op.drop_table("operator_audit")
    with op.batch_alter_table("operators", schema=None) as batch_op:
        batch_op.add_column(sa.Column("api_token_hash", sa.String(length=128), nullable=True))
        batch_op.create_unique_constraint("uq_operators_api_token_hash", ["api_token_hash"])
    op.drop_table("operator_tokens")
    op.drop_table("operator_recovery_codes")
    with op.batch_alter_table("operators", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_operators_invite_token_hash"), type_="unique")
        for column in (
            "totp_enrolled_at",
            "totp_last_step",
            "totp_secret",
            "disabled_at",
            "invite_expires_at",
            "invite_token_hash",
            "password_set_at",
            "role",
        ):
            batch_op.drop_column(column)
