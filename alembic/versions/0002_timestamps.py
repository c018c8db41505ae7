"""Add created_at and updated_at, UTC timestamps set by the database.

Revision ID: 0002_timestamps
Revises: 0001_users
Create Date: 2026-11-24

Existing rows are stamped with the time of the migration by the column
default itself, on every backend:

- PostgreSQL: ``timestamptz DEFAULT now()``; the whole revision is one transaction.
- MariaDB: one ``ALTER TABLE`` adding both ``DATETIME(6)`` columns with
  ``DEFAULT (UTC_TIMESTAMP(6))``. MariaDB's DDL is atomic per statement but
  not transactional, so a single statement, made re-runnable by
  ``IF [NOT] EXISTS``, is the unit that applies in full or not at all.
- SQLite: cannot ``ADD COLUMN`` with a non-constant default, so batch mode
  rebuilds the table (create, copy, drop, rename) inside one transaction.
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import op
from alembic.operations import BatchOperations
from sqlalchemy.dialects import postgresql

revision: str = "0002_timestamps"
down_revision: str | None = "0001_users"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("created_at", "updated_at")
SQLITE_NOW = "(strftime('%Y-%m-%d %H:%M:%f000', 'now'))"


@contextmanager
def _sqlite_rebuild() -> Iterator[BatchOperations]:
    """Rebuild users in batch mode, keeping what reflection cannot see.

    SQLAlchemy does not reflect SQLite collations, so the copy would silently
    lose COLLATE BINARY on name: restate it.
    """
    with op.batch_alter_table("users", recreate="always") as batch:
        batch.alter_column(
            "name", existing_type=sa.String(255), type_=sa.String(255, collation="BINARY")
        )
        yield batch


def upgrade() -> None:
    dialect = op.get_context().dialect.name
    if dialect in ("mysql", "mariadb"):
        op.execute(
            "ALTER TABLE users "
            + ", ".join(
                f"ADD COLUMN IF NOT EXISTS {column} DATETIME(6) NOT NULL DEFAULT (UTC_TIMESTAMP(6))"
                for column in COLUMNS
            )
        )
    elif dialect == "postgresql":
        for column in COLUMNS:
            op.add_column(
                "users",
                sa.Column(
                    column,
                    postgresql.TIMESTAMP(timezone=True),
                    server_default=sa.text("now()"),
                    nullable=False,
                ),
            )
    else:
        with _sqlite_rebuild() as batch:
            for column in COLUMNS:
                batch.add_column(
                    sa.Column(
                        column, sa.DateTime(), server_default=sa.text(SQLITE_NOW), nullable=False
                    )
                )


def downgrade() -> None:
    dialect = op.get_context().dialect.name
    if dialect in ("mysql", "mariadb"):
        op.execute("ALTER TABLE users " + ", ".join(f"DROP COLUMN IF EXISTS {c}" for c in COLUMNS))
    elif dialect == "postgresql":
        for column in COLUMNS:
            op.drop_column("users", column)
    else:
        with _sqlite_rebuild() as batch:
            for column in COLUMNS:
                batch.drop_column(column)
