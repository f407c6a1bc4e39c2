"""Every built-in loader checks its values as a schema file's logs are checked (issue 20,
case 4): labels, ranges, timestamps, NaN; one line naming the file, the row and the column.
Each case is a small file written here; nothing is trained."""

from __future__ import annotations

import re

import pytest

from mtms_jax.data import aliccp, aliexpress, census, movielens
from mtms_jax.errors import UserError
from tests.data.test_loaders import CENSUS_LINE, aliexpress_csv, write_grouplens

GOOD_RATING = "1\t7\t5\t300"


@pytest.mark.parametrize("rating, message", [
    ("2\t8\t7\t100", "line 2, column 'rating': expected a rating in [0.5, 5], got 7.0"),
    ("2\t8\t-2\t100", "line 2, column 'rating': expected a rating in [0.5, 5], got -2.0"),
    ("2\t8\tnan\t100", "line 2, column 'rating': expected a rating in [0.5, 5], got nan"),
    ("2\t8\t4\t-1e12", "line 2, column 'timestamp': expected a timestamp (whole seconds "
     "since 1970, >= 0), got -1000000000000.0"),
    ("2\t8\t4\t100.5", "line 2, column 'timestamp': expected a timestamp"),
])
def test_movielens_ratings_and_timestamps(tmp_path, rating, message):
  folder = write_grouplens(tmp_path / "ml-100k", [GOOD_RATING, rating])
  with pytest.raises(UserError, match=re.escape(f"{folder / 'u.data'}, {message}")):
    movielens.load(folder)


@pytest.mark.parametrize("age", ["-5", "999", "nan"])
def test_movielens_ages(tmp_path, age):
  folder = write_grouplens(tmp_path / "ml-100k", [GOOD_RATING, "2\t8\t4\t100"])
  users = folder / "u.user"
  users.write_text(users.read_text().replace("2|25|", f"2|{age}|"))
  with pytest.raises(UserError, match=re.escape(
      f"{users}, line 2, column 'age': expected an age in [1, 120], got {float(age)}")):
    movielens.load(folder)


def test_movielens_merged_csv_rating(tmp_path):
  path = tmp_path / "ml.csv"
  path.write_text("user_id,movie_id,rating,timestamp,title,genres,gender,age,occupation,zip\n"
                  "1,7,5,300,A (1995),Comedy,M,25,4,94043\n"
                  "2,8,6,100,B (1996),Drama,F,35,2,10001\n")
  with pytest.raises(UserError, match=re.escape(
      f"{path}, line 3, column 'rating': expected a rating in [0.5, 5], got 6.0")):
    movielens.load(path)


@pytest.mark.parametrize("old, new, message", [
    ("38,", "999,", "line 2, column 'age': expected a number in [0, 120], got 999.0"),
    ("38,", "nan,", "line 2, column 'age': expected a number in [0, 120], got nan"),
    (" 2, 12, 95,", " 2, 60, 95,", "line 2, column 'weeks_worked': expected a number in "
     "[0, 52], got 60.0"),
    (" 0, 0, 0, Joint", " -5, 0, 0, Joint", "line 2, column 'capital_gains': expected a "
     "number in [0, inf], got -5.0"),
])
def test_census_dense_values_in_their_range(tmp_path, old, new, message):
  path = tmp_path / "census-income.test"
  row = CENSUS_LINE.format(income="- 50000.")
  assert old in row
  path.write_text(row + row.replace(old, new, 1))
  with pytest.raises(UserError, match=re.escape(f"{path}, {message}")):
    census.load(path)


def test_aliexpress_dense_nan(tmp_path):
  path = aliexpress_csv(tmp_path / "AliExpress_US" / "train.csv",
                        [{}, {"numerical_7": "nan"}])
  with pytest.raises(UserError, match=re.escape(
      f"{path}, data row 1, column 'numerical_7': expected a finite number, got nan")):
    aliexpress.load(path)


def test_aliccp_dense_inf_and_fractional_id(tmp_path):
  path = tmp_path / "train.csv"
  header = "click,purchase,101,301,D508\n"
  path.write_text(header + "1,0,3,1,0.5\n0,0,4,2,inf\n")
  with pytest.raises(UserError, match=re.escape(
      f"{path}, data row 1, column 'D508': expected a finite number, got inf")):
    aliccp.load(path)
  path.write_text(header + "1,0,3,1,0.5\n0,0,4.5,2,1.0\n")
  with pytest.raises(UserError, match=re.escape(
      f"{path}, data row 1, column '101': expected an id (an integer >= 0), got 4.5")):
    aliccp.load(path)
