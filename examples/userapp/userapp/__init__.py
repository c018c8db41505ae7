"""userapp: a small async HTTP service that keeps its users through userstore.

Build the ASGI app with :func:`create_app` (``uvicorn --factory userapp.app:create_app``).
"""

from userapp.app import create_app

__all__ = ["create_app"]
