"""AliExpress search logs (Tianchi 74690): one file per country and split, country = scene.

Format (the public release unpacks to AliExpress_<CC>/train.csv and test.csv, CC in NL, ES,
FR, US, RU; the torch-rechub and FuxiCTR samples have the same columns): comma-separated
with a header, `search_id`, `categorical_1` .. `categorical_16`, `numerical_1` ..
`numerical_63`, `click`, `conversion`.

Mapping to the columns of `mtms_jax.schema`:
  scene: the country. A file's country comes from its path (a folder or file name with
    `AliExpress_<CC>`); a file whose path names none gets `country`. Scenes are the
    countries loaded, in the order NL, ES, FR, US, RU (others after them, sorted), unless
    `countries` pins the list.
  sparse: categorical_1..16, ids kept as encoded upstream with vocab = max id + 1 over the
    loaded files, or hashed as id % size with `vocab_sizes`.
  dense: numerical_1..63. The providers scaled them to about [0, 1]; by default they are
    turned into z-scores with the mean and std of the lowest day loaded (the training split
    when a folder is loaded); standardize=False keeps the file's values.
  click = `click`; conversion = `conversion`. A conversion without a click is dropped with
    a warning that counts such rows (the default), or raises.
  search_id: the query session, a grouping key rather than a feature (MTReclib drops it
    too); the column contract has no place for it, so it is not kept.
  day: there is no time column. A file's rows get `day` (default 0); in a folder, each
    file's day is the rank of the split named in its file name: train 0, test 1.

Load train and test in one call (their folder, or the folder of all countries) so that they
share one schema: vocab sizes, scenes and dense statistics all come from the loaded files.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from mtms_jax.data import Dataset, _tabular, as_columns, checks
from mtms_jax.errors import UserError
from mtms_jax.schema import DenseField, FeatureSchema

COUNTRIES = ("NL", "ES", "FR", "US", "RU")
_LABELS = ("click", "conversion")
_COUNTRY_RE = re.compile(r"aliexpress_([a-z]{2})(?![a-z])", re.IGNORECASE)
SOURCE = _tabular.Source(
    "AliExpress",
    "Tianchi, https://tianchi.aliyun.com/dataset/74690 (small samples: "
    "shared/data/aliexpress)")
check_kwargs = SOURCE.check_kwargs     # by config_checks, before any data is loaded


def load(path: _tabular.PathLike, *, day: int = 0, country: str | None = None,
         countries: Sequence[str] | None = None,
         vocab_sizes: int | Mapping[str, int] | None = None, standardize: bool = True,
         conversion_without_click: str = "drop") -> Dataset:
  """Loads an AliExpress CSV file, or all the CSV files below a folder, as one Dataset.

  Args:
    path: a CSV file, or a folder whose CSV files name their split (train/test).
    day: the day of a single file's rows; a folder's files get theirs from their split.
    country: the country of files whose path does not name one (e.g. 'US').
    countries: the scene list, in order; None takes the countries loaded.
    vocab_sizes, standardize, conversion_without_click: as in `mtms_jax.data.aliccp.load`.

  Raises:
    MissingData (a UserError): `path` does not exist.
    UserError: what `aliccp.load` raises for, or a file's country is unknown or unlisted.
  """
  path = SOURCE.require(path)
  files = _tabular.split_files(path, "*.csv", day)
  file_countries = [_country(f, country) for f, _ in files]
  scenes = _scenes(file_countries, countries, [f for f, _ in files])
  parts = [_read(f, conversion_without_click) for f, _ in files]
  _tabular.check_same_columns([f for f, _ in files], [n for n, _ in parts])
  names = parts[0][0]
  values = np.concatenate([v for _, v in parts])
  days = np.concatenate([np.full(len(v), d) for (_, d), (_, v) in zip(files, parts)])
  scene = np.concatenate([np.full(len(v), scenes.index(c))
                          for c, (_, v) in zip(file_countries, parts)])
  return _dataset(names, values, days, scene, scenes, vocab_sizes, standardize, str(path))


def _country(path: Path, default: str | None) -> str:
  found = _COUNTRY_RE.findall(str(path))
  if found:
    return found[-1].upper()
  if default is None:
    raise UserError(f"{path}: cannot tell the country (no AliExpress_<CC> in the path); "
                    "pass country='US' or the like")
  return default


def _scenes(file_countries: Sequence[str], countries: Sequence[str] | None,
            files: Sequence[Path]) -> list[str]:
  if countries is None:
    present = set(file_countries)
    return [c for c in COUNTRIES if c in present] + sorted(present - set(COUNTRIES))
  for path, c in zip(files, file_countries):
    if c not in countries:
      raise UserError(f"{path}: country {c!r} is not one of countries={list(countries)}")
  return list(countries)


def _read(path: Path, policy: str) -> tuple[tuple[str, ...], np.ndarray]:
  """One file's columns and the rows kept, after checking the values."""
  names, values = _tabular.read_numeric(path)
  source = str(path)
  sparse, dense = _fields(names, source)
  click, conversion = (_tabular.column(names, values, c, source) for c in _LABELS)
  where = checks.Rows(source)
  for label, column in zip(_LABELS, (click, conversion)):
    checks.label(column, label, where)
  for name in sparse:
    checks.ids(_tabular.column(names, values, name, source), name, where)
  for name in dense:
    checks.finite(_tabular.column(names, values, name, source), name, where)
  keep = _tabular.conversion_without_click(click, conversion, source, policy, _LABELS[1])
  return names, values[keep]


def _fields(names: Sequence[str], source: str) -> tuple[list[str], list[str]]:
  """Sparse (categorical_*) and dense (numerical_*) columns; anything else is an error."""
  sparse = [n for n in names if n.startswith("categorical_")]
  dense = [n for n in names if n.startswith("numerical_")]
  other = sorted(set(names) - set(sparse) - set(dense) - {"search_id", *_LABELS})
  if other:
    raise UserError(f"{source}: unexpected columns {other}; AliExpress columns are "
                     "search_id, categorical_*, numerical_*, click and conversion")
  if not sparse:
    raise UserError(f"{source}: no categorical_* columns; the columns are {list(names)}")
  return sparse, dense


def _dataset(names: Sequence[str], values: np.ndarray, days: np.ndarray, scene: np.ndarray,
             scenes: Sequence[str], vocab_sizes: int | Mapping[str, int] | None,
             standardize: bool, name: str) -> Dataset:
  sparse, dense = _fields(names, name)
  col = {n: j for j, n in enumerate(names)}
  ids, fields = _tabular.upstream_ids({f: values[:, col[f]] for f in sparse}, vocab_sizes)
  dense_values = values[:, [col[d] for d in dense]]
  if standardize:
    dense_values = _tabular.standardize(dense_values, days == days.min())
  columns = {"ids": ids, "dense": dense_values, "scene": scene,
             "click": values[:, col["click"]], "conversion": values[:, col["conversion"]],
             "day": days}
  schema = FeatureSchema(sparse=fields, dense=tuple(DenseField(d) for d in dense),
                         scenes=tuple(scenes))
  return Dataset(columns=as_columns(columns), schema=schema, name=name)
