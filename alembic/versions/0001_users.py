"""Create the users table.

Revision ID: 0001_users
Revises:
Create Date: 2026-11-24

Types are written out here rather than imported from the model, so this
revision keeps meaning what it meant when the model changes. Names compare
byte for byte on every backend: the collation is pinned per dialect.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0001_users"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NAME = (
    sa.String(255, collation="BINARY")
    .with_variant(sa.String(255, collation="C"), "postgresql")
    .with_variant(
        mysql.VARCHAR(255, charset="utf8mb4", collation="utf8mb4_nopad_bin"), "mysql", "mariadb"
    )
)
TABLE_OPTIONS = {
    f"{prefix}_{key}": value
    for prefix in ("mysql", "mariadb")
    for key, value in {
        "engine": "InnoDB",
        "charset": "utf8mb4",
        "collate": "utf8mb4_nopad_bin",
    }.items()
}


def upgrade() -> None:
    # IF NOT EXISTS makes a re-run after a crash on MariaDB (no transactional DDL) safe.
    op.create_table(
        "users",
        sa.Column("name", NAME, nullable=False),
        sa.Column("number", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("name", name="pk_users"),
        if_not_exists=True,
        **TABLE_OPTIONS,
    )


def downgrade() -> None:
    op.drop_table("users", if_exists=True)
