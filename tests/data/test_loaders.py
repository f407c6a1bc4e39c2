"""Tests of the public-data loaders: real samples from ../shared/data, then bad inputs.

The expected counts come from each sample's PROVENANCE.md. Tests on shared data skip when
the shared folder is absent; the bad-input tests write their own small files.
"""

from __future__ import annotations

import gzip
import os
import warnings
from pathlib import Path

import ml_collections
import numpy as np
import pytest

from mtms_jax import config_checks
from mtms_jax.data import aliccp, aliexpress, census, movielens, registry
from mtms_jax.errors import UserError

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
DTYPES = {"ids": np.int32, "dense": np.float32, "scene": np.int32, "click": np.float32,
          "conversion": np.float32, "day": np.int32}


def shared(*parts: str) -> Path:
  path = SHARED.joinpath(*parts)
  if not path.exists():
    pytest.skip(f"{path} is absent (the shared data sit beside the repository)")
  return path


def check_contract(data, rows: int, sparse: int, dense: int) -> dict[str, np.ndarray]:
  c = data.columns
  assert len(data) == rows
  assert {k: c[k].dtype for k in DTYPES} == DTYPES
  assert c["ids"].shape == (rows, sparse) and c["dense"].shape == (rows, dense)
  assert (c["conversion"] <= c["click"]).all()
  assert (c["ids"] < np.array([f.vocab_size for f in data.schema.sparse])).all()
  return c


def per_day(c: dict[str, np.ndarray], name: str) -> list[int]:
  return [int(c[name][c["day"] == d].sum()) for d in np.unique(c["day"])]


# Ali-CCP.

def test_aliccp_torch_rechub_folder():
  data = aliccp.load(shared("ali_ccp", "torch_rechub_sample"))
  c = check_contract(data, 200, 22, 8)
  assert data.schema.scenes == ("301_1",)
  assert np.bincount(c["day"]).tolist() == [100, 50, 50]  # train, val, test
  assert per_day(c, "click") == [7, 3, 2] and per_day(c, "conversion") == [1, 1, 1]
  assert "301" not in [f.name for f in data.schema.sparse]


def test_aliccp_single_file_gets_day():
  path = shared("ali_ccp", "torch_rechub_sample", "ali_ccp_test_sample.csv")
  data = aliccp.load(path, day=1, standardize=False)
  c = check_contract(data, 50, 22, 8)
  assert (c["day"] == 1).all() and c["click"].sum() == 2
  assert c["dense"][0, 0] == pytest.approx(0.4734)


def test_aliccp_aitm_folder_drops_purchase_without_click():
  with pytest.warns(UserWarning) as record:
    data = aliccp.load(shared("ali_ccp", "paddlerec_aitm_sample"))
  messages = sorted(str(w.message) for w in record)
  assert "test.csv: dropped 3 of 50 rows" in messages[0]
  assert "train.csv: dropped 2 of 48 rows" in messages[1]
  c = check_contract(data, 93, 17, 0)  # test.csv has no header line
  assert data.schema.scenes == ("301_1", "301_2", "301_3")
  assert np.bincount(c["scene"]).tolist() == [23, 42, 28]
  assert np.bincount(c["day"]).tolist() == [46, 47]
  assert c["click"].sum() == 6 and c["conversion"].sum() == 1


def test_aliccp_aitm_raise_and_hash():
  path = shared("ali_ccp", "paddlerec_aitm_sample", "train.csv")
  with pytest.raises(ValueError, match=r"train\.csv, data row \d+, column 'purchase': conversion "):
    aliccp.load(path, conversion_without_click="raise")
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    data = aliccp.load(path, vocab_sizes=1000, scenes=(1, 2, 3))
  assert {f.vocab_size for f in data.schema.sparse} == {1000}
  assert np.bincount(data.columns["scene"], minlength=3).tolist() == [0, 31 - 2, 17]


def test_aliccp_scenario_wise_three_scenes():
  data = aliccp.load(shared("ali_ccp", "scenario_wise_rec_sample_MODIFIED"))
  c = check_contract(data, 200, 22, 8)
  assert np.bincount(c["scene"]).tolist() == [146, 32, 22]
  assert per_day(c, "click") == [7, 3, 6]


def test_aliccp_headerless_file_of_unknown_width(tmp_path):
  path = tmp_path / "test.csv"
  path.write_text("0,0,1,2\n")
  with pytest.raises(ValueError, match=r"test\.csv, line 1: no header line and 4 columns"):
    aliccp.load(path)


# AliExpress.

def test_aliexpress_torch_rechub_folder():
  data = aliexpress.load(shared("aliexpress", "torch_rechub_sample"), country="US")
  c = check_contract(data, 120, 16, 63)
  assert data.schema.scenes == ("US",)
  assert np.bincount(c["day"]).tolist() == [100, 20]  # train, test
  assert per_day(c, "click") == [60, 10] and per_day(c, "conversion") == [2, 2]
  train = c["dense"][c["day"] == 0]
  np.testing.assert_allclose(train.mean(axis=0), 0, atol=1e-5)


def test_aliexpress_fuxictr_folder():
  data = aliexpress.load(shared("aliexpress", "fuxictr_tiny_mtl"), country="unknown")
  c = check_contract(data, 200, 16, 63)
  assert per_day(c, "click") == [3, 6] and per_day(c, "conversion") == [2, 1]


def aliexpress_csv(path: Path, rows: list[dict[str, object]]) -> Path:
  names = (["search_id"] + [f"categorical_{i}" for i in range(1, 17)]
           + [f"numerical_{i}" for i in range(1, 64)] + ["click", "conversion"])
  lines = [",".join(names)]
  for row in rows:
    lines.append(",".join(str(row.get(n, 0)) for n in names))
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("\n".join(lines) + "\n")
  return path


def test_aliexpress_countries_from_paths(tmp_path):
  for country, clicks in (("NL", 1), ("US", 0)):
    for split in ("train", "test"):
      aliexpress_csv(tmp_path / f"AliExpress_{country}" / f"{split}.csv",
                     [{"click": clicks, "categorical_2": 3}, {"numerical_1": 0.5}])
  data = aliexpress.load(tmp_path)
  c = check_contract(data, 8, 16, 63)
  assert data.schema.scenes == ("NL", "US")
  assert np.bincount(c["scene"]).tolist() == [4, 4]
  assert c["click"][c["scene"] == 0].sum() == 2 and c["click"][c["scene"] == 1].sum() == 0
  assert np.bincount(c["day"]).tolist() == [4, 4]
  pinned = aliexpress.load(tmp_path, countries=aliexpress.COUNTRIES)
  assert pinned.schema.scenes == aliexpress.COUNTRIES
  assert np.bincount(pinned.columns["scene"]).tolist() == [4, 0, 0, 4]


def test_aliexpress_bad_inputs(tmp_path):
  no_country = aliexpress_csv(tmp_path / "x.csv", [{}])
  with pytest.raises(ValueError, match=r"x\.csv: cannot tell the country"):
    aliexpress.load(no_country)
  missing = aliexpress_csv(tmp_path / "missing.csv", [{}])
  missing.write_text(missing.read_text().replace(",conversion", "", 1))
  with pytest.raises(ValueError, match=r"missing\.csv: 81 column names but 82 fields"):
    aliexpress.load(missing, country="US")
  aliexpress_csv(missing, [{}])
  missing.write_text("\n".join(line.rsplit(",", 1)[0]
                               for line in missing.read_text().splitlines()) + "\n")
  with pytest.raises(ValueError, match=r"missing\.csv: missing column 'conversion'"):
    aliexpress.load(missing, country="US")
  text = aliexpress_csv(tmp_path / "text.csv", [{}, {}, {"numerical_3": "abc"}])
  with pytest.raises(ValueError, match=r"text\.csv, line 4, column 'numerical_3': expected "
                     r"a number, got 'abc'"):
    aliexpress.load(text, country="US")
  label = aliexpress_csv(tmp_path / "label.csv", [{}, {"click": 2}])
  with pytest.raises(ValueError, match=r"label\.csv, data row 1, column 'click': expected a "
                     r"label 0 or 1, got 2"):
    aliexpress.load(label, country="US")
  neg = aliexpress_csv(tmp_path / "neg.csv", [{"categorical_5": -1}])
  with pytest.raises(ValueError, match=r"neg\.csv, data row 0, column 'categorical_5'"):
    aliexpress.load(neg, country="US")
  conversion = aliexpress_csv(tmp_path / "conv.csv", [{"conversion": 1}, {"click": 1}])
  with pytest.raises(ValueError, match=r"conv\.csv, data row 0, column 'conversion': conversion "
                     r"without a click"):
    aliexpress.load(conversion, country="US", conversion_without_click="raise")


def test_split_names_in_a_folder(tmp_path):
  aliexpress_csv(tmp_path / "train.csv", [{}])
  aliexpress_csv(tmp_path / "extra.csv", [{}])
  with pytest.raises(ValueError, match=r"extra\.csv: cannot tell its split"):
    aliexpress.load(tmp_path, country="US")


# MovieLens.

def test_movielens_100k_recbole():
  data = movielens.load(shared("movielens", "ml-100k_recbole_wheel"))
  c = check_contract(data, 100_000, 9, 0)
  assert data.schema.scenes == movielens.SCENES
  assert np.bincount(c["scene"]).tolist() == [26_551, 35_444, 38_005]
  assert c["click"].mean() == pytest.approx(0.5538, abs=1e-4)
  assert c["conversion"].mean() == pytest.approx(0.2120, abs=1e-4)
  assert np.bincount(c["day"]).tolist() == [10_000] * 10
  vocab = {f.name: f.vocab_size for f in data.schema.sparse}
  assert vocab["user"] == 943 + 1 and vocab["item"] == 1682 + 1 and vocab["age"] == 7


def test_movielens_1m_merged_csv():
  data = movielens.load(shared("movielens", "ml-1m_m3oe_sample", "ml-1m-sample.csv"),
                        num_days=5)
  c = check_contract(data, 500, 9, 0)
  assert np.bincount(c["scene"]).tolist() == [53, 224, 223]
  assert c["click"].mean() == pytest.approx(0.626)
  assert c["conversion"].mean() == pytest.approx(0.204)
  assert np.bincount(c["day"]).tolist() == [100] * 5


def write_grouplens(folder: Path, ratings: list[str]) -> Path:
  folder.mkdir()
  (folder / "u.data").write_text("".join(f"{r}\n" for r in ratings))
  (folder / "u.user").write_text("1|24|M|writer|94043\n2|25|F|other|T8H1N\n"
                                 "3|35|M|writer|\n")
  flags = ["0"] * 19
  comedy = flags.copy()
  comedy[5] = comedy[8] = "1"  # Comedy, Drama
  (folder / "u.item").write_text(f"7|A (1995)|01-Jan-1995|||{'|'.join(comedy)}\n"
                                 f"8|B||||{'|'.join(flags)}\n", encoding="latin-1")
  return folder


def test_movielens_grouplens_format(tmp_path):
  folder = write_grouplens(tmp_path / "ml-100k", [
      "1\t7\t5\t300", "2\t8\t4\t100", "3\t7\t3\t200", "1\t8\t1\t400"])
  data = movielens.load(folder, num_days=2)
  c = check_contract(data, 4, 9, 0)
  assert c["scene"].tolist() == [0, 1, 2, 0]  # ages 24, 25, 35, 24
  assert c["click"].tolist() == [1, 1, 0, 0] and c["conversion"].tolist() == [1, 0, 0, 0]
  assert c["day"].tolist() == [1, 0, 0, 1]  # timestamps 300, 100, 200, 400
  field = {f.name: j for j, f in enumerate(data.schema.sparse)}
  assert c["ids"][:, field["zip3"]].tolist() == [1, 2, 0, 1]  # '940' < 'T8H'; '' unknown
  assert c["ids"][:, field["genre"]].tolist() == [1, 0, 1, 0]  # Comedy; item 8 has none
  assert c["ids"][:, field["year"]].tolist() == [1, 0, 1, 0]


def test_movielens_unknown_user_names_file_and_line(tmp_path):
  folder = write_grouplens(tmp_path / "ml-100k", ["1\t7\t5\t300", "9\t7\t5\t300"])
  with pytest.raises(ValueError, match=r"u\.data, line 2, column 'user': '9' is not listed"):
    movielens.load(folder)


def test_movielens_bad_rating_names_file_line_column(tmp_path):
  folder = write_grouplens(tmp_path / "ml-100k", ["1\t7\t5\t300", "2\t7\tfive\t300"])
  with pytest.raises(ValueError, match=r"u\.data, line 2, column 'rating': expected a "
                     r"number, got 'five'"):
    movielens.load(folder)


# Census-Income (KDD).

@pytest.fixture(scope="module")
def census_full():
  path = shared("census_income_kdd", "keras_mmoe_full_test", "census-income.test.gz")
  return census.load_multitask(path, scene_column="sex")


def test_census_full_test_file(census_full):
  data, labels = census_full
  c = check_contract(data, 99_762, 32, 7)
  assert data.schema.scenes == ("Female", "Male")
  assert np.bincount(c["scene"]).tolist() == [51_791, 47_971]
  assert labels["income"].sum() == 6_186 and labels["never_married"].sum() == 43_143
  np.testing.assert_array_equal(c["click"], labels["never_married"])
  np.testing.assert_array_equal(c["conversion"], labels["income"] * labels["never_married"])
  assert c["conversion"].sum() == 545
  assert np.bincount(c["day"]).tolist() == [49_881, 24_941, 24_940]
  np.testing.assert_allclose(c["dense"][c["day"] == 0].mean(axis=0), 0, atol=1e-4)
  names = [f.name for f in data.schema.sparse]
  assert "marital_stat" not in names and "instance_weight" not in names


def test_census_deepctr_sample_with_index_column():
  path = shared("census_income_kdd", "deepctr_sample")
  data, labels = census.load_multitask(path, split=(0.8, 0.2), seed=1)
  c = check_contract(data, 200, 32, 7)
  assert data.schema.scenes == ("all",) and (c["scene"] == 0).all()
  assert labels["income"].sum() == 12 and labels["never_married"].sum() == 84
  assert np.bincount(c["day"]).tolist() == [160, 40]
  np.testing.assert_array_equal(census.load(path, split=(0.8, 0.2), seed=1).columns["ids"],
                                c["ids"])


def test_census_income_as_click():
  path = shared("census_income_kdd", "deepctr_sample")
  data, labels = census.load_multitask(path, split=(0.8, 0.2), seed=1, click_label="income")
  c = check_contract(data, 200, 32, 7)
  np.testing.assert_array_equal(c["click"], labels["income"])
  np.testing.assert_array_equal(c["conversion"], labels["income"] * labels["never_married"])
  with pytest.raises(ValueError, match="click_label"):
    census.load(path, click_label="marital")


CENSUS_LINE = ("38, Private, 6, 36, 1st 2nd 3rd or 4th grade, 0, Not in universe, Never "
               "married, Manufacturing-durable goods, Machine operators assmblrs & "
               "inspctrs, White, Mexican (Mexicano), Female, Not in universe, Not in "
               "universe, Full-time schedules, 0, 0, 0, Joint one under 65 & one 65+, Not "
               "in universe, Not in universe, Spouse of householder, Spouse of householder, "
               "1032.38, ?, ?, ?, Not in universe under 1 year old, ?, 4, Not in universe, "
               "Mexico, Mexico, Mexico, Foreign born- Not a citizen of U S , 0, Not in "
               "universe, 2, 12, 95, {income}\n")


def test_census_reads_gzip_and_rejects_bad_income(tmp_path):
  good = tmp_path / "census-income.test.gz"
  with gzip.open(good, "wt") as f:
    f.write(CENSUS_LINE.format(income="50000+.") + CENSUS_LINE.format(income="- 50000."))
  data, labels = census.load_multitask(good, split=(0.5, 0.5))
  assert labels["income"].tolist() == [1, 0] and data.columns["click"].tolist() == [1, 1]
  bad = tmp_path / "bad.csv"
  bad.write_text(CENSUS_LINE.format(income="- 50000.") + CENSUS_LINE.format(income="rich"))
  with pytest.raises(ValueError, match=r"bad\.csv, line 2, column 'income_50k'.*'rich'"):
    census.load(bad)


def test_census_bad_age_and_bad_width(tmp_path):
  bad = tmp_path / "bad.csv"
  bad.write_text(CENSUS_LINE.format(income="- 50000.").replace("38,", "old,", 1))
  with pytest.raises(ValueError, match=r"bad\.csv, line 1, column 'age': expected a number"):
    census.load(bad)
  bad.write_text("1, 2, 3\n")
  with pytest.raises(ValueError, match=r"bad\.csv, line 1: 3 fields, expected 42"):
    census.load(bad)
  with pytest.raises(ValueError, match="scene_column must be one of"):
    census.load(bad, scene_column="marital_stat")


# Registry.

@pytest.mark.parametrize("name, where", [
    ("movielens", "grouplens.org"), ("census", "archive.ics.uci.edu"),
    ("aliccp", "tianchi.aliyun.com/dataset/408"),
    ("aliexpress", "tianchi.aliyun.com/dataset/74690")])
def test_missing_data_says_where_to_get_it(tmp_path, name, where):
  with pytest.raises(FileNotFoundError, match=rf"nowhere: no such file.*{where}"):
    registry.load(name, path=tmp_path / "nowhere")
  # A relative path is shown resolved too; the config pass finds it before any data loads.
  config = ml_collections.ConfigDict({"name": name, "scenes": (), "kwargs": {"path": "nowhere"}})
  with pytest.raises(UserError, match=rf"^nowhere \({os.getcwd()}/nowhere\): no such file or "
                                      rf"folder\. .*{where}.*config\.data\.kwargs\.path$"):
    config_checks.check_data(config)


def test_registry():
  assert {"aliccp", "aliexpress", "census", "movielens"} <= set(registry.names())
  assert not {"pipeline", "checks", "describe", "fingerprint"} & set(registry.names())
  with pytest.raises(ValueError, match="unknown data set 'nope'"):
    registry.load("nope")
  with pytest.raises(UserError, match="unknown data set 'describe'"):   # a module, no load
    registry.load("describe")
  path = shared("ali_ccp", "torch_rechub_sample", "ali_ccp_val_sample.csv")
  np.testing.assert_array_equal(registry.load("aliccp", path=path).columns["ids"],
                                aliccp.load(path).columns["ids"])
