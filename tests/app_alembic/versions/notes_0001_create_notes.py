"""Create notes, each belonging to a user.

Revision ID: notes_0001
Revises:
Create Date: 2026-11-25

The app's first revision, as `alembic revision --autogenerate` wrote it from README.md's
myapp/models.py (with the filters of userstore.app_alembic in env.py), tidied by hand. It runs
after userstore's history: notes.user_name references users.name, so users must exist.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "notes_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# users.name's type, written out as autogenerate rendered userstore.app_alembic.USER_NAME_TYPE.
USER_NAME = (
    sa.String(length=255, collation="BINARY")
    .with_variant(sa.String(length=255, collation="C"), "postgresql")
    .with_variant(
        mysql.VARCHAR(length=255, charset="utf8mb4", collation="utf8mb4_nopad_bin"),
        "mysql",
        "mariadb",
    )
)


def upgrade() -> None:
    op.create_table(
        "notes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_name", USER_NAME, nullable=False),
        sa.Column("text", sa.String(length=500), nullable=False),
        sa.ForeignKeyConstraint(["user_name"], ["users.name"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_notes_user_name"), "notes", ["user_name"], unique=False)


def downgrade() -> None:
    # Autogenerate wrote drop_index first; MariaDB refuses that (1553: the index is needed in a
    # foreign key constraint). Dropping the table drops its index on every backend.
    op.drop_table("notes")
