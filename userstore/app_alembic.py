"""Keep an app's own Alembic history beside userstore's, in one database.

userstore's migrations own the ``users`` table and record their revision in
``userstore_alembic_version``. An app that runs Alembic for its own tables in
the same database would, with a stock ``env.py``, see both as tables its
models lack, and its autogenerate would propose dropping them. The filters
here hide them from the app's autogenerate::

    from userstore import app_alembic

    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        **app_alembic.configure_options(),
    )

userstore's tables are the ones in the connection's default schema (where
userstore's migrations create them): a table of the same name that an app
keeps in a schema of its own stays visible to the app's autogenerate.

An app table may reference ``users.name`` with a foreign key declared as
``ForeignKey(User.name)`` on a column of type :data:`USER_NAME_TYPE`; the
app's migrations then run after userstore's (``userstore upgrade``, then
``alembic upgrade head``). See the README's "Alembic in your app".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import Column, Constraint, Index, Table

from userstore.errors import ConfigurationError
from userstore.galera import LOCK_TABLE as MIGRATION_LOCK_TABLE
from userstore.migration_env import VERSION_TABLE
from userstore.models import NAME_TYPE, Base

if TYPE_CHECKING:
    from alembic.runtime.environment import (
        IncludeNameFn,
        IncludeObjectFn,
        NameFilterParentNames,
        NameFilterType,
    )
    from sqlalchemy.schema import SchemaItem

__all__ = [
    "USERSTORE_TABLES",
    "USER_NAME_TYPE",
    "configure_options",
    "include_name",
    "include_object",
]

USERSTORE_TABLES: Final[frozenset[str]] = frozenset(
    {*Base.metadata.tables, VERSION_TABLE, MIGRATION_LOCK_TABLE}
)
"""The tables userstore's migrations own: ``users`` and ``userstore_alembic_version``."""

USER_NAME_TYPE: Final = NAME_TYPE
"""The column type of ``users.name``, for an app column that references it.

The same length and, per backend, the same collation (``BINARY`` on SQLite,
``"C"`` on PostgreSQL, ``utf8mb4`` / ``utf8mb4_nopad_bin`` on MariaDB, which
refuses a foreign key between string columns of different character sets or
collations), so the reference compares names exactly as ``users`` does.
"""


def _is_userstores(table_name: str | None, schema_name: str | None) -> bool:
    """Whether a table is userstore's: one of its names, in the default schema (``None``)."""
    return schema_name is None and table_name in USERSTORE_TABLES


def include_name(
    name: str | None, type_: NameFilterType, parent_names: NameFilterParentNames
) -> bool:
    """Hide userstore's tables, and everything in them, from the names the app reflects.

    For an app's ``context.configure(include_name=...)``: Alembic calls it
    for each schema, table, column, index and constraint it finds in the
    database, and skips what it returns ``False`` for.

    Args:
        name: The reflected object's name.
        type_: Its kind: ``"schema"``, ``"table"``, ``"column"``, ``"index"``,
            ``"unique_constraint"``, ``"foreign_key_constraint"``...
        parent_names: ``schema_name`` (``None`` for the default schema) and,
            for an object inside a table, ``table_name``.

    Returns:
        ``False`` for ``users`` and ``userstore_alembic_version`` in the
        default schema and anything inside them; ``True`` for everything else.
    """
    if type_ == "schema":
        return True
    table_name = name if type_ == "table" else parent_names.get("table_name")
    return not _is_userstores(table_name, parent_names.get("schema_name"))


def include_object(
    object_: SchemaItem,
    name: str | None,
    type_: NameFilterType,
    reflected: bool,
    compare_to: SchemaItem | None,
) -> bool:
    """Hide userstore's tables, and everything in them, from the app's comparison.

    For an app's ``context.configure(include_object=...)``. It also hides a
    copy of ``users`` that the app put in its own ``MetaData`` (with
    ``User.__table__.to_metadata(...)``), so autogenerate never proposes to
    create or drop it. A foreign key from an app table to ``users`` belongs
    to the app's table and stays visible.

    Args:
        object_: The ``Table``, ``Column``, ``Index`` or constraint compared.
        name: Its name.
        type_: Its kind, as for :func:`include_name`.
        reflected: Whether it was read from the database (else it is the app's model).
        compare_to: What it is compared with on the other side, if anything.

    Returns:
        ``False`` for userstore's tables in the default schema and anything
        inside them; ``True`` for everything else.
    """
    table = _table_of(object_)
    if table is None:
        return True
    return not _is_userstores(table.name, table.schema)


def _table_of(object_: SchemaItem) -> Table | None:
    """The table an object is, or belongs to (``None`` for anything else)."""
    if isinstance(object_, Table):
        return object_
    if isinstance(object_, (Column, Index, Constraint)):
        table = object_.table
        return table if isinstance(table, Table) else None
    return None


def configure_options(
    *,
    version_table: str = "alembic_version",
    include_name: IncludeNameFn | None = None,
    include_object: IncludeObjectFn | None = None,
) -> dict[str, Any]:
    """Options for the app's ``context.configure(...)``, with userstore's filters in them.

    Args:
        version_table: The app's own version table; Alembic's default is fine.
        include_name: The app's own name filter, if it has one: a name is
            reflected only if both it and userstore's filter allow it.
        include_object: The app's own object filter, if it has one, combined
            in the same way.

    Returns:
        ``version_table``, ``include_name`` and ``include_object``, to pass
        as keyword arguments.

    Raises:
        ConfigurationError: ``version_table`` is userstore's own; the two
            histories would then overwrite each other's revision.
    """
    if version_table == VERSION_TABLE:
        raise ConfigurationError(
            f"{VERSION_TABLE} is userstore's version table; give the app's history "
            "a version table of its own (Alembic's default, alembic_version, is fine)"
        )
    return {
        "version_table": version_table,
        "include_name": _both_names(include_name),
        "include_object": _both_objects(include_object),
    }


def _both_names(app_filter: IncludeNameFn | None) -> IncludeNameFn:
    if app_filter is None:
        return include_name

    def include_name_of_both(
        name: str | None, type_: NameFilterType, parent_names: NameFilterParentNames
    ) -> bool:
        return include_name(name, type_, parent_names) and app_filter(name, type_, parent_names)

    return include_name_of_both


def _both_objects(app_filter: IncludeObjectFn | None) -> IncludeObjectFn:
    if app_filter is None:
        return include_object

    def include_object_of_both(
        object_: SchemaItem,
        name: str | None,
        type_: NameFilterType,
        reflected: bool,
        compare_to: SchemaItem | None,
    ) -> bool:
        return include_object(object_, name, type_, reflected, compare_to) and app_filter(
            object_, name, type_, reflected, compare_to
        )

    return include_object_of_both
