"""Helpers of the multi-scene joint models' tests (test_pepnet.py, test_m2m.py)."""

import dataclasses
import functools
import json

import jax
import numpy as np
import pytest

from experiments import common
from mtms_jax import embedding, models, serving
from mtms_jax.data import pipeline
from mtms_jax.eval import prediction
from mtms_jax.serving import export


@pytest.fixture(scope="session")
def joint_inputs(tiny_data):
  """`network_inputs` on tiny_data, each model's built and initialised once a session."""
  return functools.cache(functools.partial(network_inputs, tiny_data))


@pytest.fixture
def trained_and_served(experiment_runs, tmp_path):
  """`export_and_score` of the session's run of experiments/<name>.py (conftest.
  experiment_runs), in the test's tmp_path."""
  return lambda name: export_and_score(name, *experiment_runs(name), tmp_path)


def network_inputs(tiny_data, name, tasks=None, n=64, seed=0):
  """(model, params, float64 numpy copy of params['ranking'], numpy network input
  [E, dense, one-hot scene] (n, I), scene (n,)) of joint model `name` at its smoke config,
  on tiny_data's schema (or with only `tasks`)."""
  schema = tiny_data.schema if tasks is None else dataclasses.replace(tiny_data.schema,
                                                                      tasks=tasks)
  model = models.get_model(schema, common.joint_config(name, "smoke").model)
  params = model.init(jax.random.key(seed))
  batch = next(iter(pipeline.train_iterator(tiny_data.columns, n, 1, seed=seed)))
  rows = embedding.lookup(params["embedding"]["tables"], models.embedding_index(
      model, batch, "joint"))
  embedded = np.asarray(embedding.flatten_rows(rows)[:, 0], np.float64)
  scene = np.asarray(batch["scene"])
  x = np.concatenate([embedded, np.asarray(batch["dense"], np.float64),
                      np.eye(schema.num_scenes)[scene]], axis=1)
  ranking = jax.tree.map(lambda leaf: np.asarray(leaf, np.float64), params["ranking"])
  return model, params, ranking, x, scene


def export_and_score(name, workdir, results, tmp_path):
  """Exports the trained run of joint model `name` in `workdir` (its smoke config,
  common.joint_config(name, 'smoke'), through the trainer) and checks that the served scores
  equal the trainer's predictions; returns the run's results."""
  assert json.loads((workdir / "config.json").read_text())["model"] == json.loads(
      common.joint_config(name, "smoke").to_json())["model"]
  out = tmp_path / "export"
  export.export(str(workdir), str(out))
  config, schema = export.load_run(str(workdir))
  model = models.get_model(schema, config.model)
  params, _ = export.restore_params(str(workdir), model, schema)
  predict_fn = prediction.make_predict_fn(model, prediction.prediction_phases(config, model))
  rng = np.random.default_rng(0)
  vocab = np.array([f.vocab_size for f in schema.sparse])
  columns = {"ids": (rng.random((37, len(vocab))) * vocab).astype(np.int32),
             "dense": rng.standard_normal((37, schema.num_dense)).astype(np.float32),
             "scene": rng.integers(0, schema.num_scenes, 37).astype(np.int32)}
  served, expected = serving.load(str(out)).score(columns), predict_fn(params, columns)
  for task in schema.tasks:
    np.testing.assert_allclose(served[task], np.asarray(expected[task]), rtol=0, atol=1e-6)
  return results
