"""Stamp created_at and updated_at with the statement's time on PostgreSQL too.

Revision ID: 0003_statement_time
Revises: 0002_timestamps
Create Date: 2026-11-25

A stamped time means one thing on every backend: when the statement that wrote
the row ran. ``0002`` gave PostgreSQL ``DEFAULT now()``, which is the start
of the transaction, so two rows inserted seconds apart in one unit of work got
the same time there and different times elsewhere.

- PostgreSQL: both defaults become ``statement_timestamp()``, in one
  ``ALTER TABLE`` statement inside the revision's transaction. Changing a
  default touches only the catalog: the table is not rewritten, and rows
  already stored keep their times.
- MariaDB and SQLite: nothing to do, and nothing is done. Their defaults,
  ``UTC_TIMESTAMP(6)`` and ``strftime(..., 'now')``, already give the time of
  the statement that runs them, and SQLite has no transaction start time to
  offer instead. Touching the columns anyway would cost an ALTER that MariaDB
  commits on its own and, on SQLite, a rebuild of the whole table (batch mode)
  for no change. Only the version table moves, so every backend is at one head.

Downgrading restores ``now()`` on PostgreSQL and keeps every row.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003_statement_time"
down_revision: str | None = "0002_timestamps"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("created_at", "updated_at")


def _set_postgresql_default(expression: str) -> None:
    """Set both columns' default in one statement, so they never disagree."""
    if op.get_context().dialect.name != "postgresql":
        return
    op.execute(
        "ALTER TABLE users "
        + ", ".join(f"ALTER COLUMN {column} SET DEFAULT {expression}" for column in COLUMNS)
    )


def upgrade() -> None:
    _set_postgresql_default("statement_timestamp()")


def downgrade() -> None:
    _set_postgresql_default("now()")
