"""userstore for an app's tests: pytest fixtures on a real database, and an in-memory fake.

``pytest_plugins = ["userstore.testing"]`` (or ``-p userstore.testing``) in an
app's tests enables the fixtures of :mod:`userstore.testing.plugin`.
:class:`InMemoryUserStore` is the fake's database; its
:class:`InMemoryUserRepository` and :class:`AsyncInMemoryUserRepository` have
the real repositories' verbs, rules and errors, and pass the same contract
suite, for tests that need no database at all.

An app's conftest may import the fake before it names this package as a plugin;
this module has no asserts for pytest to rewrite, so it says so:
PYTEST_DONT_REWRITE
"""

from userstore.testing.fake import InMemoryUserRepository, InMemoryUserStore
from userstore.testing.fake_async import AsyncInMemoryUserRepository

pytest_plugins = ["userstore.testing.plugin"]

__all__ = ["AsyncInMemoryUserRepository", "InMemoryUserRepository", "InMemoryUserStore"]
