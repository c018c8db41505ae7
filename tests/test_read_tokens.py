"""Read tokens: what they look like, what they accept, and sessions that take them."""

from __future__ import annotations

import pytest

import userstore
from userstore import InvalidReadTokenError, User, UserRepository
from userstore.positions import Position, format_token, parse_token


@pytest.mark.parametrize(
    "token",
    [
        "postgresql:0/0",
        "postgresql:16/3000148",
        "postgresql:FFFFFFFF/FFFFFFFF",
        "mariadb:",
        "mariadb:7-1-42",
        "mariadb:0-1-5,7-2-9",
        "mariadb:?",
        "sqlite:",
        "memory:",
    ],
)
def test_a_token_reads_back_as_itself(token: str) -> None:
    assert format_token(parse_token(token)) == token


@pytest.mark.parametrize(
    "token",
    [
        "",
        ":",
        "postgresql",
        "postgresql:",
        "postgresql:1/",
        "postgresql:123456789/0",
        "postgresql:0/0 ",
        "mariadb:7-1",
        "mariadb:7-1-x",
        "mariadb:7-1-1,7-2-2",
        "mariadb:0-4294967296-1",
        "mariadb:7-1-18446744073709551616",
        "mariadb:\u0660-\u0661-\u0662",
        "postgresql:\uff11/0",
        "sqlite:0",
        "oracle:1",
        "x" * 3000,
        None,
        42,
        b"postgresql:0/0",
    ],
)
def test_a_malformed_token_is_an_invalid_read_token_error(token: object) -> None:
    with pytest.raises(InvalidReadTokenError) as raised:
        parse_token(token)
    assert isinstance(raised.value, ValueError)
    assert len(str(raised.value)) < 200


def test_a_later_position_covers_an_earlier_one_and_never_the_reverse() -> None:
    early, late = parse_token("postgresql:0/100"), parse_token("postgresql:1/0")
    assert late.covers(early)
    assert not early.covers(late)
    a, b = parse_token("mariadb:7-1-5,8-1-2"), parse_token("mariadb:7-1-4,8-1-3")
    assert not a.covers(b)
    assert not b.covers(a)
    assert a.later(b).covers(a)
    assert a.later(b).covers(b)
    assert Position("sqlite").later(Position("sqlite")) == Position("sqlite")
    unknown = Position("mariadb", known=False)
    assert not a.covers(unknown)
    assert a.later(unknown) == unknown


def test_every_factory_takes_a_read_token_and_checks_it(tmp_path) -> None:
    engine = userstore.create_engine(f"sqlite:///{tmp_path / 'u.db'}")
    userstore.migrations.upgrade(engine)
    factory = userstore.create_session_factory(engine)
    with factory() as session:
        repo = UserRepository(session)
        repo.add(User(name="Jenny", number=8675309))
        repo.commit()
        token = repo.read_token()
    assert token == "sqlite:"
    with factory(read_after=token) as session:
        assert UserRepository(session).get("Jenny") is not None
    with pytest.raises(InvalidReadTokenError):
        factory(read_after="postgresql:nope")
    for foreign in ("memory:", "mariadb:?", "postgresql:0/10"):
        with pytest.raises(InvalidReadTokenError, match="cannot order reads on sqlite"):
            factory(read_after=foreign)
    engine.dispose()


def test_sqlite_has_no_replicas(tmp_path) -> None:
    engine = userstore.create_engine(f"sqlite:///{tmp_path / 'u.db'}")
    other = userstore.create_engine(f"sqlite:///{tmp_path / 'v.db'}")
    with pytest.raises(userstore.ConfigurationError, match="SQLite has no replicas"):
        userstore.create_session_factory(engine, replicas=[other])
    engine.dispose()
    other.dispose()


def test_a_token_of_another_database_is_refused_where_it_cannot_order_reads(tmp_path) -> None:
    from tests.databases import BACKENDS

    if "postgresql" not in BACKENDS:
        pytest.skip("postgresql is not under test")
    engine = userstore.create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/test")
    factory = userstore.create_session_factory(engine)
    for foreign in ("mariadb:7-1-42", "sqlite:", "memory:"):
        with pytest.raises(InvalidReadTokenError, match=f"{foreign.partition(':')[0]} read token"):
            factory(read_after=foreign)
    factory(read_after="postgresql:0/10").close()
    engine.dispose()
