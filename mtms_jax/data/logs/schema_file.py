"""Schema files: a YAML description of one's own CSV or Parquet logs (README, Your own logs).

  files: {train: "logs/train-*.parquet", valid: "logs/valid.parquet", test: "logs/test.parquet"}
  format: parquet              # or csv (with `delimiter`, default ',')
  scene: {column: channel}     # optional; `values: [feed, search]` fixes the scenes' order
  labels: {click: clk, conversion: buy}    # conversion optional: CTR-only data
  sparse:
    - {name: user_id, vocab: 1000000}      # integer ids in [0, vocab)
    - {name: ad_id, hash_buckets: 2000000} # strings or integers, hashed
  dense:
    - {name: price, transform: log1p}

`files` is either one pattern (or a list) with a `day` column of integer days, or with
`split: {test_fraction: 0.2}` (the last rows are the test day, 1), or train / valid / test
patterns (days 0, 1, 2 of the splits present; no `day` column then). Patterns are relative to the
schema file. Every key is checked: an unknown or missing one is a `UserError` naming the
key and the file.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
from pathlib import Path

import yaml

from mtms_jax import tasks as tasks_lib
from mtms_jax.errors import UserError

SPLITS = ("train", "valid", "test")
FORMATS = ("parquet", "csv")
TRANSFORMS = ("none", "log1p")
POLICIES = ("error", "drop")
_TOP_KEYS = {"files", "format", "delimiter", "day", "scene", "labels", "sparse", "dense",
             "conversion_without_click", "split", "cache"}


@dataclasses.dataclass(frozen=True)
class Sparse:
  """An id column: `vocab` > 0 keeps integer ids (checked < vocab); else `hash_buckets`."""
  name: str
  vocab: int = 0
  hash_buckets: int = 0
  dim: int = 16

  @property
  def size(self) -> int:
    return self.vocab or self.hash_buckets


@dataclasses.dataclass(frozen=True)
class Dense:
  name: str
  transform: str = "none"


@dataclasses.dataclass(frozen=True)
class LogSchema:
  """A parsed schema file; `files` maps a split ('train', 'valid', 'test', or 'all' when the
  `day` column gives the days) to its files, in order."""
  path: Path
  files: dict[str, tuple[Path, ...]]
  format: str
  delimiter: str
  day: str
  scene_column: str
  scene_values: tuple[str, ...]
  click: str
  conversion: str
  conversion_without_click: str
  sparse: tuple[Sparse, ...]
  dense: tuple[Dense, ...]
  train_days: tuple[int, ...]
  test_day: int
  test_fraction: float              # > 0: the last rows are the test day (1), the rest day 0
  cache: Path

  @property
  def tasks(self) -> tuple[str, ...]:
    """The predicted tasks its labels support (mtms_jax.schema.TASK_SETS)."""
    return tasks_lib.PREDICTED if self.conversion else tasks_lib.CTR_ONLY

  def columns(self) -> list[str]:
    """The file columns this schema reads."""
    names = [self.click, self.conversion, self.day, self.scene_column]
    names += [f.name for f in self.sparse] + [f.name for f in self.dense]
    return [n for n in dict.fromkeys(names) if n]

  def digest(self) -> str:
    """Identifies what the schema makes of the files (not where its cache lies)."""
    d = dataclasses.asdict(self)
    del d["path"], d["cache"]
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load(path) -> LogSchema:
  """Reads and checks a schema file; every mistake is a one-line `UserError`."""
  path = Path(path)
  if not path.is_file():
    raise UserError(f"{path}: no such schema file")
  try:
    raw = yaml.safe_load(path.read_text())
  except yaml.YAMLError as e:
    raise UserError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
  if not isinstance(raw, dict):
    raise UserError(f"{path}: expected a mapping of keys such as files, labels, sparse")
  _keys(raw, _TOP_KEYS, {"files", "labels", "sparse"}, str(path))
  files = _files(raw["files"], raw, path)
  labels = _mapping(raw["labels"], "labels", {"click", "conversion"}, {"click"}, path)
  scene = _mapping(raw.get("scene", {}), "scene", {"column", "values"},
                   {"column"} if "scene" in raw else set(), path)
  fmt = _choice(raw.get("format", "parquet"), "format", FORMATS, path)
  policy = _choice(raw.get("conversion_without_click", "error"), "conversion_without_click",
                   POLICIES, path)
  schema = LogSchema(
      path=path, files=files, format=fmt, delimiter=str(raw.get("delimiter", ",")),
      day=str(raw.get("day", "")), scene_column=str(scene.get("column", "")),
      scene_values=tuple(str(v) for v in scene.get("values", ())),
      click=str(labels["click"]), conversion=str(labels.get("conversion", "")),
      conversion_without_click=policy, sparse=_sparse(raw["sparse"], path),
      dense=_dense(raw.get("dense", []), path), train_days=(), test_day=-1, test_fraction=0.0,
      cache=path.parent / str(raw.get("cache", f"{path.stem}.cache")))
  return _with_split(schema, raw.get("split", {}))


def _keys(d: dict, allowed: set, required: set, where: str):
  unknown = sorted(set(d) - allowed)
  if unknown:
    raise UserError(f"{where}: unknown key {unknown[0]!r}; expected keys {sorted(allowed)}")
  missing = sorted(required - set(d))
  if missing:
    raise UserError(f"{where}: missing key {missing[0]!r}")


def _mapping(value, key: str, allowed: set, required: set, path: Path) -> dict:
  if not isinstance(value, dict):
    raise UserError(f"{path}: {key}: expected a mapping with keys {sorted(allowed)}")
  _keys(value, allowed, required, f"{path}: {key}")
  return value


def _choice(value, key: str, choices: tuple, path: Path) -> str:
  if value not in choices:
    raise UserError(f"{path}: {key}: {value!r}; expected one of {list(choices)}")
  return value


def _files(value, raw: dict, path: Path) -> dict[str, tuple[Path, ...]]:
  """Split -> files matching its patterns (relative to the schema file), sorted."""
  if isinstance(value, dict):
    _keys(value, set(SPLITS), {"train", "test"}, f"{path}: files")
    if raw.get("day"):     # which would say the days, and the validation rows, is unclear
      raise UserError(f"{path}: files gives the days by split (train 0, valid 1, test last) "
                      f"and day: {raw['day']} names a column of days; give one of the two: "
                      "drop `day`, or give files as one set of files")
    patterns = value
  else:
    if not raw.get("day") and "test_fraction" not in (raw.get("split") or {}):
      raise UserError(f"{path}: files is one set of files, so `day` must name the column of "
                      "days, or split: {test_fraction: ...} hold out the last rows; or give "
                      "files as {train: ..., test: ...}")
    patterns = {"all": value}
  return {split: _glob(p if isinstance(p, list) else [p], path) for split, p in
          patterns.items()}


def _glob(patterns: list, path: Path) -> tuple[Path, ...]:
  found = []
  for pattern in patterns:
    # os.path.join keeps an absolute pattern as it is.
    matches = sorted(Path(p) for p in glob.glob(os.path.join(path.parent, str(pattern))))
    if not matches:
      raise UserError(f"{path}: files: no file matches {pattern!r} (relative to "
                      f"{path.parent})")
    found += matches
  return tuple(found)


def _fields(value, key: str, allowed: set, path: Path) -> list[dict]:
  if not isinstance(value, list) or not all(isinstance(f, dict) for f in value):
    raise UserError(f"{path}: {key}: expected a list of mappings such as {{name: user_id}}")
  for i, f in enumerate(value):
    _keys(f, allowed, {"name"}, f"{path}: {key}[{i}]")
  return value


def _sparse(value, path: Path) -> tuple[Sparse, ...]:
  fields = []
  for i, f in enumerate(_fields(value, "sparse", {"name", "vocab", "hash_buckets", "dim"},
                                path)):
    if ("vocab" in f) == ("hash_buckets" in f):
      raise UserError(f"{path}: sparse[{i}] ({f['name']}): give exactly one of vocab (integer "
                      "ids below it) and hash_buckets (ids hashed)")
    size = f.get("vocab", f.get("hash_buckets"))
    if not isinstance(size, int) or size < 1 + ("hash_buckets" in f):
      raise UserError(f"{path}: sparse[{i}] ({f['name']}): expected a positive integer "
                      f"size (hash_buckets >= 2), got {size!r}")
    fields.append(Sparse(str(f["name"]), int(f.get("vocab", 0)), int(f.get("hash_buckets", 0)),
                         int(f.get("dim", 16))))
  if not fields:
    raise UserError(f"{path}: sparse: at least one sparse field is needed")
  return tuple(fields)


def _dense(value, path: Path) -> tuple[Dense, ...]:
  return tuple(Dense(str(f["name"]), _choice(f.get("transform", "none"),
                                             f"dense ({f['name']}) transform", TRANSFORMS, path))
               for f in _fields(value, "dense", {"name", "transform"}, path))


def _with_split(schema: LogSchema, split) -> LogSchema:
  """Train and test days: given by `split`, else the splits' days (train 0, valid 1 if
  present, test last) or, with a `day` column, set once the days are known (prepare)."""
  split = _mapping(split, "split", {"train_days", "test_day", "test_fraction"}, set(),
                   schema.path)
  train_days = tuple(int(d) for d in split.get("train_days", ()))
  test_day = int(split.get("test_day", -1))
  fraction = split.get("test_fraction", 0.0)
  if not isinstance(fraction, (int, float)) or not 0 <= fraction < 1 or (
      fraction and (schema.day or "all" not in schema.files)):
    raise UserError(f"{schema.path}: split: test_fraction={fraction!r}: expected a share of "
                    "the rows in (0, 1), with one set of files and no day column")
  if "all" not in schema.files:
    train_days = train_days or (0,)
    test_day = test_day if test_day >= 0 else len(schema.files) - 1
  return dataclasses.replace(schema, train_days=train_days, test_day=test_day,
                             test_fraction=float(fraction))


def validation_day(schema: LogSchema) -> int:
  """The day of the `valid` files, -1 without them."""
  return 1 if "valid" in schema.files else -1
