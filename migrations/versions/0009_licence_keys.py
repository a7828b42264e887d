"""a licence belongs to a school: keys, platforms, pilots

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 10:00:00

A licence holds platforms: each registration points at its licence (`licence_pk`); every existing
registration's licence holds its one platform. A licence keeps its key only as a SHA-256 hash, with the
key's last 4 characters for operators; existing licences get a new random key that nobody has seen
(an admin gets one by asking the vendor, who can replace it). Pilots have an end date, and a payment
begun on the licence page holds a pilot's access until its Checkout Session expires.
"""

import hashlib
import secrets

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford's base 32, as paygate/licensing/keys.py


def upgrade():
    with op.batch_alter_table("licences", schema=None) as batch_op:
        batch_op.add_column(sa.Column("key_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("key_hint", sa.String(length=4), nullable=True))
        batch_op.add_column(sa.Column("pilot_ends_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("payment_pending_until", sa.DateTime(), nullable=True))
        batch_op.create_unique_constraint("uq_licences_key_hash", ["key_hash"])
        batch_op.create_index(batch_op.f("ix_licences_pilot_ends_at"), ["pilot_ends_at"], unique=False)
    with op.batch_alter_table("registrations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("licence_pk", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("replaced_at", sa.DateTime(), nullable=True))
        batch_op.create_index(batch_op.f("ix_registrations_licence_pk"), ["licence_pk"], unique=False)
        batch_op.create_foreign_key("fk_registrations_licence_pk_licences", "licences", ["licence_pk"], ["id"])
    bind = op.get_bind()
    bind.execute(
        sa.text(
            "UPDATE registrations SET licence_pk = "
            "(SELECT licences.id FROM licences WHERE licences.registration_pk = registrations.id)"
        )
    )
    for (pk,) in bind.execute(sa.text("SELECT id FROM licences WHERE key_hash IS NULL")).all():
        key = "".join(secrets.choice(_ALPHABET) for _ in range(16))
        bind.execute(
            sa.text("UPDATE licences SET key_hash = :hash, key_hint = :hint WHERE id = :id"),
            {"hash": hashlib.sha256(key.encode()).hexdigest(), "hint": key[-4:], "id": pk},
        )


def downgrade():
    with op.batch_alter_table("registrations", schema=None) as batch_op:
        batch_op.drop_constraint("fk_registrations_licence_pk_licences", type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_registrations_licence_pk"))
        batch_op.drop_column("replaced_at")
        batch_op.drop_column("licence_pk")
    with op.batch_alter_table("licences", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_licences_pilot_ends_at"))
        batch_op.drop_constraint("uq_licences_key_hash", type_="unique")
        for column in ("payment_pending_until", "pilot_ends_at", "key_hint", "key_hash"):
            batch_op.drop_column(column)
