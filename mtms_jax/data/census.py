"""UCI Census-Income (KDD), the two-task benchmark of the MMoE and PLE papers.

Format: the UCI files census-income.data / census-income.test (optionally gzipped):
headerless CSV, 42 columns, values after a space. DeepCTR's sample has one more column in
front, a row index, which is skipped. `path` is such a file, or a folder whose
census-income* files are pooled.

The benchmark's tasks, both defined on every row: income > 50K (6.2% of the UCI test file)
and marital status "Never married" (43%). They are independent tasks: most high earners are
married. The column contract, though, is a funnel: conversion only after a click. So
income cannot sit in `conversion` on every row (5.7% of rows would be conversions without a
click), and this module does not squeeze it in. Instead:

  `load` returns a Dataset in the contract:
    click = never married (the benchmark's marital task, on every row);
    conversion = income > 50K AND never married (0.55% of rows), which is the ESMM-style
      "artificial dependency" torch-rechub reports for census (its ESMM row).
  `load_multitask` returns the same Dataset together with both benchmark labels,
    {'income', 'never_married'} arrays aligned with its rows (index them with the same
    mask as `Dataset.select`), so that income AUC over all rows can be scored as in
    REFERENCE_RESULTS.md section 4. Training a tower on income over all rows needs a
    contract with independent task labels, which `mtms_jax.schema` does not have yet.
  So the marital AUC is the click (CTR) AUC of any model on this Dataset; the income AUC
  is not its CVR or CTCVR AUC.
  With click_label='income' the roles swap: click = income > 50K on every row (its CTR
  AUC is the benchmark's income AUC), conversion = the same "both" label, so CVR is
  p(never married | income > 50K). A multi-task model then sees both labels, though one
  of them only as a funnel step; two runs, one per click_label, give both benchmark AUCs.

Features (marital status is a label and is left out, as keras-mmoe and torch-rechub do;
`instance_weight` is a survey weight, which UCI says not to use as a feature):
  dense: age, wage_per_hour, capital_gains, capital_losses, stock_dividends, num_emp,
    weeks_worked, as z-scores with the mean and std of the day-0 (training) rows, or raw
    with standardize=False;
  sparse: the other 32 columns, including integer codes such as det_ind_code and year, with
    ids remapped to 1 + rank among the distinct values loaded; '?' (missing) gets id 0.
scene: no paper defines one. scene_column=None (the default) gives one scene 'all', as in
  the benchmark; naming a sparse column (e.g. 'sex', 'year', 'race') makes its values the
  scenes, in sorted order; that column stays a feature.
day: not time. A seeded random split by `split` fractions: day 0 train, 1 validation,
  2 test. The papers train on the official train file (199,523 rows, not available here)
  and halve the test file into validation and test; with the test file alone, a random
  50/25/25 split of it is the practical substitute. Say so beside any comparison.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtms_jax.data import Dataset, _tabular, as_columns, checks
from mtms_jax.errors import UserError
from mtms_jax.schema import DenseField, FeatureSchema, SparseField

COLUMNS = (
    "age", "class_worker", "det_ind_code", "det_occ_code", "education", "wage_per_hour",
    "hs_college", "marital_stat", "major_ind_code", "major_occ_code", "race", "hisp_origin",
    "sex", "union_member", "unemp_reason", "full_or_part_emp", "capital_gains",
    "capital_losses", "stock_dividends", "tax_filer_stat", "region_prev_res",
    "state_prev_res", "det_hh_fam_stat", "det_hh_summ", "instance_weight", "mig_chg_msa",
    "mig_chg_reg", "mig_move_reg", "mig_same", "mig_prev_sunbelt", "num_emp", "fam_under_18",
    "country_father", "country_mother", "country_self", "citizenship", "own_or_self",
    "vet_question", "vet_benefits", "weeks_worked", "year", "income_50k")
DENSE = ("age", "wage_per_hour", "capital_gains", "capital_losses", "stock_dividends",
         "num_emp", "weeks_worked")
SPARSE = tuple(c for c in COLUMNS
               if c not in (*DENSE, "marital_stat", "instance_weight", "income_50k"))
# What a value can be: ages in years, weeks of a year; the other dense columns are counts
# or amounts, >= 0.
_DENSE_RANGES = {"age": (0, 120), "weeks_worked": (0, 52)}
_INCOME = {"50000+.": 1.0, "- 50000.": 0.0}
_NEVER_MARRIED = "Never married"
_MISSING = "?"
SOURCE = _tabular.Source(
    "Census-Income (KDD)",
    "UCI, https://archive.ics.uci.edu/dataset/117 (census-income.data.gz and "
    "census-income.test.gz; the test file is in shared/data/census_income_kdd)")
check_kwargs = SOURCE.check_kwargs     # by config_checks, before any data is loaded


def load(path: _tabular.PathLike, **kwargs: Any) -> Dataset:
  """Census as a Dataset in the column contract; see `load_multitask` for the arguments."""
  return load_multitask(path, **kwargs)[0]


def load_multitask(path: _tabular.PathLike, *, scene_column: str | None = None,
                   split: Sequence[float] = (0.5, 0.25, 0.25), seed: int = 0,
                   standardize: bool = True, click_label: str = "never_married"
                   ) -> tuple[Dataset, dict[str, np.ndarray]]:
  """Loads census files as a Dataset plus the benchmark's two labels, row-aligned.

  Args:
    path: a census-income file (42 or 43 columns, .gz allowed) or a folder of them.
    scene_column: a sparse column whose values become the scenes; None for one scene.
    split: fractions of rows given days 0, 1, ... (train, validation, test).
    seed: seed of the random split.
    standardize: turn dense values into z-scores (see the module docstring).
    click_label: the benchmark task in `click`, 'never_married' or 'income' (see the
      module docstring); `conversion` is both labels at once either way.

  Returns:
    (Dataset, {'income': income > 50K, 'never_married': ...}, float32 arrays (N,)).

  Raises:
    MissingData (a UserError): `path` does not exist or holds no census-income files.
    UserError: a line has the wrong number of fields, a numeric column holds something
      else or a value outside its range (age [0, 120], weeks_worked [0, 52], the others
      >= 0, no NaN), or an income label is neither '50000+.' nor '- 50000.'; or an
      argument is bad.
  """
  path = SOURCE.require(path)
  if click_label not in ("never_married", "income"):
    raise UserError(f"click_label must be 'never_married' or 'income', got {click_label!r}")
  if scene_column is not None and scene_column not in SPARSE:
    raise UserError(f"scene_column must be one of the sparse columns {list(SPARSE)}, got "
                    f"{scene_column!r}")
  files = [path] if path.is_file() else sorted(path.glob("census-income*"))
  if not files:
    raise _tabular.MissingData(f"{path}: no census-income* files in this folder; get them "
                               f"from {SOURCE.where}")
  tables = [_read(f) for f in files]
  # Categories are encoded as read: only a few values end in a space, never two spellings
  # of one category, so only the values compared with text below are stripped.
  categorical = {c: [v for t in tables for v in t.values(c)] for c in SPARSE}
  dense = np.stack([np.concatenate([_dense(t, c) for t in tables]) for c in DENSE], axis=1)
  labels = {"income": np.concatenate([_income(t) for t in tables]),
            "never_married": np.array([v.strip() == _NEVER_MARRIED for t in tables
                                       for v in t.values("marital_stat")], np.float32)}
  day = _random_days(len(dense), split, seed)
  if standardize:
    dense = _tabular.standardize(dense, day == 0)
  return _dataset(categorical, dense, labels, day, scene_column, click_label,
                  str(path)), labels


def _read(path: Path) -> _tabular.Table:
  """One file; DeepCTR's leading index column is read as column 'index' and not used."""
  with _tabular.open_text(path) as f:
    width = len(next(csv.reader(f), []))
  if width not in (len(COLUMNS), len(COLUMNS) + 1):
    raise UserError(f"{path}, line 1: {width} fields, expected {len(COLUMNS)} (UCI "
                     f"census-income) or {len(COLUMNS) + 1} (with a leading index)")
  names = COLUMNS if width == len(COLUMNS) else ("index", *COLUMNS)
  return _tabular.read_table(path, names, skipinitialspace=True)


def _dense(table: _tabular.Table, name: str) -> np.ndarray:
  """A dense column's numbers, each inside the range it can take (`_DENSE_RANGES`)."""
  values = table.numbers(name)
  checks.in_range(values, name, table.where, *_DENSE_RANGES.get(name, (0, np.inf)))
  return values


def _income(table: _tabular.Table) -> np.ndarray:
  values = [v.strip() for v in table.values("income_50k")]
  for value, line in zip(values, table.lines):
    if value not in _INCOME:
      raise UserError(f"{table.source}, line {line}, column 'income_50k': expected one of "
                       f"{list(_INCOME)}, got {value!r}")
  return np.array([_INCOME[v] for v in values], dtype=np.float32)


def _random_days(n: int, split: Sequence[float], seed: int) -> np.ndarray:
  """Day k for a random `split[k]` fraction of the n rows."""
  fractions = np.asarray(split, dtype=np.float64)
  if fractions.size == 0 or (fractions <= 0).any() or abs(fractions.sum() - 1) > 1e-6:
    raise UserError(f"split must be positive fractions summing to 1, got {list(split)}")
  ends = np.round(np.cumsum(fractions) * n).astype(np.int64)
  ends[-1] = n  # rounding must not lose or add a row
  day = np.empty(n, np.int64)
  day[np.random.default_rng(seed).permutation(n)] = np.repeat(
      np.arange(len(ends)), np.diff(ends, prepend=0))
  return day


def _dataset(categorical: dict[str, list[str]], dense: np.ndarray,
             labels: dict[str, np.ndarray], day: np.ndarray, scene_column: str | None,
             click_label: str, name: str) -> Dataset:
  ids, fields = [], []
  for column in SPARSE:
    column_ids, vocab = _tabular.encode(categorical[column], missing=_MISSING)
    ids.append(column_ids)
    fields.append(SparseField(column, vocab))
  if scene_column is None:
    scenes, scene = ("all",), np.zeros(len(day), np.int64)
  else:
    names, scene = np.unique([v.strip() for v in categorical[scene_column]],
                             return_inverse=True)
    scenes = tuple(names.tolist())
  columns = {"ids": np.stack(ids, axis=1), "dense": dense, "scene": scene,
             "click": labels[click_label],
             "conversion": labels["income"] * labels["never_married"], "day": day}
  schema = FeatureSchema(sparse=tuple(fields), dense=tuple(DenseField(d) for d in DENSE),
                         scenes=scenes)
  return Dataset(columns=as_columns(columns), schema=schema, name=name)
