"""Serving checks a request's values before casting them (issue 20, case 3)."""

import re

import jax
import numpy as np
import pytest

from experiments import common
from mtms_jax import errors, models, serving
from mtms_jax.data import synthetic
from mtms_jax.serving import export


@pytest.fixture(scope="module")
def scorer(tmp_path_factory):
  """An untrained smoke MTMS (2 scenes, 50 users, 20 ads, 1 dense field), exported."""
  out = tmp_path_factory.mktemp("exported")
  config = common.base_config("smoke")
  schema = synthetic.load(num_scenes=2, num_days=1, rows_per_day=100, num_users=50,
                          num_ads=20).schema
  model = models.get_model(schema, config.model)
  export.write_artifact(str(out), config, model, model.init(jax.random.key(0)),
                        {"model": "mtms"})
  return serving.load(str(out))


def valid_batch(n=3):
  """Ids below every vocabulary (the smallest, 'context', has 8)."""
  rng = np.random.default_rng(0)
  return {"ids": rng.integers(0, 8, (n, 5)).astype(np.int32),
          "dense": rng.standard_normal((n, 1)).astype(np.float32),
          "scene": (np.arange(n) % 2).astype(np.int32)}


def with_value(column, row, field, value, dtype):
  batch = valid_batch()
  batch[column] = batch[column].astype(dtype)
  if field is None:
    batch[column][row] = value
  else:
    batch[column][row, field] = value
  return batch


@pytest.mark.parametrize("column, field, value, dtype, message", [
    ("ids", 1, 2**32 + 3, np.int64,
     "row 1, field 'ad': 4294967299 is not an integer in [0, 20)"),
    ("ids", 0, -1, np.int64, "row 1, field 'user': -1 is not an integer in [0, 50)"),
    ("ids", 1, 3.7, np.float64, "row 1, field 'ad': 3.7 is not an integer in [0, 20)"),
    ("ids", 1, np.nan, np.float32, "row 1, field 'ad': nan is not an integer"),
    ("ids", 1, 2**64 - 1, np.uint64, "row 1, field 'ad': 18446744073709551615 is not"),
    ("scene", None, 0.5, np.float64, "row 1: 0.5 is not an integer "
     "in [0, 2)"),
    ("scene", None, 2, np.int64, "row 1: 2 is not an integer"),
    ("dense", 0, np.nan, np.float32,
     "row 1, field 'dense0': nan is not a finite float32"),
    ("dense", 0, -np.inf, np.float64, "row 1, field 'dense0': -inf is not a finite"),
    ("dense", 0, 1e39, np.float64, "row 1, field 'dense0': 1e+39 is not a finite"),
])
def test_a_value_that_a_cast_would_change_is_a_user_error(scorer, column, field, value,
                                                          dtype, message):
  with pytest.raises(errors.UserError, match="^" + re.escape(f"batch column {column!r}, {message}")):
    scorer.score(with_value(column, 1, field, value, dtype))


@pytest.mark.parametrize("column, value, message", [
    ("ids", [[1, 2, 3, 4, 5], [1, 2, "x", 4, 5], [0] * 5],
     "batch column 'ids', row 1: 'x' is not a number"),
    ("dense", [[0.5], [None], [1.0]], "batch column 'dense', row 1: None is not a number"),
    ("scene", np.array([True, False, True]), "batch column 'scene', row 0: True is not a number"),
    ("ids", [[1] * 5, [1] * 4, [1] * 5], "batch column 'ids': "),
])
def test_a_value_that_is_not_a_number_is_named_by_column_and_row(scorer, column, value,
                                                                 message):
  batch = valid_batch()
  batch[column] = value
  with pytest.raises(errors.UserError, match="^" + re.escape(message)):
    scorer.score(batch)


def test_other_integer_and_whole_float_dtypes_score_as_int32(scorer):
  batch = valid_batch()
  expected = scorer.score(batch)
  for ids_dtype, scene_dtype in ((np.int64, np.uint8), (np.float64, np.float32),
                                 (np.uint64, np.int16)):
    other = {"ids": batch["ids"].astype(ids_dtype), "dense": batch["dense"].astype(np.float64),
             "scene": batch["scene"].astype(scene_dtype)}
    served = scorer.score(other)
    for task in ("ctr", "cvr"):
      np.testing.assert_array_equal(served[task], expected[task])
  lists = {k: v.tolist() for k, v in batch.items()}
  np.testing.assert_array_equal(scorer.score(lists)["ctr"], expected["ctr"])


def test_zero_rows_score_as_empty_arrays(scorer):
  for batch in ({"ids": np.zeros((0, 5), np.int32), "dense": np.zeros((0, 1), np.float32),
                 "scene": np.zeros(0, np.int32)},
                {"ids": [], "dense": [], "scene": []}):
    served = scorer.score(batch)
    assert sorted(served) == ["ctr", "cvr"]
    for task in ("ctr", "cvr"):
      assert served[task].shape == (0,) and served[task].dtype == np.float32


def test_a_single_candidate_scores_as_a_batch_of_one(scorer):
  batch = valid_batch()
  expected = scorer.score(batch)
  served = scorer.score({"ids": batch["ids"][2], "dense": batch["dense"][2],
                         "scene": batch["scene"][2]})
  for task in ("ctr", "cvr"):
    assert served[task].shape == (1,)
    np.testing.assert_allclose(served[task], expected[task][2:], rtol=0, atol=1e-6)


def test_missing_columns_and_wrong_shapes_are_user_errors(scorer):
  batch = valid_batch()
  with pytest.raises(errors.UserError, match=r"batch lacks columns \['dense'\]"):
    scorer.score({"ids": batch["ids"], "scene": batch["scene"]})
  with pytest.raises(errors.UserError, match=r"'ids' has shape \(3, 4\), expected \(3, 5\)"):
    scorer.score({**batch, "ids": batch["ids"][:, :4]})
