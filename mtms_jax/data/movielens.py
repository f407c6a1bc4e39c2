"""MovieLens ratings as a multi-scene, multi-task ranking data set (the M3oE recipe).

Formats read (`path`):
  - a GroupLens ml-100k folder: u.data, u.user, u.item (https://grouplens.org/datasets/
    movielens/100k/);
  - a RecBole atomic-files folder: <name>.inter, <name>.user, <name>.item, optionally
    gzipped (the recbole PyPI wheel ships ml-100k this way);
  - one merged CSV with columns user_id, movie_id, rating, timestamp, title, genres
    ('|'-joined), gender, age, occupation, zip (M3oE's ML-1M sample).

Mapping to the columns of `mtms_jax.schema`:
  scene: the user's age group, 'age_lt25', 'age_25_34', 'age_ge35'. M3oE groups the ML-1M
    age codes as {1, 18} / {25} / {35, 45, 50, 56}; the same cuts at 25 and 35 apply to
    raw ML-100K ages.
  click = rating > 3; conversion ("like") = rating > 4, so every like is a click.
  sparse fields, ids remapped to 1 + rank among the distinct values loaded, 0 for a
    missing value: user, item, gender, occupation, zip3 (first 3 characters of the zip
    code), genre (the first genre listed, M3oE's cate_id), genres (the whole genre set as
    one id, so multi-genre movies are told apart), year (release year); then age, as the
    7 ML-1M age bands (<18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+) with ids 0..6.
  dense: none.
  day: the ratings are cut into `num_days` slots of equal size by timestamp (ties keep file
    order), day 0 the oldest, so training on days < T and testing on day T is a split in
    time.
"""

from __future__ import annotations

import csv
import dataclasses
import re
from pathlib import Path

import numpy as np

from mtms_jax.data import Dataset, _tabular, as_columns, checks
from mtms_jax.errors import UserError
from mtms_jax.schema import FeatureSchema, SparseField

SCENES = ("age_lt25", "age_25_34", "age_ge35")
_SCENE_CUTS = (25, 35)
_AGE_BAND_CUTS = (18, 25, 35, 45, 50, 56)  # the lower ends of the ML-1M age codes
_GROUPLENS_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western")
_YEAR_RE = re.compile(r"\((\d{4})\)\s*$")
SOURCE = _tabular.Source(
    "MovieLens",
    "GroupLens, https://grouplens.org/datasets/movielens/100k/ (ml-100k.zip), or "
    "`pip download --no-deps recbole==1.2.1` (recbole/dataset_example/ml-100k)")
check_kwargs = SOURCE.check_kwargs     # by config_checks, before any data is loaded


@dataclasses.dataclass
class _Ratings:
  """One row per rating, user and item attributes joined in; '' marks a missing value."""
  user: np.ndarray
  item: np.ndarray
  rating: np.ndarray
  timestamp: np.ndarray
  age: np.ndarray
  gender: np.ndarray
  occupation: np.ndarray
  zip: np.ndarray
  genres: np.ndarray     # '|'-joined, in the order the source lists them
  year: np.ndarray


def load(path: _tabular.PathLike, *, num_days: int = 10) -> Dataset:
  """Loads MovieLens ratings (see the module docstring for the formats and the mapping).

  Args:
    path: a GroupLens or RecBole folder, or a merged CSV file.
    num_days: how many equal-size time slots the ratings are cut into (the `day` column).

  Raises:
    MissingData (a UserError): `path` does not exist, or a folder holds neither format.
    UserError: a file lacks a column or has a bad value (a rating outside [0.5, 5], a
      timestamp that is not whole seconds >= 0, an age outside [1, 120], NaN), or a rating
      names a user or an item that its users or items file does not list.
  """
  path = SOURCE.require(path)
  if path.is_file():
    ratings = _merged_csv(path)
  elif (path / "u.data").exists():
    ratings = _grouplens(path)
  else:
    ratings = _recbole(path)
  if not 1 <= num_days <= len(ratings.rating):
    raise UserError(f"num_days must be in [1, {len(ratings.rating)}], got {num_days}")
  return _dataset(ratings, num_days, str(path))


def _grouplens(folder: Path) -> _Ratings:
  """The GroupLens ml-100k files: tab-separated ratings, '|'-separated users and items."""
  data = _tabular.read_table(folder / "u.data", ("user", "item", "rating", "timestamp"),
                             delimiter="\t", quoting=csv.QUOTE_NONE)
  users = _tabular.read_table(folder / "u.user",
                              ("user", "age", "gender", "occupation", "zip"),
                              delimiter="|", quoting=csv.QUOTE_NONE)
  items = _tabular.read_table(
      folder / "u.item", ("item", "title", "release_date", "video_date", "url",
                          *_GROUPLENS_GENRES),
      delimiter="|", encoding="latin-1", quoting=csv.QUOTE_NONE)
  flags = np.stack([items.strings(g) == "1" for g in _GROUPLENS_GENRES], axis=1)
  genres = np.array(["|".join(g for g, on in zip(_GROUPLENS_GENRES, row) if on)
                     for row in flags], dtype=str)
  years = np.array([d[-4:] for d in items.strings("release_date")], dtype=str)
  return _join(data, users, items, genres, years)


def _recbole(folder: Path) -> _Ratings:
  """RecBole atomic files: tab-separated, header `name:type`, genres space-separated."""
  data, users, items = (_atomic(folder, kind) for kind in ("inter", "user", "item"))
  genres = np.array(["|".join(c.split()) for c in items.strings("class")], dtype=str)
  return _join(data, users, items, genres, items.strings("release_year"))


def _atomic(folder: Path, kind: str) -> _tabular.Table:
  found = sorted(folder.glob(f"*.{kind}")) + sorted(folder.glob(f"*.{kind}.gz"))
  if len(found) != 1:
    raise _tabular.MissingData(
        f"{folder}: expected u.data (GroupLens) or exactly one RecBole *.{kind}[.gz] file, "
        f"found {[f.name for f in found]}. Get MovieLens-100K from {SOURCE.where}")
  table = _tabular.read_table(found[0], delimiter="\t", quoting=csv.QUOTE_NONE)
  # Drop RecBole's `:type` suffixes and use the GroupLens reader's names.
  names = {"user_id": "user", "item_id": "item", "zip_code": "zip"}
  bare = (n.split(":")[0] for n in table.names)
  return dataclasses.replace(table, names=tuple(names.get(n, n) for n in bare))


def _merged_csv(path: Path) -> _Ratings:
  """One CSV of ratings with user and movie attributes (M3oE's ML-1M sample)."""
  table = _tabular.read_table(path)
  table = dataclasses.replace(table, names=tuple(
      {"user_id": "user", "movie_id": "item"}.get(n.lower(), n.lower()) for n in table.names))
  years = np.array([m.group(1) if (m := _YEAR_RE.search(t)) else ""
                    for t in table.strings("title")], dtype=str)
  return _Ratings(user=table.strings("user"), item=table.strings("item"),
                  **_rating_and_time(table), age=_ages(table), gender=table.strings("gender"),
                  occupation=table.strings("occupation"), zip=table.strings("zip"),
                  genres=table.strings("genres"), year=years)


def _join(data: _tabular.Table, users: _tabular.Table, items: _tabular.Table,
          item_genres: np.ndarray, item_years: np.ndarray) -> _Ratings:
  """Ratings with the attributes of their user and item (per-item arrays in `items` order)."""
  u = _lookup(data, "user", users)
  i = _lookup(data, "item", items)
  return _Ratings(user=data.strings("user"), item=data.strings("item"),
                  **_rating_and_time(data), age=_ages(users)[u],
                  gender=users.strings("gender")[u],
                  occupation=users.strings("occupation")[u], zip=users.strings("zip")[u],
                  genres=item_genres[i], year=item_years[i])


def _rating_and_time(table: _tabular.Table) -> dict[str, np.ndarray]:
  """The ratings, in [0.5, 5] (GroupLens' 1-5 stars, halves in the later releases), and
  their timestamps, whole seconds since 1970."""
  rating, timestamp = table.numbers("rating"), table.numbers("timestamp")
  checks.in_range(rating, "rating", table.where, 0.5, 5, "a rating")
  checks.timestamp(timestamp, "timestamp", table.where)
  return {"rating": rating, "timestamp": timestamp}


def _ages(table: _tabular.Table) -> np.ndarray:
  """Ages in years (ML-100K) or ML-1M's age codes (1, 18, ..., 56): in [1, 120] either way."""
  ages = table.numbers("age")
  checks.in_range(ages, "age", table.where, 1, 120, "an age")
  return ages


def _lookup(data: _tabular.Table, key: str, table: _tabular.Table) -> np.ndarray:
  """The row of `table` whose `key` matches, for each row of `data`."""
  keys, wanted = table.strings(key), data.strings(key)
  order = np.argsort(keys, kind="stable")
  rows = order[np.minimum(np.searchsorted(keys[order], wanted), len(keys) - 1)]
  bad = np.flatnonzero(keys[rows] != wanted)
  if bad.size:
    raise UserError(f"{data.source}, line {data.lines[bad[0]]}, column {key!r}: "
                     f"{str(wanted[bad[0]])!r} is not listed in {table.source}")
  return rows


def _dataset(r: _Ratings, num_days: int, name: str) -> Dataset:
  categorical = {
      "user": r.user, "item": r.item, "gender": r.gender, "occupation": r.occupation,
      "zip3": np.array([z[:3] for z in r.zip], dtype=str),
      "genre": np.array([g.split("|")[0] for g in r.genres], dtype=str),
      "genres": r.genres, "year": r.year}
  ids, fields = [], []
  for field, values in categorical.items():
    field_ids, vocab = _tabular.encode(values, missing="")
    ids.append(field_ids)
    fields.append(SparseField(field, vocab))
  ids.append(np.searchsorted(_AGE_BAND_CUTS, r.age, side="right"))
  fields.append(SparseField("age", len(_AGE_BAND_CUTS) + 1))
  n = len(r.rating)
  day = np.empty(n, np.int64)
  day[np.argsort(r.timestamp, kind="stable")] = np.arange(n) * num_days // n
  columns = {"ids": np.stack(ids, axis=1), "dense": np.zeros((n, 0)),
             "scene": np.searchsorted(_SCENE_CUTS, r.age, side="right"),
             "click": r.rating > 3, "conversion": r.rating > 4, "day": day}
  return Dataset(columns=as_columns(columns), schema=FeatureSchema(sparse=tuple(fields),
                                                                   scenes=SCENES),
                 name=name)
