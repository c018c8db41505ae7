"""Bulk import: rows from a posted CSV file or JSON list, upserted in one unit of work.

Parsing checks the shape of the input (a ``name,number`` header, two fields a
line, numbers that are integers); userstore's ``upsert_many`` checks every
name and number against its rules. Either way, bad input is an
:class:`~userstore.InvalidUserError` naming where it is, and nothing of the
import is written.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from typing import Any, Final

from userstore import AsyncUserRepositoryProtocol, InvalidUserError, UpsertResult

CSV_HEADER: Final = ["name", "number"]
CSV_TYPE: Final = "text/csv"
JSON_TYPE: Final = "application/json"
MEDIA_TYPES: Final = (CSV_TYPE, JSON_TYPE)

Rows = list[tuple[str, int | None]] | list[Mapping[str, Any]]


def _text(body: bytes) -> str:
    try:
        return body.decode("utf-8-sig")  # a spreadsheet's byte-order mark is not part of a name
    except UnicodeDecodeError as exc:
        raise InvalidUserError(f"the body must be UTF-8: {exc}") from None


def rows_from_csv(body: bytes) -> list[tuple[str, int | None]]:
    """Read ``(name, number)`` rows from CSV with a ``name,number`` header.

    An empty number field means ``None``. Names are taken exactly as written
    (spaces included): userstore compares names exactly.

    Raises:
        InvalidUserError: not UTF-8, a missing or different header, a line
            without exactly two fields, or a number that is not an integer;
            the message names the line.
    """
    reader = csv.reader(io.StringIO(_text(body), newline=""))
    header = next(reader, None)
    if header != CSV_HEADER:
        raise InvalidUserError(f"line 1: the header must be name,number, got {header!r}")
    rows: list[tuple[str, int | None]] = []
    for fields in reader:
        if len(fields) != len(CSV_HEADER):
            raise InvalidUserError(
                f"line {reader.line_num}: expected 2 fields (name,number), got {len(fields)}"
            )
        name, number = fields
        rows.append((name, _number(number, reader.line_num)))
    return rows


def _number(text: str, line: int) -> int | None:
    if text == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise InvalidUserError(
            f"line {line}: number must be an integer or empty, got {text!r}"
        ) from None


def rows_from_json(body: bytes) -> list[Mapping[str, Any]]:
    """Read rows from a JSON list of ``{"name": ..., "number": ...}`` objects.

    ``number`` may be left out (``None``). The values' types are checked by
    userstore (``upsert_many`` names the position of a bad row).

    Raises:
        InvalidUserError: not UTF-8 or not JSON, not a list, an item that is
            not an object, or an object with a key other than name and number.
    """
    try:
        payload = json.loads(_text(body))
    except json.JSONDecodeError as exc:
        raise InvalidUserError(f"the body is not valid JSON: {exc}") from None
    except RecursionError:  # [[[[...]]]]: the parser's stack, not a server fault
        raise InvalidUserError("the body is not valid JSON: nested too deeply") from None
    if not isinstance(payload, list):
        raise InvalidUserError(f"the body must be a JSON list, got {type(payload).__name__}")
    rows: list[Mapping[str, Any]] = []
    for position, item in enumerate(payload):
        if not isinstance(item, dict):
            raise InvalidUserError(f"item {position}: expected an object, got {item!r}")
        unknown = set(item) - set(CSV_HEADER)
        if unknown or "name" not in item:
            raise InvalidUserError(
                f"item {position}: expected keys name and number, got {sorted(item)}"
            )
        rows.append({"name": item["name"], "number": item.get("number")})
    return rows


def parse(body: bytes, media_type: str) -> Rows:
    """Rows from a body of the given media type (:data:`CSV_TYPE` or :data:`JSON_TYPE`).

    Raises:
        InvalidUserError: the body is not a valid document of its type.
        ValueError: ``media_type`` is neither (the HTTP layer answers 415 first).
    """
    if media_type == CSV_TYPE:
        return rows_from_csv(body)
    if media_type == JSON_TYPE:
        return rows_from_json(body)
    raise ValueError(f"cannot import {media_type!r}; send one of {', '.join(MEDIA_TYPES)}")


async def import_users(repo: AsyncUserRepositoryProtocol, rows: Rows) -> UpsertResult:
    """Insert the new names and update the numbers of the known ones.

    Raises:
        InvalidUserError: a row breaks userstore's rules (nothing is written).
    """
    return await repo.upsert_many(rows)
