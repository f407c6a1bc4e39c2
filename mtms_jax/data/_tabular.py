"""Shared reading helpers for the public-data loaders.

Every loader reads its files through here so that a bad file fails in the same way: the
message names the file, the place (`line N` counts file lines from 1, header included, as an
editor shows them; `data row i` counts data rows from 0, header excluded) and the column,
and says what was expected.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

import numpy as np

from mtms_jax.data import checks
from mtms_jax.errors import UserError
from mtms_jax.schema import SparseField

PathLike = str | os.PathLike

# Split words in file names, in day order: train -> day 0, then val, then test.
_SPLITS = ("train", "val", "test")
_SPLIT_WORDS = {"train": "train", "val": "val", "valid": "val", "validation": "val",
                "test": "test"}
_SPLIT_RE = re.compile(r"(?<![a-z])(train|validation|valid|val|test)(?![a-z])", re.IGNORECASE)


def open_text(path: Path, encoding: str = "utf-8") -> IO[str]:
  """Opens a text file for reading, gunzipping it when the name ends in .gz."""
  if path.suffix == ".gz":
    return gzip.open(path, "rt", encoding=encoding, newline="")
  return open(path, encoding=encoding, newline="")


class MissingData(UserError, FileNotFoundError):
  """A data set's files are not where its `path` says: one line that says where to get
  them (a UserError; a FileNotFoundError too, for callers that catch that)."""


@dataclasses.dataclass(frozen=True)
class Source:
  """Where a public data set comes from: its name and where to get it, for the message of
  its missing files."""
  dataset: str
  where: str

  def require(self, path: PathLike) -> Path:
    """Returns `path` as a Path; raises MissingData saying where to get the data."""
    path = Path(path)
    if not path.exists():
      shown = path if path.is_absolute() else f"{path} ({path.resolve()})"
      raise MissingData(f"{shown}: no such file or folder. The {self.dataset} data are not "
                        f"part of this repository; get the public release from {self.where}, "
                        "and give its path as config.data.kwargs.path")
    return path

  def check_kwargs(self, path: PathLike, **_) -> None:
    """The check of a loader's arguments that the config pass makes before any data is
    loaded (config_checks.check_data): its files exist."""
    self.require(path)


def split_files(path: Path, pattern: str, day: int) -> list[tuple[Path, int]]:
  """The files to read under `path`, each with the day its rows get.

  A file gets `day`. A folder gets every file below it matching `pattern`; a file's day is
  the rank of its split (from its name: train < val < test) among the splits present, so
  {train, val, test} become days 0, 1, 2 and {train, test} become 0, 1.
  """
  if path.is_file():
    return [(path, day)]
  files = sorted(p for p in path.rglob(pattern) if p.is_file())
  if not files:
    raise MissingData(f"{path}: no files matching {pattern!r} in this folder")
  splits = [_split_of(f) for f in files]
  present = [s for s in _SPLITS if s in splits]
  return [(f, present.index(s)) for f, s in zip(files, splits)]


def _split_of(path: Path) -> str:
  found = {_SPLIT_WORDS[m.lower()] for m in _SPLIT_RE.findall(path.name)}
  if len(found) != 1:
    raise UserError(f"{path}: cannot tell its split from the name (expected exactly one of "
                     "train/val/test in it); load the file on its own with day=...")
  return found.pop()


@dataclasses.dataclass
class Table:
  """A delimited text file as strings: `rows[i]` came from line `lines[i]` of `source`."""
  source: str
  names: tuple[str, ...]
  rows: list[list[str]]
  lines: list[int]

  def index(self, name: str) -> int:
    if name not in self.names:
      raise UserError(f"{self.source}: missing column {name!r}; the columns are "
                       f"{list(self.names)}")
    return self.names.index(name)

  def where(self, column: str, i: int) -> str:
    """Where row i's value of `column` is: the file and its line (`checks.Where`)."""
    return f"{self.source}, line {self.lines[i]}, column {column!r}"

  def values(self, name: str) -> list[str]:
    """The column as a list of str."""
    j = self.index(name)
    return [row[j] for row in self.rows]

  def strings(self, name: str) -> np.ndarray:
    """The column as a numpy array of str."""
    return np.array(self.values(name), dtype=str)

  def numbers(self, name: str) -> np.ndarray:
    """The column as float64; a value that is not a number is an error naming its line."""
    values = self.values(name)
    try:
      return np.array(values, dtype=np.float64)
    except ValueError:
      for value, line in zip(values, self.lines):
        try:
          float(value)
        except ValueError:
          raise UserError(f"{self.source}, line {line}, column {name!r}: expected a "
                           f"number, got {value!r}") from None
      raise


def read_table(path: Path, names: Sequence[str] | None = None, delimiter: str = ",",
               encoding: str = "utf-8", quoting: int = csv.QUOTE_MINIMAL,
               skipinitialspace: bool = False) -> Table:
  """Reads a delimited file as strings.

  Args:
    path: the file (.gz is gunzipped).
    names: the column names when the file has no header line; None reads them from line 1.
    delimiter, quoting, skipinitialspace: as for `csv.reader`.
    encoding: the file's text encoding.

  Raises:
    UserError: a line has more or fewer fields than there are columns, or no data rows.
  """
  rows, lines = [], []
  with open_text(path, encoding) as f:
    reader = csv.reader(f, delimiter=delimiter, quoting=quoting,
                        skipinitialspace=skipinitialspace)
    if names is None:
      names = next(reader, [])
    names = tuple(names)
    for row in reader:
      if not row:
        continue
      if len(row) != len(names):
        raise UserError(f"{path}, line {reader.line_num}: {len(row)} fields, expected "
                         f"{len(names)} ({list(names)})")
      rows.append(row)
      lines.append(reader.line_num)
  if not rows:
    raise UserError(f"{path}: no data rows")
  return Table(str(path), names, rows, lines)


def read_numeric(path: Path, layouts: Mapping[int, Sequence[str]] | None = None
                 ) -> tuple[tuple[str, ...], np.ndarray]:
  """Reads an all-numeric CSV into one float64 array, fast enough for the full releases.

  Args:
    path: the file (.gz is gunzipped).
    layouts: column names by number of columns, for files that have no header line (a file
      has one unless every field of line 1 is a number).

  Returns:
    (column names, values of shape (rows, columns)).
  """
  with open_text(path) as f:
    first = next(csv.reader(f), [])
  has_header = not all(_is_number(v) for v in first)
  if has_header:
    names = tuple(first)
  elif layouts and len(first) in layouts:
    names = tuple(layouts[len(first)])
  else:
    raise UserError(f"{path}, line 1: no header line and {len(first)} columns; expected a "
                     f"header, or a headerless layout of {sorted(layouts or ())} columns")
  try:
    with open_text(path) as f, warnings.catch_warnings():
      warnings.simplefilter("ignore")  # an empty file is reported below, not as a warning
      values = np.loadtxt(f, delimiter=",", skiprows=int(has_header), dtype=np.float64,
                          ndmin=2)
  except ValueError as e:
    # The slow reader finds the line and names the file and column; numpy's message
    # names neither the file nor the column.
    table = read_table(path, names=None if has_header else names)
    for name in names:
      table.numbers(name)
    raise UserError(f"{path}: {e}") from e
  if not len(values):
    raise UserError(f"{path}: no data rows")
  if values.shape[1] != len(names):
    raise UserError(f"{path}: {len(names)} column names but {values.shape[1]} fields in "
                     f"each data row ({list(names)})")
  return names, values


def _is_number(text: str) -> bool:
  try:
    float(text)
  except ValueError:
    return False
  return True


def check_same_columns(files: Sequence[Path], names: Sequence[tuple[str, ...]]) -> None:
  """Raises UserError naming the first file whose columns differ from the first file's."""
  for path, other in zip(files, names):
    if other != names[0]:
      raise UserError(f"{path}: columns {list(other)} differ from those of {files[0]} "
                       f"({list(names[0])}); load files of one format together")


def column(names: Sequence[str], values: np.ndarray, name: str, source: str) -> np.ndarray:
  """Column `name` of a `read_numeric` array; a missing column is an error naming the file."""
  if name not in names:
    raise UserError(f"{source}: missing column {name!r}; the columns are {list(names)}")
  return values[:, list(names).index(name)]


def conversion_without_click(click: np.ndarray, conversion: np.ndarray, source: str,
                             policy: str, column: str) -> np.ndarray:
  """Mask of the rows to keep, applying `policy` to conversions logged without a click.

  Args:
    policy: 'drop' drops those rows with a warning that counts them (torch-rechub's rule
      for Ali-CCP); 'raise' raises UserError naming the first one.
    column: the file's conversion column (e.g. 'purchase'), named by the error.
  """
  if policy not in ("drop", "raise"):
    raise UserError(f"conversion_without_click must be 'drop' or 'raise', got {policy!r}")
  bad = (conversion > 0) & (click == 0)
  if bad.any() and policy == "raise":
    raise UserError(f"{checks.Rows(source)(column, int(np.flatnonzero(bad)[0]))}: conversion "
                    "without a click (pass conversion_without_click='drop' to drop such rows)")
  if bad.any():
    warnings.warn(f"{source}: dropped {int(bad.sum())} of {len(bad)} rows with a conversion "
                  "but no click", stacklevel=2)
  return ~bad


def encode(values: Sequence[str], missing: str | None = None) -> tuple[np.ndarray, int]:
  """Remaps values to contiguous ids: 1 + rank among the distinct values, 0 for `missing`.

  Sorting (not order of appearance) makes the ids depend only on the set of values loaded.
  A dict does the mapping: on 100k-row string columns it is several times faster than
  numpy's unique.

  Returns:
    (ids, vocab size = number of distinct values other than `missing`, + 1).
  """
  distinct = sorted(set(values) - {missing})
  index = {v: i + 1 for i, v in enumerate(distinct)}
  index[missing] = 0
  return np.fromiter((index[v] for v in values), np.int64, len(values)), len(distinct) + 1


def upstream_ids(columns: Mapping[str, np.ndarray],
                 vocab_sizes: int | Mapping[str, int] | None
                 ) -> tuple[np.ndarray, tuple[SparseField, ...]]:
  """Sparse fields whose ids were encoded upstream, kept below their vocab size.

  Args:
    columns: the ids of each field, by field name, in schema order.
    vocab_sizes: None keeps the ids and sizes each vocab as max id + 1; an int, or a size
      per field name, hashes them as id % size, so that files loaded apart share ids.

  Returns:
    (ids of shape (N, F), the fields).
  """
  ids, fields = [], []
  for name, values in columns.items():
    values = values.astype(np.int64)
    if vocab_sizes is None:
      size = int(values.max(initial=0)) + 1
    elif isinstance(vocab_sizes, Mapping):
      if name not in vocab_sizes:
        raise UserError(f"vocab_sizes has no entry for field {name!r}")
      size = int(vocab_sizes[name])
    else:
      size = int(vocab_sizes)
    ids.append(values % size)
    fields.append(SparseField(name, size))
  return np.stack(ids, axis=1), tuple(fields)


def positions(values: np.ndarray, choices: np.ndarray) -> np.ndarray:
  """The index in `choices` of each value; every value must be one of the choices."""
  order = np.argsort(choices, kind="stable")
  return order[np.searchsorted(choices[order], values)]


def standardize(dense: np.ndarray, fit: np.ndarray) -> np.ndarray:
  """Dense columns as z-scores, mean and std taken over the rows in `fit`.

  A constant column (std 0) is only centered, so it becomes all zeros instead of NaN.
  """
  mean = dense[fit].mean(axis=0)
  std = dense[fit].std(axis=0)
  return (dense - mean) / np.where(std > 0, std, 1.0)
