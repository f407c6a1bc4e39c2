"""Preparation: the files of a schema file -> a checked, columnar, memory-mapped cache.

  python -m mtms_jax.data.logs.prepare SCHEMA        (make data SCHEMA=...; training does it too)

The files are read with pyarrow in chunks of `read.CHUNK_ROWS` rows, so memory stays small
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
import tqdm

from mtms_jax.data.logs import read, schema_file
from mtms_jax.data.logs.schema_file import LogSchema
from mtms_jax.errors import UserError, naming_file

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
    with naming_file(tmp):       # a full disk met where no file is named (a close)
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
  total = sum(read.parquet_file(f).metadata.num_rows for f in _all_files(schema)) \
      if schema.format == "parquet" else None
  progress = tqdm.tqdm(total=total, unit="row", unit_scale=True, file=sys.stderr,
                       desc=f"prepare {schema.path.name}", mininterval=1.0)
  try:
    for day, split in enumerate(splits):
      for path in schema.files[split]:
        for chunk in _convert_file(schema, path, day, state):
          for name, f in out.items():
            # Not ndarray.tofile: through C stdio, it loses a full disk's error on small
            # writes (and reports big ones without errno ENOSPC); f.write raises it.
            with naming_file(f.name):
              f.write(np.ascontiguousarray(chunk[name]).data)
          progress.update(len(chunk["click"]))
  finally:
    progress.close()
    for f in out.values():
      with naming_file(f.name):
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
  for batch in read.batches(schema, path):
    n = batch.num_rows
    where = read.Where(path, first_row)
    chunk = {"click": read.label(batch, schema.click, where),
             "ids": np.stack([read.ids(batch, f, where) for f in schema.sparse], axis=1),
             "dense": np.stack([read.dense(batch, f, where) for f in schema.dense], axis=1)
             if schema.dense else np.zeros((n, 0), np.float32),
             "scene": read.scene(batch, schema, state.scenes, where),
             "day": read.day(batch, schema.day, where) if schema.day else np.full(n, day, np.int32)}
    if schema.conversion:
      chunk["conversion"] = read.label(batch, schema.conversion, where)
      keep = _orphans(chunk, where, schema.conversion, state)
      chunk = {k: np.ascontiguousarray(v[keep]) for k, v in chunk.items()}
    for d, count in zip(*np.unique(chunk["day"], return_counts=True)):
      state.rows_per_day[int(d)] = state.rows_per_day.get(int(d), 0) + int(count)
    first_row += n
    yield chunk
  if first_row == 0:
    raise UserError(f"{path}: no data rows (empty, or a header only)")


def _orphans(chunk: dict, where: read.Where, column: str, state: _State) -> np.ndarray:
  """Counts conversions without a click; the rows to keep under the schema's policy.
  `column`: the file's conversion column, which the message names (e.g. 'buy')."""
  orphan = (chunk["conversion"] > 0) & (chunk["click"] == 0)
  if orphan.any() and not state.orphans:
    state.first_orphan = where(column, int(np.flatnonzero(orphan)[0]))
  state.orphans += int(orphan.sum())
  state.dropped += int(orphan.sum())
  return ~orphan


def main(argv: list[str]) -> int:
  if len(argv) != 1:
    print("usage: python -m mtms_jax.data.logs.prepare SCHEMA.yaml", file=sys.stderr)
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
