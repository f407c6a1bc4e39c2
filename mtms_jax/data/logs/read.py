"""Reading the files of a schema file chunk by chunk, and checking every value on the way.

A mistake is a one-line `UserError` naming the file, the column, the data row counted from
0 without the header, and what was expected. Ids are kept or hashed (stable across runs,
machines and processes). `mtms_jax.data.logs.prepare` writes what this reads into the cache.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from mtms_jax.data import checks
from mtms_jax.data.logs import schema_file
from mtms_jax.data.logs.schema_file import LogSchema
from mtms_jax.errors import UserError

CHUNK_ROWS = 1 << 16
CSV_BLOCK_BYTES = 1 << 22     # a CSV chunk: pyarrow's block of the file's bytes


Where = checks.Rows      # where a chunk's value is: file, data row, column


# ----------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------
def batches(schema: LogSchema, path: Path) -> Iterator[pa.RecordBatch]:
  if schema.format == "parquet":
    return _read_parquet(schema, path)
  return _read_csv(schema, path)


def parquet_file(path: Path) -> pq.ParquetFile:
  try:
    return pq.ParquetFile(path)
  except (pa.ArrowInvalid, OSError) as e:
    raise UserError(f"{path}: not a readable Parquet file, truncated? ({e})") from None


def _read_parquet(schema: LogSchema, path: Path) -> Iterator[pa.RecordBatch]:
  f = parquet_file(path)
  _check_columns(schema, path, f.schema_arrow.names)
  for name in schema.columns():
    _check_type(path, name, f.schema_arrow.field(name).type, _expected(schema, name))
  try:
    yield from f.iter_batches(batch_size=CHUNK_ROWS, columns=schema.columns())
  except (pa.ArrowInvalid, OSError) as e:
    raise UserError(f"{path}: cannot read it, truncated? ({e})") from None


def _expected(schema: LogSchema, name: str) -> str:
  """'int', 'number' or 'any': the Parquet types column `name` may have."""
  hashed = {f.name for f in schema.sparse if f.hash_buckets}
  if name in hashed or name == schema.scene_column:
    return "any"
  if name in {f.name for f in schema.sparse} or name == schema.day:
    return "int"
  return "number"


def _check_type(path: Path, name: str, type_: pa.DataType, expected: str):
  ok = {"any": True, "int": pa.types.is_integer(type_),
        "number": pa.types.is_integer(type_) or pa.types.is_floating(type_)
        or pa.types.is_boolean(type_)}[expected]
  if not ok:
    what = "integers" if expected == "int" else "numbers"
    raise UserError(f"{path}, column {name!r}: type {type_}, expected {what}")


def _check_columns(schema: LogSchema, path: Path, names: list[str]):
  missing = [c for c in schema.columns() if c not in names]
  if missing:
    raise UserError(f"{path}: missing column {missing[0]!r}; the file's columns are {names}")


def _read_csv(schema: LogSchema, path: Path) -> Iterator[pa.RecordBatch]:
  bad_lines = []
  def invalid_row(row) -> str:
    bad_lines.append(row)
    return "error"
  parse = pa_csv.ParseOptions(delimiter=schema.delimiter, invalid_row_handler=invalid_row)
  # One thread: pyarrow then numbers the lines it cannot parse.
  read = pa_csv.ReadOptions(block_size=CSV_BLOCK_BYTES, use_threads=False)
  types, rows_read = {}, 0
  try:
    # Readers closed when done: one left to the collector is the likely cause of a rare
    # abort at exit ("terminate called without an active exception").
    with pa_csv.open_csv(path, parse_options=parse, read_options=read) as header:
      names = header.schema.names
    _check_columns(schema, path, names)
    types = {n: {"any": pa.string(), "int": pa.int64(), "number": pa.float64()}[
        _expected(schema, n)] for n in schema.columns()}
    convert = pa_csv.ConvertOptions(include_columns=schema.columns(), column_types=types)
    with pa_csv.open_csv(path, parse_options=parse, convert_options=convert,
                         read_options=read) as reader:
      for batch in reader:
        yield batch
        rows_read += batch.num_rows
  except pa.ArrowInvalid as e:
    if bad_lines:
      line = bad_lines[0]
      raise UserError(f"{path}, line {line.number}: {line.actual_columns} fields, expected "
                      f"{line.expected_columns} (a truncated or malformed line)") from None
    found = _conversion_error(path, types, parse, read, rows_read) if types else None
    raise UserError(found or f"{path}: cannot read it as CSV ({e})") from None


def _conversion_error(path: Path, types: dict[str, pa.DataType], parse: pa_csv.ParseOptions,
                      read: pa_csv.ReadOptions, rows_read: int) -> str | None:
  """Finds the value pyarrow could not convert (its error names neither row nor column).

  The file is read again as strings (missing values null, as the typed read has them); the
  rows before `rows_read` converted already, so only the chunks from there on are cast, a
  column at a time, and the failing column's first bad row is found by halving: a few
  casts of the whole chunk's size, about the time of the good path, not a cast per value.
  """
  strings = pa_csv.ConvertOptions(include_columns=list(types), strings_can_be_null=True,
                                  column_types={n: pa.string() for n in types})
  first_row = 0
  with pa_csv.open_csv(path, parse_options=parse, convert_options=strings,
                       read_options=read) as reader:
    for batch in reader:
      if first_row + batch.num_rows > rows_read:
        for name, type_ in types.items():
          i = _first_unconvertible(batch.column(name), type_)
          if i is not None:
            what = "an integer" if pa.types.is_integer(type_) else "a number"
            value = batch.column(name)[i].as_py()
            return f"{Where(path, first_row)(name, i)}: expected {what}, got {value!r}"
      first_row += batch.num_rows
  return None


def _first_unconvertible(values: pa.Array, type_: pa.DataType) -> int | None:
  """The index of the first of `values` that does not cast to `type_`; None if all do."""
  def casts(start: int, stop: int) -> bool:
    try:
      pc.cast(values.slice(start, stop - start), type_)
      return True
    except pa.ArrowInvalid:
      return False
  if casts(0, len(values)):
    return None
  start, stop = 0, len(values)          # the first bad value is in [start, stop)
  while stop - start > 1:
    middle = (start + stop) // 2
    if casts(start, middle):
      start = middle
    else:
      stop = middle
  return start


# ----------------------------------------------------------------------------------------
# Columns
# ----------------------------------------------------------------------------------------
def numbers(batch: pa.RecordBatch, name: str) -> np.ndarray:
  """The column as float64, nulls as NaN."""
  return pc.cast(batch.column(name), pa.float64()).to_numpy(zero_copy_only=False)


def label(batch: pa.RecordBatch, name: str, where: Where) -> np.ndarray:
  values = numbers(batch, name)
  checks.label(values, name, where)
  return values.astype(np.float32)


def ids(batch: pa.RecordBatch, field: schema_file.Sparse, where: Where) -> np.ndarray:
  column = batch.column(field.name)
  if field.hash_buckets:
    return hash_ids(column, field.hash_buckets)
  checks.ids(numbers(batch, field.name), field.name, where, field.vocab,
             "; ids that are not below a known vocab need hash_buckets")
  return pc.cast(column, pa.int32()).to_numpy(zero_copy_only=False)


def dense(batch: pa.RecordBatch, field: schema_file.Dense, where: Where) -> np.ndarray:
  values = numbers(batch, field.name)
  checks.finite(values, field.name, where)
  if field.transform == "log1p":
    checks.expect(values > -1, values, field.name, where, "values > -1 (transform log1p)")
    values = np.log1p(values)
  return values.astype(np.float32)


def day(batch: pa.RecordBatch, name: str, where: Where) -> np.ndarray:
  values = numbers(batch, name)
  checks.day(values, name, where)
  return values.astype(np.int32)


def scene(batch: pa.RecordBatch, schema: LogSchema, scenes: dict[str, int], where: Where
          ) -> np.ndarray:
  """Scene indices: the listed values' order, else the order of first appearance (`scenes`:
  value -> index, grows as new values appear)."""
  if not schema.scene_column:
    return np.zeros(batch.num_rows, np.int32)
  encoded = pc.cast(batch.column(schema.scene_column), pa.string()).dictionary_encode()
  indices = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False)
  if (indices < 0).any():
    raise UserError(f"{where(schema.scene_column, int(np.flatnonzero(indices < 0)[0]))}: "
                    "expected a scene, got a missing value")
  codes = np.empty(len(encoded.dictionary), np.int32)
  for j, value in enumerate(encoded.dictionary.to_pylist()):
    if value not in scenes:
      if schema.scene_values:
        raise UserError(f"{where(schema.scene_column, int(np.flatnonzero(indices == j)[0]))}: "
                        f"scene {value!r} is not one of the schema's scene values "
                        f"{list(schema.scene_values)}")
      scenes[value] = len(scenes)
    codes[j] = scenes[value]
  return codes[indices]


# ----------------------------------------------------------------------------------------
# Hashing: stable across runs, machines and processes (Python's hash() is salted)
# ----------------------------------------------------------------------------------------
_FNV_OFFSET, _FNV_PRIME = np.uint64(0xCBF29CE484222325), np.uint64(0x100000001B3)


def hash_ids(column: pa.Array, buckets: int) -> np.ndarray:
  """Ids in [1, buckets): strings by FNV-1a of their UTF-8 bytes, integers by splitmix64;
  a missing value gets id 0."""
  if pa.types.is_integer(column.type):
    h = splitmix64(column.fill_null(0).to_numpy(zero_copy_only=False).astype(np.uint64))
  else:
    h = fnv1a(pc.cast(column, pa.large_string()).fill_null(""))
  ids = 1 + (h % np.uint64(buckets - 1)).astype(np.int64)
  return np.where(column.is_null().to_numpy(zero_copy_only=False), 0, ids).astype(np.int32)


def splitmix64(x: np.ndarray) -> np.ndarray:
  with np.errstate(over="ignore"):
    z = x + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def fnv1a(strings: pa.Array) -> np.ndarray:
  """FNV-1a of each string, vectorised over rows: one numpy pass per byte position."""
  offsets = np.frombuffer(strings.buffers()[1], np.int64)[strings.offset:
                                                           strings.offset + len(strings) + 1]
  data = np.frombuffer(strings.buffers()[2] or b"\0", np.uint8)
  lengths = np.diff(offsets)
  h = np.full(len(strings), _FNV_OFFSET)
  with np.errstate(over="ignore"):
    for j in range(int(lengths.max(initial=0))):
      byte = data[np.minimum(offsets[:-1] + j, data.size - 1)].astype(np.uint64)
      h = np.where(j < lengths, (h ^ byte) * _FNV_PRIME, h)
  return h
