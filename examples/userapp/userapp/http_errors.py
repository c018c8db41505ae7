"""userstore's errors as HTTP responses: one handler per class, a JSON body each.

=========================  ======  ==========================================
error                      status  why
=========================  ======  ==========================================
InvalidUserError           422     the input breaks userstore's rules
UserNotFoundError          404     no user has that name
DuplicateUserError         409     the name is taken (nothing was written)
TransientDatabaseError     503     retried and still failing: try again later
                                   (``Retry-After``); DatabaseUnavailableError
                                   is one
any other UserStoreError   500     a bug or an outage; not the client's to fix
=========================  ======  ==========================================

Starlette picks the handler of the nearest class in the error's MRO, so each
class gets its own handler and a subclass is never answered as its parent.
The body is ``{"error": class name, "detail": message, "name": ...}``, with
``name`` for the errors that carry one.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, Final

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from userstore import (
    DuplicateUserError,
    InvalidUserError,
    TransientDatabaseError,
    UserNotFoundError,
    UserStoreError,
)

RETRY_AFTER_SECONDS: Final = 1


def _response(
    error: UserStoreError,
    status_code: int,
    *,
    name: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, object] = {"error": type(error).__name__, "detail": str(error)}
    if name is not None:
        body["name"] = name
    return JSONResponse(body, status_code=status_code, headers=headers)


async def invalid_user(_request: Request, error: InvalidUserError) -> JSONResponse:
    """422: the request's name, number or import rows break userstore's rules."""
    return _response(error, 422)


async def user_not_found(_request: Request, error: UserNotFoundError) -> JSONResponse:
    """404: no user has the name in the path."""
    return _response(error, 404, name=error.name)


async def duplicate_user(_request: Request, error: DuplicateUserError) -> JSONResponse:
    """409: the name is taken; the unit of work was rolled back."""
    return _response(error, 409, name=error.name)


async def transient_database_error(
    _request: Request, error: TransientDatabaseError
) -> JSONResponse:
    """503: the database kept failing transiently after the unit of work's retries."""
    return _response(error, 503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


async def userstore_error(_request: Request, error: UserStoreError) -> JSONResponse:
    """500: any other userstore error (a ``DatabaseError`` that retrying will not fix)."""
    return _response(error, 500)


Handler = Callable[[Request, Any], Coroutine[Any, Any, Response]]

EXCEPTION_HANDLERS: Final[dict[int | type[Exception], Handler]] = {
    InvalidUserError: invalid_user,
    UserNotFoundError: user_not_found,
    DuplicateUserError: duplicate_user,
    TransientDatabaseError: transient_database_error,
    UserStoreError: userstore_error,
}
"""For ``FastAPI(exception_handlers=...)``."""
