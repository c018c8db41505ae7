"""The seed notebook's walk through SQLAlchemy, replayed through userstore's API.

The notebook ran on an in-memory SQLite database, and so does the demo unless
it is pointed elsewhere (``userstore --url URL demo``). Wherever it runs, it
changes no data it did not create: it refuses a database that already holds
users, and deletes the one user it adds before it ends.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from sqlalchemy import Engine, exists, inspect, select

from userstore import migrations
from userstore.engine import create_session_factory
from userstore.errors import UserStoreError
from userstore.models import User
from userstore.repository import UserRepository
from userstore.urls import shown_url

NOTEBOOK_URL: Final = "sqlite:///:memory:"
"""The database the seed notebook ran on, and the demo's default."""


class DemoRefusedError(UserStoreError):
    """The demo was pointed at a database that already holds users; nothing was changed."""


def replay_notebook(engine: Engine, *, say: Callable[[str], object] = print) -> None:
    """Run each cell of the seed notebook through the repository, on ``engine``.

    The demo leaves the data as it found it, so it can run again: it refuses
    a database whose ``users`` table holds any user (before migrating
    anything), migrates the schema to head if needed, replays the cells,
    which add Jenny, and deletes Jenny at the end. The schema stays migrated.
    SQL is echoed when the engine was created with ``echo=True``, as in the
    notebook.

    Args:
        engine: An engine from :func:`~userstore.create_engine`, for example
            on :data:`NOTEBOOK_URL`; the caller disposes of it.
        say: Where the cell outputs go.

    Raises:
        DemoRefusedError: the database already holds users.
        MigrationError: the database is at a revision this code does not know.
        DatabaseError: the database failed a step.
    """
    say(f"# In [2]: engine\n{engine!r}")
    say("# (first, the demo makes sure the database holds no users: it changes only its own)")
    _refuse_unless_empty(engine)
    say("# In [6]: the schema comes from the migrations (userstore.migrations.upgrade)")
    migrations.upgrade(engine)
    session_factory = create_session_factory(engine)
    with session_factory() as session:
        repo = UserRepository(session)
        jenny = User(name="Jenny", number=8675309)
        say(f"# In [9]: jenny\n{jenny!r}")
        say(f"# In [11]-[12]: jenny.name, jenny.number\n{jenny.name!r} {jenny.number!r}")
        repo.add(jenny)
        say("# In [16]: repo.add(jenny)  (staged: no SQL yet)")
        say("# In [17]: jenny_from_db = repo.get('Jenny')  (autoflushes the INSERT)")
        jenny_from_db = repo.get("Jenny")
        say(repr(jenny_from_db))
        say(f"# In [18]: jenny_from_db is jenny\n{jenny_from_db is jenny}")
        say("# In [19]: repo.commit()")
        repo.commit()
        say(f"# In [22]: repo.session.new\n{repo.session.new!r}")
        say("# In [24]: repo.get('Jenny')  (read again from the database)")
        say(repr(repo.get("Jenny")))
        repo.commit()
        say("# (the demo deletes the Jenny it added: the database holds no users again)")
        repo.delete("Jenny")
        repo.commit()


def _refuse_unless_empty(engine: Engine) -> None:
    # Asked before migrating, so a database with users is not touched at all;
    # any table called users counts, whoever created it.
    with engine.connect() as connection:
        holds_users = inspect(connection).has_table(User.__tablename__) and bool(
            connection.scalar(select(exists().select_from(User.__table__)))
        )
    if holds_users:
        raise DemoRefusedError(
            f"the demo adds and deletes a user called Jenny, so it runs only on a database "
            f"without users, and {shown_url(engine.url)} already holds users; "
            "leave out --url to run it in memory"
        )
