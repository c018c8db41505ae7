"""What the command line's tests share: its one error line, and a URL in the environment."""

from __future__ import annotations

from pathlib import Path

import pytest


def one_error_line(err: str) -> str:
    """The one ``userstore: ...`` line a failing command prints (asserting there is no other)."""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("userstore: "), err
    assert "Traceback" not in err
    return lines[0]


def url_in_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Set USERSTORE_DATABASE_URL to a SQLite file in tmp_path; return the file, not created."""
    elsewhere = tmp_path / "elsewhere.db"
    monkeypatch.setenv("USERSTORE_DATABASE_URL", f"sqlite:///{elsewhere}")
    return elsewhere
