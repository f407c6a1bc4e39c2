"""Ali-CCP (Taobao impressions with click and purchase labels, ESMM paper) in its CSV formats.

Formats read (one impression per row, comma-separated, all numeric):
  - torch-rechub (`ali_ccp_{train,val,test}*.csv`): `click`, `purchase`, 23 sparse fields
    named by their Ali-CCP field id (`101`, ..., `301`, `109_14`, ...) and 8 dense
    `D<field>` values. Ids were label-encoded upstream (0 = rare or missing).
  - AITM / PaddleRec (`train.csv`, `test.csv`): `click`, `purchase`, 18 sparse fields and no
    dense ones; the ids are raw enumerations, some above 400,000.
  A file without a header line (PaddleRec's test.csv) is read with one of these two layouts,
  chosen by its number of columns.
Not read: the raw `field:id` multi-hot format of PaddleRec's ESMM demo; the column contract
has one id per field.

Mapping to the columns of `mtms_jax.schema`:
  scene: field `301`, which multi-scenario work (Scenario-Wise-Rec) uses as the scenario id
    (3 values in the full data). Scenes are the values present in the loaded files in
    increasing order, named '301_<value>', unless `scenes` pins the values. 301 is then not
    also a sparse feature.
  click = `click`; conversion = `purchase`. Ali-CCP logs purchases without a click (the
    AITM sample has 5); by default such rows are dropped with a warning that counts them,
    as torch-rechub does; conversion_without_click='raise' makes them an error instead.
  ids: kept as encoded upstream with vocab = max id + 1 over the loaded files, or hashed as
    id % size with `vocab_sizes`.
  dense: z-scores with the mean and std of the lowest day loaded (the training split when a
    folder is loaded), or the file's values with standardize=False.
  day: Ali-CCP has no time column. A file's rows get `day` (default 0). In a folder, each
    file's day is the rank of the split named in its file name: train 0, val 1 (if there is
    one), test next. The ESMM paper's time-ordered halves cannot be rebuilt from these files.

Load train, val and test in one call (their folder) so that they share one schema: vocab
sizes, scenes and dense statistics all come from the loaded files.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from mtms_jax.data import Dataset, _tabular, as_columns, checks
from mtms_jax.errors import UserError
from mtms_jax.schema import DenseField, FeatureSchema

SCENE_FIELD = "301"
_LABELS = ("click", "purchase")
_AITM_COLUMNS = ("click", "purchase", "101", "121", "122", "124", "125", "126", "127", "128",
                 "129", "205", "206", "207", "216", "508", "509", "702", "853", "301")
_TORCH_RECHUB_COLUMNS = (
    "click", "purchase", "101", "121", "122", "124", "125", "126", "127", "128", "129", "205",
    "206", "207", "210", "216", "508", "509", "702", "853", "301", "109_14", "110_14",
    "127_14", "150_14", "D109_14", "D110_14", "D127_14", "D150_14", "D508", "D509", "D702",
    "D853")
_LAYOUTS = {len(_AITM_COLUMNS): _AITM_COLUMNS, len(_TORCH_RECHUB_COLUMNS): _TORCH_RECHUB_COLUMNS}
_FIELD_RE = re.compile(r"\d+(_\d+)?")
SOURCE = _tabular.Source(
    "Ali-CCP",
    "Tianchi, https://tianchi.aliyun.com/dataset/408, preprocessed with torch-rechub's "
    "preprocess_ali_ccp.py or the AITM script (small samples: shared/data/ali_ccp)")
check_kwargs = SOURCE.check_kwargs     # by config_checks, before any data is loaded


def load(path: _tabular.PathLike, *, day: int = 0, scenes: Sequence[int] | None = None,
         vocab_sizes: int | Mapping[str, int] | None = None, standardize: bool = True,
         conversion_without_click: str = "drop") -> Dataset:
  """Loads an Ali-CCP CSV file, or all the CSV files of a folder, as one Dataset.

  Args:
    path: a CSV file, or a folder whose CSV files name their split (train/val/test).
    day: the day of a single file's rows; a folder's files get theirs from their split.
    scenes: the values of field 301 to use as scenes, in order; None takes those present.
    vocab_sizes: None keeps the ids; an int or a size per field hashes them (id % size).
    standardize: turn dense values into z-scores (see the module docstring).
    conversion_without_click: 'drop' (warn with a count) or 'raise'.

  Raises:
    MissingData (a UserError): `path` does not exist.
    UserError: a file lacks a column, holds a value that is not a number, a label that is
      not 0 or 1, a negative or fractional id or (with `scenes`) an unlisted 301 value.
  """
  path = SOURCE.require(path)
  files = _tabular.split_files(path, "*.csv", day)
  parts = [_read(f, conversion_without_click, scenes) for f, _ in files]
  _tabular.check_same_columns([f for f, _ in files], [n for n, _ in parts])
  names = parts[0][0]
  values = np.concatenate([v for _, v in parts])
  days = np.concatenate([np.full(len(v), d) for (_, d), (_, v) in zip(files, parts)])
  return _dataset(names, values, days, scenes, vocab_sizes, standardize, str(path))


def _read(path: Path, policy: str, scenes: Sequence[int] | None
          ) -> tuple[tuple[str, ...], np.ndarray]:
  """One file's columns and the rows kept, after checking the values."""
  names, values = _tabular.read_numeric(path, _LAYOUTS)
  source = str(path)
  sparse, dense = _fields(names, source)
  click, purchase = (_tabular.column(names, values, c, source) for c in _LABELS)
  where = checks.Rows(source)
  for label, column in zip(_LABELS, (click, purchase)):
    checks.label(column, label, where)
  for name in (*sparse, SCENE_FIELD):
    checks.ids(_tabular.column(names, values, name, source), name, where)
  for name in dense:
    checks.finite(_tabular.column(names, values, name, source), name, where)
  if scenes is not None:
    scene = _tabular.column(names, values, SCENE_FIELD, source)
    bad = np.flatnonzero(~np.isin(scene, scenes))
    if bad.size:
      raise UserError(f"{source}, data row {bad[0]}, column {SCENE_FIELD!r}: "
                       f"{scene[bad[0]]:g} is not one of scenes={list(scenes)}")
  keep = _tabular.conversion_without_click(click, purchase, source, policy, _LABELS[1])
  return names, values[keep]


def _fields(names: Sequence[str], source: str) -> tuple[list[str], list[str]]:
  """Sparse (field ids but 301) and dense (`D<field id>`) columns; anything else is an error."""
  sparse, dense = [], []
  for name in names:
    if name in _LABELS or name == SCENE_FIELD:
      continue
    if _FIELD_RE.fullmatch(name):
      sparse.append(name)
    elif name.startswith("D") and _FIELD_RE.fullmatch(name[1:]):
      dense.append(name)
    else:
      raise UserError(f"{source}: unexpected column {name!r}; Ali-CCP columns are click, "
                       "purchase, field ids such as 101 or 109_14, and D<field id>")
  return sparse, dense


def _dataset(names: Sequence[str], values: np.ndarray, days: np.ndarray,
             scenes: Sequence[int] | None, vocab_sizes: int | Mapping[str, int] | None,
             standardize: bool, name: str) -> Dataset:
  sparse, dense = _fields(names, name)
  col = {n: j for j, n in enumerate(names)}
  ids, fields = _tabular.upstream_ids({f: values[:, col[f]] for f in sparse}, vocab_sizes)
  scene_values = values[:, col[SCENE_FIELD]].astype(np.int64)
  scene_list = np.unique(scene_values) if scenes is None else np.asarray(scenes)
  dense_values = values[:, [col[d] for d in dense]]
  if standardize:
    dense_values = _tabular.standardize(dense_values, days == days.min())
  columns = {"ids": ids, "dense": dense_values,
             "scene": _tabular.positions(scene_values, scene_list),
             "click": values[:, col["click"]], "conversion": values[:, col["purchase"]],
             "day": days}
  schema = FeatureSchema(sparse=fields, dense=tuple(DenseField(d) for d in dense),
                         scenes=tuple(f"{SCENE_FIELD}_{v}" for v in scene_list.tolist()))
  return Dataset(columns=as_columns(columns), schema=schema, name=name)
