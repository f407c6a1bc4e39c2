"""Data sets as numpy columns plus their schema; see `mtms_jax.schema` for the columns."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from mtms_jax.errors import UserError
from mtms_jax.schema import FeatureSchema


@dataclasses.dataclass
class Dataset:
  """Columns of a data set, its schema, and (synthetic data only) the true probabilities.

  `truth`, when present, holds 'ctr' and 'cvr' arrays (N,) of the generating process's
  p(click) and p(conversion | click), so reports can show the oracle's metrics.
  """
  columns: dict[str, np.ndarray]
  schema: FeatureSchema
  truth: dict[str, np.ndarray] | None = None
  name: str = "data"
  validate: dataclasses.InitVar[bool] = True    # False: rows of a data set already checked

  def __post_init__(self, validate: bool):
    if validate:
      self.schema.validate(self.columns, source=self.name)

  def __len__(self) -> int:
    return len(self.columns["scene"])

  def select(self, mask: np.ndarray, name: str | None = None) -> Dataset:
    """Rows where `mask` is true, as a new Dataset (a view when they are consecutive)."""
    mask = np.asarray(mask, bool)
    first, stop = int(np.argmax(mask)), len(mask) - int(np.argmax(mask[::-1]))
    if mask.any() and mask[first:stop].all():       # no index array: 8 bytes a row
      return self._rows(slice(first, stop), name)
    return self.take(np.flatnonzero(mask), name)

  def take(self, rows: np.ndarray, name: str | None = None) -> Dataset:
    """The rows at indices `rows`, in that order (not checked again: they were).

    Consecutive rows are a slice, so the columns are views: of a memory-mapped cache
    (mtms_jax/data/prepare.py) too, which then stays on disk instead of being copied to RAM.
    """
    rows = np.asarray(rows)
    if rows.size and rows[-1] - rows[0] + 1 == rows.size and np.all(np.diff(rows) == 1):
      rows = slice(int(rows[0]), int(rows[-1]) + 1)
    return self._rows(rows, name)

  def _rows(self, rows: np.ndarray | slice, name: str | None) -> Dataset:
    return Dataset(columns={k: v[rows] for k, v in self.columns.items()},
                   schema=self.schema,
                   truth=None if self.truth is None else {k: v[rows] for k, v in
                                                           self.truth.items()},
                   name=name or self.name, validate=False)

  def days(self, days) -> Dataset:
    days = np.atleast_1d(np.asarray(days))
    # Not np.unique of the day column: it sorts a copy, a large one for a big cache.
    missing = sorted(d for d in set(days.tolist()) if not (self.columns["day"] == d).any())
    if missing:
      raise UserError(f"{self.name}: no rows for day(s) {missing}; days present: "
                       f"{np.unique(self.columns['day']).tolist()}")
    return self.select(np.isin(self.columns["day"], days),
                       name=f"{self.name}[days {days.tolist()}]")


def as_columns(columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Casts columns to the dtypes the pipeline and the models expect."""
  dtypes = {"ids": np.int32, "dense": np.float32, "scene": np.int32, "click": np.float32,
            "conversion": np.float32, "day": np.int32}
  return {k: np.ascontiguousarray(columns[k], dtype=dtypes.get(k)) for k in columns}
