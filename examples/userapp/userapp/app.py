"""The ASGI app: ``create_app()`` builds it; its lifespan owns the database engine.

No engine exists before the app starts: the lifespan creates it (from
``USERSTORE_DATABASE_URL``, else ``sqlite:///userstore.db``, or the URL given),
refuses a schema that is not at head, and disposes of it at shutdown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import userstore
from fastapi import FastAPI

from userapp import schema
from userapp.api import router
from userapp.http_errors import EXCEPTION_HANDLERS


def create_app(database_url: str | None = None) -> FastAPI:
    """Build the app; its database is ``database_url``, else userstore's default.

    Args:
        database_url: A SQLAlchemy URL (``sqlite:///app.db``,
            ``postgresql://...``, ``mariadb://...``); ``None`` for
            ``USERSTORE_DATABASE_URL``, else ``sqlite:///userstore.db``.

    Returns:
        The FastAPI app (``uvicorn --factory userapp.app:create_app`` serves it).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = userstore.create_async_engine(database_url)
        try:
            await schema.assert_current(engine)
            app.state.session_factory = userstore.create_async_session_factory(engine)
            yield
        finally:
            await engine.dispose()

    app = FastAPI(title="userapp", lifespan=lifespan, exception_handlers=EXCEPTION_HANDLERS)
    app.include_router(router)
    return app
