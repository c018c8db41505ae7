"""How much work each workload does: ``full`` for real numbers, ``tiny`` for a smoke test."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class Scale:
    """The sizes of one benchmark run."""

    name: str
    insert_rows: int  # W1: users bulk-inserted into an empty table
    get_table_rows: int  # W2: users stored before the gets
    gets: int  # W2: gets of random stored names per run
    units: int  # W3: add-one-user-and-commit units per run
    read_rows: int  # W4: users stored and read back
    upsert_rows: int  # W5: rows upserted, half of them already stored
    rounds: int  # default number of rounds (the median is reported)


SCALES: Final = {
    "tiny": Scale(
        name="tiny",
        insert_rows=300,
        get_table_rows=300,
        gets=200,
        units=50,
        read_rows=3_000,
        upsert_rows=300,
        rounds=1,
    ),
    "full": Scale(
        name="full",
        insert_rows=100_000,
        get_table_rows=100_000,
        gets=10_000,
        units=2_000,
        read_rows=1_000_000,
        upsert_rows=100_000,
        rounds=5,
    ),
}
