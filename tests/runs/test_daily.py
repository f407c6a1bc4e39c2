"""Time slots: `init_from` warm starts, the resume order, and the day-by-day run."""

import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from experiments import common, daily
from mtms_jax import checkpoint, models, runs
from mtms_jax.data import registry
from mtms_jax.train import loop
from tests.data.logs.test_logs import schema_config, write_logs

pytestmark = pytest.mark.filterwarnings("ignore:Sharding info not provided")


def _fresh(config):
  data = registry.load_data(config.data)
  model = models.get_model(data.schema, config.model)
  return model.init(jax.random.key(7)), data.schema.to_dict()


def _saved_params(workdir, step):
  path = os.path.abspath(os.path.join(workdir, checkpoint.CHECKPOINTS, str(step),
                                      checkpoint.STATE))
  return jax.tree.map(np.asarray, ocp.PyTreeCheckpointer().restore(path)["params"])


def _assert_equal(a, b):
  np.testing.assert_equal(jax.tree.map(np.asarray, a), jax.tree.map(np.asarray, b))


def test_warm_start_loads_the_embedding_subtree_only(smoke_run):
  fresh, schema = _fresh(common.base_config("smoke"))
  params, source = checkpoint.warm_start(str(smoke_run), fresh, schema, ("embedding",))
  assert (source["step"], source["loaded"]) == (18, ["embedding"])    # the workdir's latest
  _assert_equal(params["embedding"], _saved_params(smoke_run, 18)["embedding"])
  _assert_equal(params["ranking"], fresh["ranking"])
  # A step folder names one checkpoint.
  _, source = checkpoint.warm_start(str(smoke_run / "checkpoints" / "16"), fresh, schema,
                                    ("embedding",))
  assert source["step"] == 16


def test_warm_start_loads_the_ranking_network_too_when_asked(smoke_run):
  fresh, schema = _fresh(common.base_config("smoke"))
  params, _ = checkpoint.warm_start(str(smoke_run), fresh, schema, ("embedding", "ranking"))
  _assert_equal(params, _saved_params(smoke_run, 18))


def test_schema_or_shape_mismatch_is_a_clear_error(smoke_run):
  fresh, schema = _fresh(common.base_config("smoke"))
  other = json.loads(json.dumps(schema))
  other["sparse"][0]["vocab_size"] += 1
  field, vocab = other["sparse"][0]["name"], other["sparse"][0]["vocab_size"]
  with pytest.raises(ValueError, match=rf"different feature schema \(sparse.{field}.vocab_size: "
                                       rf"{vocab - 1} -> {vocab}\)"):
    checkpoint.warm_start(str(smoke_run), fresh, other, ("embedding",))
  config = common.base_config("smoke")
  config.model.sharing = "tasks"               # 2 components instead of 4: other table shapes
  fewer, schema = _fresh(config)
  with pytest.raises(ValueError, match=r"does not fit this model: params/embedding/tables/"
                                       r"\S+ is float32\[\d+, \d+\] there"):
    checkpoint.warm_start(str(smoke_run), fewer, schema, ("embedding",))


def test_bad_init_from_is_a_clear_error(smoke_run, tmp_path):
  fresh, schema = _fresh(common.base_config("smoke"))
  with pytest.raises(FileNotFoundError, match="init_from='/no/such/run': no such folder"):
    checkpoint.warm_start("/no/such/run", fresh, schema, ("embedding",))
  with pytest.raises(FileNotFoundError, match="no complete checkpoint there"):
    checkpoint.warm_start(str(tmp_path), fresh, schema, ("embedding",))
  with pytest.raises(ValueError, match=r"config.init_load=\('towers',\)"):
    checkpoint.warm_start(str(smoke_run), fresh, schema, ("towers",))


def test_own_checkpoint_comes_before_init_from(smoke_run, tmp_path, monkeypatch):
  config = common.base_config("smoke")
  config.init_from = str(smoke_run)
  monkeypatch.setenv(loop.TEST_SIGNAL_ENV, "5:INT")
  with pytest.raises(loop.Interrupted):
    runs.run(config, str(tmp_path))
  monkeypatch.delenv(loop.TEST_SIGNAL_ENV)
  runs.run(config, str(tmp_path))
  info = json.loads((tmp_path / "run.json").read_text())
  assert info["resumed_from_step"] == 5                       # 1. its own checkpoint ...
  assert info["warm_start"]["path"].endswith("checkpoints/18")  # ... of a run warm from 2.


def test_day_by_day_run_warm_starts_each_day_from_the_day_before(tmp_path):
  config = daily.get_config("smoke")            # test days 2 and 3, window 2
  results = runs.run(config, str(tmp_path))
  for day in (2, 3):
    for key in ("test/scene0/cvr/auc", "test/all/ctcvr/mae", "train_steps"):
      assert f"day{day}/{key}" in results
  assert results["test/all/ctr/auc"] == results["day3/test/all/ctr/auc"]
  assert json.loads((tmp_path / "results.json").read_text()) == results
  assert (tmp_path / "metrics_over_days.png").stat().st_size > 0
  day2, day3 = tmp_path / "day2", tmp_path / "day3"
  assert json.loads((day2 / "config.json").read_text())["train_days"] == [0, 1]
  assert json.loads((day3 / "config.json").read_text())["train_days"] == [1, 2]
  assert json.loads((day2 / "run.json").read_text())["warm_start"] is None
  warm = json.loads((day3 / "run.json").read_text())["warm_start"]
  assert warm["path"] == str(day2 / "checkpoints" / "12") and warm["loaded"] == ["embedding"]
  # A rerun reads the finished days back instead of training them again.
  mtime = (day3 / "results.json").stat().st_mtime_ns
  assert runs.run(config, str(tmp_path)) == results
  assert (day3 / "results.json").stat().st_mtime_ns == mtime


def test_a_schema_files_validation_day_is_neither_a_training_nor_a_test_day(tmp_path):
  # train, valid, test files are days 0, 1, 2: day 2 trains on day 0 and stops early on day 1.
  config = daily.get_config("smoke")
  config.daily.update(first_test_day=1, last_test_day=2, window=1)
  config = schema_config(config, write_logs(tmp_path))
  results = runs.run(config, str(tmp_path / "daily"))
  assert not (tmp_path / "daily" / "day1").exists()
  day2 = json.loads((tmp_path / "daily" / "day2" / "config.json").read_text())
  assert (day2["train_days"], day2["test_day"], day2["validation"]["day"]) == ([0], 2, 1)
  assert results["day2/val/all/ctr/count"] == 300 and "day2/test/all/ctr/auc" in results
