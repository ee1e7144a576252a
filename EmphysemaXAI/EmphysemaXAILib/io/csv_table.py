"""Write a table (a list of dicts) as CSV with the standard library: ``write_csv(path, rows, columns)``.

The CSV files of an analysis (``qct.csv``, ``patterns.csv``, ``cohort.csv``) are written without
pandas, which 3D Slicer does not ship. The text is what ``pandas.DataFrame(rows,
columns=columns).to_csv(path, index=False)`` writes (Testing/io/test_csv_table.py compares them):
a column of numbers that holds a float or a missing value is written as floats (``12.0``), a
missing value (None or NaN) as an empty field, lines end with ``\\n``, fields are quoted only
when they need it.
"""
from __future__ import annotations

import csv
import math
import numbers
from pathlib import Path


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _column_cells(values: list) -> list:
    present = [v for v in values if not _missing(v)]
    if present and all(_is_number(v) for v in present):
        floats = len(present) < len(values) or not all(isinstance(v, numbers.Integral) for v in present)
        if floats:
            return ["" if _missing(v) else repr(float(v)) for v in values]
        return [str(int(v)) for v in values]
    return ["" if _missing(v) else str(float(v) if isinstance(v, float) else v) for v in values]


def csv_rows(rows: list, columns: list) -> list:
    """The cells (strings) of ``rows`` under ``columns``, header first; a key a row lacks is empty."""
    cells = [_column_cells([row.get(column) for row in rows]) for column in columns]
    return [list(columns), *(list(line) for line in zip(*cells))] if rows else [list(columns)]


def write_csv(path, rows: list, columns: list) -> None:
    """Write ``rows`` (dicts) under ``columns`` as CSV to ``path``."""
    with Path(path).open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, lineterminator="\n").writerows(csv_rows(rows, columns))
