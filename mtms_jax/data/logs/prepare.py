"""Preparation: the files of a schema file -> a checked, columnar, memory-mapped cache.

  python -m mtms_jax.data.prepare SCHEMA        (make data SCHEMA=...; training does it too)

The files are read with pyarrow in chunks of `CHUNK_ROWS` rows, so memory stays small
whatever their size; every value is checked on the way (a mistake is a one-line `UserError`
naming the file, the column, the data row counted from 0 without the header, and what was
expected), ids are kept or hashed, and each column is appended to a raw file of the cache:

  ids.bin (N, F) int32, dense.bin (N, Nd) float32, scene.bin, day.bin (N,) int32,
  click.bin, conversion.bin (N,) float32 (no conversion for CTR-only data),
  manifest.json: the schema's digest, the source files' sizes and mtimes, rows per day,
  scenes, and each column's dtype and shape.

The cache is written to a temporary folder beside it and renamed into place, so a killed or
failed run leaves the previous cache (or none), never half of one; a rerun starts over. It
is rebuilt only when the schema or a source file changed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import tqdm

from mtms_jax.data.logs import schema_file
from mtms_jax.errors import UserError
from mtms_jax.data.logs.schema_file import LogSchema

CHUNK_ROWS = 1 << 16
MANIFEST = "manifest.json"
_TMP = ".tmp-"


# ----------------------------------------------------------------------------------------
# Cache
# ----------------------------------------------------------------------------------------
def prepare(schema: LogSchema) -> dict:
  """Writes `schema.cache` unless it is up to date; returns its manifest."""
  sources = [[str(f), f.stat().st_size, f.stat().st_mtime_ns]
             for files in schema.files.values() for f in files]
  manifest = read_manifest(schema.cache)
  if manifest is not None:
    if manifest["schema_file"] != str(schema.path.resolve()):
      raise UserError(f"{schema.cache}: this cache was prepared from another schema file, "
                      f"{manifest['schema_file']}; give {schema.path} its own `cache:` folder")
    if manifest["schema"] == schema.digest() and manifest["sources"] == sources:
      return manifest
  for stale in schema.cache.parent.glob(f"{schema.cache.name}{_TMP}*"):
    shutil.rmtree(stale, ignore_errors=True)       # left by a killed run
  tmp = schema.cache.with_name(f"{schema.cache.name}{_TMP}{os.getpid()}")
  tmp.mkdir(parents=True)
  try:
    manifest = _write(schema, tmp, sources)
    _replace(tmp, schema.cache)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return manifest


def read_manifest(cache: Path) -> dict | None:
  try:
    return json.loads((cache / MANIFEST).read_text())
  except FileNotFoundError:
    return None


def _replace(tmp: Path, cache: Path):
  """Puts `tmp` at `cache`: only the renames happen after the cache is complete."""
  old = cache.with_name(f"{cache.name}{_TMP}old-{os.getpid()}")
  if cache.exists():
    cache.rename(old)
  tmp.rename(cache)
  shutil.rmtree(old, ignore_errors=True)


def open_cache(cache: Path, manifest: dict) -> dict[str, np.ndarray]:
  """The cache's columns, memory-mapped read-only: pages are read when rows are used."""
  return {name: _open_column(cache / f"{name}.bin", spec["dtype"], tuple(spec["shape"]))
          for name, spec in manifest["columns"].items()}


def _open_column(path: Path, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
  if not np.prod(shape):       # (N, 0): no dense fields; mmap cannot map an empty file
    return np.zeros(shape, dtype)
  # A plain ndarray view of the mapping: batches gathered from an np.memmap are np.memmap
  # too, and jax takes those several times slower than ndarrays (bench_logs.py).
  return np.asarray(np.memmap(path, dtype=dtype, mode="r", shape=shape))


# ----------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------
@dataclasses.dataclass
class _State:
  """What the pass over the files has seen so far."""
  scenes: dict[str, int]
  rows_per_day: dict[int, int] = dataclasses.field(default_factory=dict)
  orphans: int = 0                  # conversions without a click
  first_orphan: str = ""
  dropped: int = 0


def _write(schema: LogSchema, folder: Path, sources: list) -> dict:
  columns = ["ids", "dense", "scene", "day", "click"] + (["conversion"] if schema.conversion
                                                          else [])
  out = {name: open(folder / f"{name}.bin", "wb") for name in columns}
  state = _State(scenes={v: i for i, v in enumerate(schema.scene_values)})
  splits = [s for s in schema_file.SPLITS if s in schema.files] or ["all"]
  total = sum(_parquet_file(f).metadata.num_rows for f in _all_files(schema)) \
      if schema.format == "parquet" else None
  progress = tqdm.tqdm(total=total, unit="row", unit_scale=True, file=sys.stderr,
                       desc=f"prepare {schema.path.name}", mininterval=1.0)
  try:
    for day, split in enumerate(splits):
      for path in schema.files[split]:
        for chunk in _convert_file(schema, path, day, state):
          for name, f in out.items():
            chunk[name].tofile(f)
          progress.update(len(chunk["click"]))
  finally:
    progress.close()
    for f in out.values():
      f.close()
  if state.orphans and schema.conversion_without_click == "error":
    raise UserError(f"{state.first_orphan}: conversion without a click, in {state.orphans} "
                    "rows in all; set `conversion_without_click: drop` in the schema to drop "
                    "them")
  n = sum(state.rows_per_day.values())
  if n == 0:
    raise UserError(f"{schema.path}: the files hold no rows to train on")
  if schema.test_fraction:
    state.rows_per_day = _hold_out_tail(folder / "day.bin", n, schema.test_fraction)
  widths = {"ids": (len(schema.sparse),), "dense": (len(schema.dense),)}
  dtypes = {"ids": "int32", "dense": "float32", "scene": "int32", "day": "int32"}
  manifest = {"schema_file": str(schema.path.resolve()), "schema": schema.digest(),
              "sources": sources, "rows": n, "dropped": state.dropped,
              "rows_per_day": {str(d): r for d, r in sorted(state.rows_per_day.items())},
              "scenes": list(state.scenes) or ["all"],
              "columns": {c: {"dtype": dtypes.get(c, "float32"), "shape": [n, *widths.get(c, ())]}
                          for c in columns}}
  (folder / MANIFEST).write_text(json.dumps(manifest, indent=2))
  return manifest


def _hold_out_tail(path: Path, n: int, fraction: float) -> dict[int, int]:
  """Rewrites the day column: the last `fraction` of the rows day 1, the others day 0."""
  test = round(n * fraction)
  if not 0 < test < n:
    raise UserError(f"split: test_fraction={fraction} of {n} rows leaves no training or no "
                    "test rows")
  days = np.memmap(path, np.int32, mode="r+", shape=(n,))
  days[:n - test] = 0
  days[n - test:] = 1
  days.flush()
  return {0: n - test, 1: test}


def _all_files(schema: LogSchema) -> list[Path]:
  return [f for files in schema.files.values() for f in files]


def _convert_file(schema: LogSchema, path: Path, day: int, state: _State
                  ) -> Iterator[dict[str, np.ndarray]]:
  """The file's rows as cache columns, chunk by chunk, after checking every value."""
  first_row = 0
  for batch in _read(schema, path):
    n = batch.num_rows
    where = _Where(path, first_row)
    chunk = {"click": _label(batch, schema.click, where),
             "ids": np.stack([_ids(batch, f, where) for f in schema.sparse], axis=1),
             "dense": np.stack([_dense(batch, f, where) for f in schema.dense], axis=1)
             if schema.dense else np.zeros((n, 0), np.float32),
             "scene": _scene(batch, schema, state, where),
             "day": _day(batch, schema.day, where) if schema.day else np.full(n, day, np.int32)}
    if schema.conversion:
      chunk["conversion"] = _label(batch, schema.conversion, where)
      keep = _orphans(chunk, where, state)
      chunk = {k: np.ascontiguousarray(v[keep]) for k, v in chunk.items()}
    for d, count in zip(*np.unique(chunk["day"], return_counts=True)):
      state.rows_per_day[int(d)] = state.rows_per_day.get(int(d), 0) + int(count)
    first_row += n
    yield chunk
  if first_row == 0:
    raise UserError(f"{path}: no data rows (empty, or a header only)")


@dataclasses.dataclass(frozen=True)
class _Where:
  path: Path
  first_row: int

  def __call__(self, column: str, i: int) -> str:
    return f"{self.path}, data row {self.first_row + i}, column {column!r}"


def _orphans(chunk: dict, where: _Where, state: _State) -> np.ndarray:
  """Counts conversions without a click; the rows to keep under the schema's policy."""
  orphan = (chunk["conversion"] > 0) & (chunk["click"] == 0)
  if orphan.any() and not state.orphans:
    state.first_orphan = where("conversion", int(np.flatnonzero(orphan)[0]))
  state.orphans += int(orphan.sum())
  state.dropped += int(orphan.sum())
  return ~orphan


# ----------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------
def _read(schema: LogSchema, path: Path) -> Iterator[pa.RecordBatch]:
  if schema.format == "parquet":
    return _read_parquet(schema, path)
  return _read_csv(schema, path)


def _parquet_file(path: Path) -> pq.ParquetFile:
  try:
    return pq.ParquetFile(path)
  except (pa.ArrowInvalid, OSError) as e:
    raise UserError(f"{path}: not a readable Parquet file, truncated? ({e})") from None


def _read_parquet(schema: LogSchema, path: Path) -> Iterator[pa.RecordBatch]:
  f = _parquet_file(path)
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
  read = pa_csv.ReadOptions(block_size=1 << 22, use_threads=False)
  types = {}
  try:
    names = pa_csv.open_csv(path, parse_options=parse, read_options=read).schema.names
    _check_columns(schema, path, names)
    types = {n: {"any": pa.string(), "int": pa.int64(), "number": pa.float64()}[
        _expected(schema, n)] for n in schema.columns()}
    convert = pa_csv.ConvertOptions(include_columns=schema.columns(), column_types=types)
    yield from pa_csv.open_csv(path, parse_options=parse, convert_options=convert,
                               read_options=read)
  except pa.ArrowInvalid as e:
    if bad_lines:
      line = bad_lines[0]
      raise UserError(f"{path}, line {line.number}: {line.actual_columns} fields, expected "
                      f"{line.expected_columns} (a truncated or malformed line)") from None
    found = _conversion_error(path, types) if types else None
    raise UserError(found or f"{path}: cannot read it as CSV ({e})") from None


def _conversion_error(path: Path, types: dict[str, pa.DataType]) -> str | None:
  """Finds the value pyarrow could not convert (its error names neither row nor column)."""
  reader = pa_csv.open_csv(path, convert_options=pa_csv.ConvertOptions(
      include_columns=list(types), column_types={n: pa.string() for n in types}))
  first_row = 0
  for batch in reader:
    for name, type_ in types.items():
      values = batch.column(name)
      for i, value in enumerate(values.to_pylist()):
        try:
          pc.cast(pa.array([value]), type_)
        except pa.ArrowInvalid:
          what = "an integer" if pa.types.is_integer(type_) else "a number"
          return f"{_Where(path, first_row)(name, i)}: expected {what}, got {value!r}"
    first_row += batch.num_rows
  return None


# ----------------------------------------------------------------------------------------
# Columns
# ----------------------------------------------------------------------------------------
def _numbers(batch: pa.RecordBatch, name: str) -> np.ndarray:
  """The column as float64, nulls as NaN."""
  return pc.cast(batch.column(name), pa.float64()).to_numpy(zero_copy_only=False)


def _label(batch: pa.RecordBatch, name: str, where: _Where) -> np.ndarray:
  values = _numbers(batch, name)
  bad = np.flatnonzero((values != 0) & (values != 1))
  if bad.size:
    raise UserError(f"{where(name, bad[0])}: expected a label 0 or 1, got {values[bad[0]]}")
  return values.astype(np.float32)


def _ids(batch: pa.RecordBatch, field: schema_file.Sparse, where: _Where) -> np.ndarray:
  column = batch.column(field.name)
  if field.hash_buckets:
    return hash_ids(column, field.hash_buckets)
  values = _numbers(batch, field.name)
  bad = np.flatnonzero(~(values >= 0) | (values >= field.vocab))    # NaN (missing) fails too
  if bad.size:
    raise UserError(f"{where(field.name, bad[0])}: expected an id in [0, {field.vocab}), got "
                    f"{values[bad[0]]}; ids that are not below a known vocab need "
                    "hash_buckets")
  return pc.cast(column, pa.int32()).to_numpy(zero_copy_only=False)


def _dense(batch: pa.RecordBatch, field: schema_file.Dense, where: _Where) -> np.ndarray:
  values = _numbers(batch, field.name)
  bad = np.flatnonzero(~np.isfinite(values))
  if bad.size:
    raise UserError(f"{where(field.name, bad[0])}: expected a finite number, got "
                    f"{values[bad[0]]} (a missing value reads as nan)")
  if field.transform == "log1p":
    bad = np.flatnonzero(values <= -1)
    if bad.size:
      raise UserError(f"{where(field.name, bad[0])}: transform log1p needs values > -1, got "
                      f"{values[bad[0]]}")
    values = np.log1p(values)
  return values.astype(np.float32)


def _day(batch: pa.RecordBatch, name: str, where: _Where) -> np.ndarray:
  values = _numbers(batch, name)
  bad = np.flatnonzero(~(values >= 0) | (values > np.iinfo(np.int32).max))
  if bad.size:
    raise UserError(f"{where(name, bad[0])}: expected a day (an integer >= 0), got "
                    f"{values[bad[0]]}")
  return values.astype(np.int32)


def _scene(batch: pa.RecordBatch, schema: LogSchema, state: _State, where: _Where
           ) -> np.ndarray:
  """Scene indices: the listed values' order, else the order of first appearance."""
  if not schema.scene_column:
    return np.zeros(batch.num_rows, np.int32)
  encoded = pc.cast(batch.column(schema.scene_column), pa.string()).dictionary_encode()
  indices = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False)
  if (indices < 0).any():
    raise UserError(f"{where(schema.scene_column, int(np.flatnonzero(indices < 0)[0]))}: "
                    "expected a scene, got a missing value")
  codes = np.empty(len(encoded.dictionary), np.int32)
  for j, value in enumerate(encoded.dictionary.to_pylist()):
    if value not in state.scenes:
      if schema.scene_values:
        raise UserError(f"{where(schema.scene_column, int(np.flatnonzero(indices == j)[0]))}: "
                        f"scene {value!r} is not one of the schema's scene values "
                        f"{list(schema.scene_values)}")
      state.scenes[value] = len(state.scenes)
    codes[j] = state.scenes[value]
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


def main(argv: list[str]) -> int:
  if len(argv) != 1:
    print("usage: python -m mtms_jax.data.prepare SCHEMA.yaml", file=sys.stderr)
    return 2
  try:
    schema = schema_file.load(argv[0])
    manifest = prepare(schema)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"{schema.cache}: {manifest['rows']} rows, days {list(manifest['rows_per_day'])}, "
        f"scenes {manifest['scenes']}, {manifest['dropped']} rows dropped")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
