"""Export for serving: the exported graph scores as the trainer predicts."""

import json
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments import common
from mtms_jax import errors, models, serving
from mtms_jax.data import synthetic
from mtms_jax.eval import prediction
from mtms_jax.serving import bench as serving_bench
from mtms_jax.serving import export
from mtms_jax.train import trainer

REPO = pathlib.Path(__file__).resolve().parents[2]


def in_framework_predictions(workdir, columns):
  """The trainer's own predictions for `columns`, from the workdir's latest checkpoint."""
  config, schema = export.load_run(str(workdir))
  model = models.get_model(schema, config.model)
  params, _ = export.restore_params(str(workdir), model, schema)
  return predictions(config, model, params, columns)


def predictions(config, model, params, columns):
  predict_fn = prediction.make_predict_fn(model, prediction.prediction_phases(config, model))
  return jax.device_get(predict_fn(params, columns))


def random_columns(rng, vocab, num_dense, num_scenes, n):
  return {"ids": (rng.random((n, len(vocab))) * vocab).astype(np.int32),
          "dense": rng.standard_normal((n, num_dense)).astype(np.float32),
          "scene": rng.integers(0, num_scenes, n).astype(np.int32)}


@pytest.fixture(scope="module")
def plain_ranking_run(tmp_path_factory):
  """The smoke run without the residual ranking network (its heads alone predict)."""
  workdir = tmp_path_factory.mktemp("plain_ranking")
  config = common.base_config("smoke")
  config.model.ranking_residual = False
  trainer.train_and_evaluate(config, str(workdir))
  return workdir


@pytest.mark.parametrize("run", ["smoke_run", "plain_ranking_run"])
def test_serving_scores_equal_in_framework_predictions(run, request, tmp_path):
  workdir = request.getfixturevalue(run)
  info = export.export(str(workdir), str(tmp_path))
  scorer = serving.load(str(tmp_path))
  assert list(info["scenes"]) == scorer.scenes == ["scene0", "scene1"]
  schema_json = json.loads((tmp_path / "schema.json").read_text())
  assert [f["name"] for f in schema_json["sparse"]] == ["user", "ad", "user_group",
                                                        "ad_group", "context"]
  # Ids valid for the smoke run's data (50 users, 20 ads), every scene; two batch sizes
  # through the one graph (its batch dimension is symbolic).
  rng = np.random.default_rng(0)
  vocab = np.array([f["vocab_size"] for f in schema_json["sparse"]])
  for n in (1, 257):
    columns = random_columns(rng, vocab, 1, 2, n)
    served = scorer.score(columns)
    expected = in_framework_predictions(workdir, columns)
    for task in ("ctr", "cvr"):
      assert served[task].shape == (n,)
      np.testing.assert_allclose(served[task], expected[task], rtol=0, atol=1e-6)
  # The tables are inputs of the graph, not constants in it.
  tables = [k for k in json.loads((tmp_path / "manifest.json").read_text())
            if k.startswith("embedding/tables/")]
  assert tables
  assert (tmp_path / "model.stablehlo").stat().st_size < sum(
      scorer.params[k].nbytes for k in tables)


def test_export_of_many_scenes_with_a_symbolic_batch(tmp_path):
  """Eight scenes: the towers take the grouped route, whose tiles depend on the batch size."""
  config = common.base_config("smoke")
  schema = synthetic.load(num_scenes=8, num_days=1, rows_per_day=100, num_users=50,
                          num_ads=20).schema
  model = models.get_model(schema, config.model)
  params = model.init(jax.random.key(0))
  export.write_artifact(str(tmp_path), config, model, params, {"model": "mtms"})
  scorer = serving.load(str(tmp_path))
  vocab = np.array([f.vocab_size for f in schema.sparse])
  for n in (3, 100):
    columns = random_columns(np.random.default_rng(n), vocab, 1, 8, n)
    served, expected = scorer.score(columns), predictions(config, model, params, columns)
    for task in ("ctr", "cvr"):
      np.testing.assert_allclose(served[task], expected[task], rtol=0, atol=1e-6)


def test_serving_rejects_ids_outside_the_vocabulary(smoke_run, tmp_path):
  export.export(str(smoke_run), str(tmp_path))
  scorer = serving.load(str(tmp_path))
  batch = {"ids": np.zeros((2, 5), np.int32), "dense": np.zeros((2, 1), np.float32),
           "scene": np.zeros(2, np.int32)}
  batch["ids"][1, 1] = 20                 # the smoke data has 20 ads
  with pytest.raises(ValueError, match=r"row 1, field 'ad': 20 is not an integer in \[0, 20\)"):
    scorer.score(batch)


def test_export_of_a_folder_without_a_run_is_a_user_error(tmp_path):
  with pytest.raises(errors.UserError, match="not a trained run"):
    export.export(str(tmp_path), str(tmp_path / "out"))
  proc = subprocess.run([sys.executable, "-m", "mtms_jax.export", "--workdir", str(tmp_path),
                         "--out", str(tmp_path / "out")], cwd=REPO, capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == errors.EXIT_USER_ERROR
  assert proc.stderr.strip().splitlines() == [
      f"error: --workdir={str(tmp_path)!r} is not a trained run's folder (it needs "
      "config.json, feature_schema.json and checkpoints/)"]


def test_serving_bench_reports_percentiles_per_batch_size(smoke_run, tmp_path):
  export.export(str(smoke_run), str(tmp_path))
  rows = serving_bench.measure(serving.load(str(tmp_path)), [1, 16], calls=5, warmup=1,
                               rounds=2)
  assert [r["batch"] for r in rows] == [1, 16]
  for r in rows:
    assert 0 < r["p50_ms"] <= r["p99_ms"]
  assert "| 16 |" in serving_bench.format_table(rows)
