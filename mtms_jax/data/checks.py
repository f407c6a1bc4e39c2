"""A column's values checked, the same way by every reader of data: the schema-file path
(`data/logs/read.py`) and the built-in loaders (`_tabular.py`, `movielens.py`, ...).

Values arrive as float64 numpy arrays, a missing value as NaN (which fails every check). The
first bad value is a one-line UserError `<where>: expected <what>, got <value>`, where
`where(column, i)` names the file, the row of value i and the column: `Rows` counts data
rows from 0 without the header, `_tabular.Table.where` counts file lines from 1.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mtms_jax.errors import UserError

Where = Callable[[str, int], str]
_INT32_MAX = np.iinfo(np.int32).max


@dataclasses.dataclass(frozen=True)
class Rows:
  """Where value i of a chunk that starts at data row `first_row` of `path` is."""
  path: Path | str
  first_row: int = 0

  def __call__(self, column: str, i: int) -> str:
    return f"{self.path}, data row {self.first_row + i}, column {column!r}"


def expect(ok: np.ndarray, values: np.ndarray, column: str, where: Where, expected: str,
           hint: str = "") -> None:
  """UserError naming the first value whose `ok` is False."""
  if not ok.all():
    i = int(np.flatnonzero(~ok)[0])
    raise UserError(f"{where(column, i)}: expected {expected}, got {values[i]}{hint}")


def label(values: np.ndarray, column: str, where: Where) -> None:
  expect((values == 0) | (values == 1), values, column, where, "a label 0 or 1")


def ids(values: np.ndarray, column: str, where: Where, vocab: int | None = None,
        hint: str = "") -> None:
  """Whole numbers >= 0, and below `vocab` when it is given."""
  ok = (values >= 0) & (values == np.floor(values))
  if vocab is None:
    expect(ok & (values <= _INT32_MAX), values, column, where, "an id (an integer >= 0)", hint)
  else:
    expect(ok & (values < vocab), values, column, where, f"an id in [0, {vocab})", hint)


def day(values: np.ndarray, column: str, where: Where) -> None:
  ok = (values >= 0) & (values <= _INT32_MAX) & (values == np.floor(values))
  expect(ok, values, column, where, "a day (an integer >= 0)")


def timestamp(values: np.ndarray, column: str, where: Where) -> None:
  ok = (values >= 0) & (values == np.floor(values)) & np.isfinite(values)
  expect(ok, values, column, where, "a timestamp (whole seconds since 1970, >= 0)")


def finite(values: np.ndarray, column: str, where: Where) -> None:
  expect(np.isfinite(values), values, column, where, "a finite number",
         " (a missing value reads as nan)")


def in_range(values: np.ndarray, column: str, where: Where, low: float, high: float,
             what: str = "a number") -> None:
  """`low` <= value <= `high` (either may be infinite); NaN fails."""
  expect((values >= low) & (values <= high), values, column, where,
         f"{what} in [{low:g}, {high:g}]")
