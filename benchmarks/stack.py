"""Everything the variants of one backend use: engines, session factories and a raw connection."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy
from sqlalchemy import URL, Engine
from sqlalchemy.orm import Session, sessionmaker

import userstore
from benchmarks.drivers import RawConnection


@dataclass
class Stack:
    """The connections to one benchmark database.

    ``engine`` is userstore's (``userstore.create_engine``), shared by the
    userstore, Core, ORM and advanced-alchemy variants so that they differ
    only in the library; ``default_engine`` is a plain
    ``sqlalchemy.create_engine`` for the "ORM (default engine)" variant.
    """

    backend: str
    url: URL
    engine: Engine
    default_engine: Engine
    raw: RawConnection
    userstore_sessions: sessionmaker[Session]
    orm_sessions: sessionmaker[Session]
    default_engine_sessions: sessionmaker[Session]

    @classmethod
    def open(cls, backend: str, url: URL) -> Stack:
        engine = userstore.create_engine(url)
        default_engine = sqlalchemy.create_engine(url)
        return cls(
            backend=backend,
            url=url,
            engine=engine,
            default_engine=default_engine,
            raw=RawConnection.open(backend, url),
            userstore_sessions=userstore.create_session_factory(engine),
            orm_sessions=sessionmaker(engine),
            default_engine_sessions=sessionmaker(default_engine),
        )

    def warm_up(self) -> None:
        """Open each engine's pooled connection now, so no timed run pays for connecting."""
        for engine in (self.engine, self.default_engine):
            with engine.connect() as connection:
                connection.exec_driver_sql("SELECT 1").all()

    def close(self) -> None:
        self.raw.close()
        self.engine.dispose()
        self.default_engine.dispose()
