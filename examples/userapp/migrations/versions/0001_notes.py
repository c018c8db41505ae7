"""Create notes: texts about a user, deleted with the user.

Revision ID: 0001_notes
Revises:
Create Date: 2026-11-25

Runs after userstore's migrations (``users`` must exist: the foreign key
references it). ``user_name`` has the type of ``users.name``, written out as
userstore's own revision writes it (length and per-backend collation; MariaDB
refuses a foreign key between columns of different collations). MariaDB
commits each DDL statement, so both are re-runnable (``IF NOT EXISTS``) after a
crash between them.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0001_notes"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

USER_NAME = (
    sa.String(255, collation="BINARY")
    .with_variant(sa.String(255, collation="C"), "postgresql")
    .with_variant(
        mysql.VARCHAR(255, charset="utf8mb4", collation="utf8mb4_nopad_bin"), "mysql", "mariadb"
    )
)


def upgrade() -> None:
    op.create_table(
        "notes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_name", USER_NAME, nullable=False),
        sa.Column("body", sa.String(1000), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_notes"),
        sa.ForeignKeyConstraint(
            ["user_name"], ["users.name"], name="fk_notes_user_name_users", ondelete="CASCADE"
        ),
        mariadb_engine="InnoDB",
        mariadb_charset="utf8mb4",
        if_not_exists=True,
    )
    # The foreign key's lookups (the cascade, a user's notes) use it on every backend.
    op.create_index("ix_notes_user_name", "notes", ["user_name"], if_not_exists=True)


def downgrade() -> None:
    op.drop_table("notes", if_exists=True)  # and its index
