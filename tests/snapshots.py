"""A comparable picture of a database's schema, read by reflection."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, inspect, text


def schema_snapshot(engine: Engine, *, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """Tables with their columns (type with collation, nullability, default) and primary key.

    On SQLite, whose reflection omits collations, the stored CREATE TABLE text
    is part of the picture too.
    """
    inspector = inspect(engine)
    snapshot: dict[str, Any] = {}
    for table in sorted(set(inspector.get_table_names()) - set(exclude)):
        columns = [
            (c["name"], str(c["type"]), c["nullable"], str(c.get("default")))
            for c in inspector.get_columns(table)
        ]
        primary_key = inspector.get_pk_constraint(table)["constrained_columns"]
        snapshot[table] = {"columns": columns, "primary_key": primary_key}
        if engine.dialect.name == "sqlite":
            with engine.connect() as connection:
                snapshot[table]["sql"] = " ".join(
                    str(
                        connection.execute(
                            text("SELECT sql FROM sqlite_master WHERE name = :t"), {"t": table}
                        ).scalar()
                    )
                    .replace('"', "")
                    .split()
                )
    return snapshot
