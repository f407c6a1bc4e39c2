"""A request's batch checked against an exported model's schema before it is cast.

Casting first would score wrong inputs without a word: int64 id 2**32 + 3 wraps to 3 in
int32, 3.7 truncates to 3, a NaN dense value gives NaN scores, and the graph clips an
out-of-range id to its table's edge. So every value is checked in the dtype it came in:
ids and scenes are whole numbers (integer dtypes, or floats with whole values) inside their
vocabulary, dense values are finite as float32. Each check is one vectorised numpy
expression; only a failing batch is searched for its first bad row. Every error is a
UserError naming the column, the row and, for ids and dense values, the field.
"""

from __future__ import annotations

import numbers

import numpy as np

from mtms_jax import errors

_NUMBER_KINDS = "iuf"


class BatchCheck:
  """check(batch): the batch's 'ids' (B, F), 'dense' (B, Nd), 'scene' (B,) in the graph's
  dtypes; a single candidate (ids (F,), dense (Nd,), a scalar scene) becomes a batch of one.
  The schema's limits and names are read once, here, not on every call."""

  def __init__(self, schema: dict):
    self.shapes = {k: tuple(spec["shape"][1:]) for k, spec in schema["batch"].items()}
    self.id_limits = np.array([f["vocab_size"] for f in schema["sparse"]])
    self.sparse = [f["name"] for f in schema["sparse"]]
    self.dense = [f["name"] for f in schema["dense"]]
    self.scene_limit = np.array([len(schema["scenes"])])

  def __call__(self, batch: dict) -> dict[str, np.ndarray]:
    missing = [k for k in self.shapes if k not in batch]
    if missing:
      raise errors.UserError(f"batch lacks columns {missing}; expected {list(self.shapes)}")
    columns = {k: numbers_of(k, batch[k]) for k in self.shapes}
    if columns["scene"].ndim == 0:
      columns = {k: v[np.newaxis] for k, v in columns.items()}
    n = len(columns["scene"])
    for k, shape in self.shapes.items():
      if n == 0 and columns[k].size == 0:
        columns[k] = columns[k].reshape((0, *shape))
      if columns[k].shape != (n, *shape):
        raise errors.UserError(f"batch column {k!r} has shape {columns[k].shape}, expected "
                               f"{(n, *shape)} ({n} rows, as 'scene')")
    return {"ids": whole_numbers("ids", columns["ids"], self.id_limits, self.sparse),
            "dense": finite_floats(columns["dense"], self.dense),
            "scene": whole_numbers("scene", columns["scene"], self.scene_limit, [None])}


def numbers_of(column: str, value) -> np.ndarray:
  """`value` as a numpy array of numbers; UserError naming the first value that is not one."""
  try:
    array = np.asarray(value)
  except ValueError as e:                       # ragged rows
    raise errors.UserError(f"batch column {column!r}: {e}") from e
  if array.dtype.kind in _NUMBER_KINDS:
    return array
  flat = array.reshape(-1)
  bad = [i for i, x in enumerate(flat) if not _is_number(x)]
  if not bad and array.dtype.kind == "O":       # Python numbers in an object array
    return array.astype(np.float64)
  i = bad[0] if bad else 0                      # else strings that all spell numbers
  row = np.unravel_index(i, array.shape)[0] if array.ndim else 0
  value = flat[i].item() if isinstance(flat[i], np.generic) else flat[i]
  raise errors.UserError(f"batch column {column!r}, row {row}: {value!r} is not a number "
                         f"(the column holds {array.dtype}; expected numbers)")


def _is_number(x) -> bool:
  """Whether one element of a non-numeric array is a number, or a string spelling one."""
  if isinstance(x, (str, bytes)):
    try:
      float(x)
      return True
    except ValueError:
      return False
  return isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_))


def whole_numbers(column: str, array: np.ndarray, limits: np.ndarray,
                  fields: list) -> np.ndarray:
  """`array` (B, F) or (B,) as int32, checked in its own dtype: whole numbers in
  [0, limits[f])."""
  ok = (array >= 0) & (array < limits)          # False for NaN
  if array.dtype.kind == "f":
    ok &= array == np.floor(array)
  if not ok.all():
    index = tuple(np.argwhere(~ok)[0])
    row, f = index[0], index[-1] if array.ndim == 2 else 0
    field = f", field {fields[f]!r}" if fields[f] else ""
    raise errors.UserError(f"batch column {column!r}, row {row}{field}: {array[index]} is "
                           f"not an integer in [0, {limits[f]})")
  return array.astype(np.int32, copy=False)


def finite_floats(array: np.ndarray, fields: list[str]) -> np.ndarray:
  """`array` (B, Nd) as float32; UserError at the first value not finite as a float32."""
  if array.dtype == np.float32:
    floats = array
  else:
    with np.errstate(over="ignore"):            # float64 beyond float32's range: inf
      floats = array.astype(np.float32)
  if not np.isfinite(floats).all():
    row, f = np.argwhere(~np.isfinite(floats))[0]
    raise errors.UserError(f"batch column 'dense', row {row}, field {fields[f]!r}: "
                           f"{array[row, f]} is not a finite float32")
  return floats
