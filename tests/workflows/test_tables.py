"""Spreadsheet rows for batches: CSV, Excel, JSON Lines; one rule for the CLI and the UI."""

from __future__ import annotations

from pathlib import Path

import openpyxl  # type: ignore[import-untyped]
import pytest

from klingflow.cli._run_inputs import read_table
from klingflow.errors import InvalidRequestError


def test_an_excel_sheet_and_its_csv_export_give_the_same_rows(tmp_path: Path) -> None:
    """`--rows sheet.xlsx` reads what `--rows sheet.csv` reads: text cells by header."""
    book = openpyxl.Workbook()
    for row in (["prompt", "slug", "duration"], ["a fox", "fox", 5], ["a hen", "hen", 10.0]):
        book.active.append(row)
    book.save(tmp_path / "rows.xlsx")
    (tmp_path / "rows.csv").write_text("prompt,slug,duration\na fox,fox,5\na hen,hen,10\n")
    expected = [
        {"prompt": "a fox", "slug": "fox", "duration": "5"},
        {"prompt": "a hen", "slug": "hen", "duration": "10"},
    ]
    assert read_table(tmp_path / "rows.xlsx") == expected
    assert read_table(tmp_path / "rows.csv") == expected


def test_a_shifted_row_is_refused_with_its_line(tmp_path: Path) -> None:
    """A row with more cells than the header is an error, not a silently lost cell."""
    (tmp_path / "rows.csv").write_text("prompt,slug\na fox,fox,extra\n")
    with pytest.raises(InvalidRequestError, match="line 2 has more cells than the header"):
        read_table(tmp_path / "rows.csv")
