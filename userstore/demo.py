"""The seed notebook's walk through SQLAlchemy, replayed through userstore's API."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import URL

from userstore import migrations
from userstore.engine import create_engine, create_session_factory
from userstore.models import User
from userstore.repository import UserRepository


def replay_notebook(
    url: str | URL | None = None, *, echo: bool = True, say: Callable[[str], object] = print
) -> None:
    """Run each cell of the seed notebook through the repository, with SQL echo.

    The database is the one :func:`~userstore.create_engine` picks (the
    embedded SQLite default unless told otherwise). A Jenny left by an earlier
    run is removed first, so the demo can run again.

    Args:
        url: Database URL; see :func:`~userstore.create_engine`.
        echo: Log the SQL that each step sends.
        say: Where the cell outputs go.
    """
    engine = create_engine(url, echo=echo)
    try:
        say(f"# In [2]: engine\n{engine!r}")
        say("# In [6]: the schema comes from the migrations (userstore.migrations.upgrade)")
        migrations.upgrade(engine)
        session_factory = create_session_factory(engine)
        with session_factory() as session:
            repo = UserRepository(session)
            if repo.exists("Jenny"):
                say("# (a Jenny from an earlier run is removed first)")
                repo.delete("Jenny")
            repo.commit()

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
    finally:
        engine.dispose()
