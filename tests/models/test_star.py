"""STAR (mtms_jax/models/star.py): the forward pass against NumPy from the paper's equations,
scene parameters that move only with their scene's rows, and a whole run through the
trainer, exported and scored."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import common
from mtms_jax import embedding, models, optim, serving
from mtms_jax.data import pipeline
from mtms_jax.eval import prediction
from mtms_jax.models import star
from mtms_jax.serving import export
from mtms_jax.train import step as step_lib
from mtms_jax.train import train_state

EPS = 1e-5


# Compile time is most of these tests: fewer XLA passes (tests/conftest.py).


def _model(schema, route="auto"):
  config = common.joint_config("star", "smoke")
  config.model.scene_route = route
  return models.get_model(schema, config.model), config


def _batch(tiny_data, size=64, scene=None):
  columns = tiny_data.columns
  if scene is not None:
    keep = np.flatnonzero(columns["scene"] == scene)
    columns = {k: v[keep] for k, v in columns.items()}
  return next(pipeline.train_iterator(columns, size, 1000, seed=0))


def _random_params(params, seed=0):
  """Every network weight and statistic drawn at random, so that no 1 or 0 hides a term."""
  rng = np.random.default_rng(seed)
  ranking = jax.tree.map(lambda x: rng.normal(0, 0.5, x.shape).astype(np.float32),
                         params["ranking"])
  ranking["statistics"]["var"] = rng.uniform(0.5, 1.5, ranking["statistics"]["var"].shape
                                             ).astype(np.float32)
  ranking["statistics"]["updates"] = np.arange(1, 1 + ranking["statistics"]["updates"].size,
                                               dtype=np.float32)
  return {**params, "ranking": ranking}


def _moving(stats, momentum=0.99):
  """The debiased moving averages eval normalizes with: sum / (1 - momentum ** updates)."""
  debias = 1 - momentum ** np.float64(stats["updates"])[:, None]
  return np.float64(stats["mean"]) / debias, np.float64(stats["var"]) / debias


def _reference_logits(net, x, scene, mean, var, tasks):
  """STAR's Eq. 2 (partitioned norm), Eq. 1 (star FCN) and the auxiliary logit, in NumPy."""
  n = net["norm"]
  z = ((x - mean[scene]) / np.sqrt(var[scene] + EPS) * (n["scale"] * n["scene_scale"][scene])
       + n["bias"] + n["scene_bias"][scene])

  def star(p, h, layers, relu_last):
    for i in range(layers):
      w = p[f"kernel{i}"][None] * p[f"scene_kernel{i}"][scene]        # (B, I, H): W * W_p
      h = np.einsum("bi,bih->bh", h, w) + p[f"bias{i}"] + p[f"scene_bias{i}"][scene]
      h = np.maximum(h, 0) if (i < layers - 1 or relu_last) else h
    return h

  h = star(net["bottom"], z, 1, relu_last=True)
  aux_in = np.concatenate([x, np.eye(mean.shape[0])[scene]], axis=1)
  a = net["auxiliary"]
  aux = np.maximum(aux_in @ a["dense0"]["kernel"] + a["dense0"]["bias"], 0)
  aux = aux @ a["dense1"]["kernel"] + a["dense1"]["bias"]
  return {t: star(net[t], h, 2, relu_last=False)[:, 0] + aux[:, i] for i, t in enumerate(tasks)}


@pytest.mark.parametrize("route", ["auto", "all", "gather", "grouped", "ragged"])
def test_forward_equals_numpy_from_the_paper(tiny_data, route):
  model, _ = _model(tiny_data.schema, route)
  params = _random_params(model.init(jax.random.key(0)))
  batch = _batch(tiny_data)
  rows = embedding.lookup(params["embedding"]["tables"],
                          models.embedding_index(model, batch, "joint"))
  x = np.asarray(model.star_input(rows, batch, "joint"), np.float64)
  scene = np.asarray(batch["scene"])
  net = jax.tree.map(lambda a: np.asarray(a, np.float64), params["ranking"]["network"])
  stats = params["ranking"]["statistics"]
  # Eval: the moving statistics.
  expected = _reference_logits(net, x, scene, *_moving(stats), ("ctr", "cvr"))
  measured = model.apply(params, rows, batch, "joint")
  for task in ("ctr", "cvr"):
    np.testing.assert_allclose(measured[f"{task}_logit"], expected[task], rtol=1e-5, atol=1e-5)
  # Training: each scene's rows normalized with their own mean and (biased) variance.
  mean = np.stack([x[scene == s].mean(0) for s in range(2)])
  var = np.stack([x[scene == s].var(0) for s in range(2)])
  expected = _reference_logits(net, x, scene, mean, var, ("ctr", "cvr"))
  measured = model.apply(params, rows, batch, "joint", train=True)
  for task in ("ctr", "cvr"):
    np.testing.assert_allclose(measured[f"{task}_logit"], expected[task], rtol=1e-5, atol=1e-5)


def _scene_leaves(ranking):
  """{name: (S, ...) array} of every scene-specific leaf: star kernels and biases, the
  partitioned norm's scale and bias, the moving statistics."""
  flat = {"/".join(str(k.key) for k in path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(ranking)}
  return {k: v for k, v in flat.items() if "scene_" in k or k.startswith("statistics/")}


def test_a_scenes_parameters_move_only_with_its_rows(tiny_data):
  model, config = _model(tiny_data.schema)
  params = model.init(jax.random.key(0))
  txs = optim.make_phase_txs(config, model, params)          # Adam, lazy Adam on the tables
  update = step_lib.make_update_fn(model, txs["joint"], "joint", config.phases.joint)
  before = _scene_leaves(params["ranking"])
  batch = _batch(tiny_data, scene=0)
  x = np.asarray(model.star_input(embedding.lookup(params["embedding"]["tables"],
                 models.embedding_index(model, batch, "joint")), batch, "joint"))
  state, _ = update(train_state.init_state(params, txs), batch)     # params donated
  after = _scene_leaves(state["params"]["ranking"])
  # norm scale and bias; kernel and bias of 5 star layers (bottom 1, 2 towers of 2); statistics
  assert len(after) == 2 + 2 * 5 + 3
  for name, value in after.items():
    np.testing.assert_array_equal(value[1], before[name][1], err_msg=name)  # scene 1: kept
    assert not np.allclose(value[0], before[name][0]), name                # scene 0: moved
  # The moving averages moved 1% from 0 towards scene 0's rows of the batch: read debiased,
  # after one update they are that batch's moments.
  np.testing.assert_allclose(after["statistics/mean"][0], 0.01 * x.mean(0), rtol=1e-4,
                             atol=1e-7)
  np.testing.assert_allclose(after["statistics/var"][0], 0.01 * x.var(0), rtol=1e-4)
  mean, var = model.moving_statistics(state["params"]["ranking"]["statistics"])
  np.testing.assert_allclose(mean[0], x.mean(0), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(var[0], x.var(0), rtol=1e-4)
  np.testing.assert_array_equal(after["statistics/updates"], [1.0, 0.0])


def test_a_trained_run_exports_and_scores_as_the_trainer_predicts(experiment_runs, tmp_path):
  workdir, results = experiment_runs("star")
  assert np.isfinite([results[f"test/all/{t}/auc"] for t in ("ctr", "cvr", "ctcvr")]).all()
  config, schema = export.load_run(str(workdir))
  model = models.get_model(schema, config.model)
  params, _ = export.restore_params(str(workdir), model, schema)
  # The checkpoint holds moving statistics trained away from their start (0 and 1).
  assert np.abs(np.asarray(params["ranking"]["statistics"]["mean"])).max() > 1e-3
  export.export(str(workdir), str(tmp_path))
  scorer = serving.load(str(tmp_path))
  batch = {k: v[:100] for k, v in _batch_columns(workdir).items()}
  served = scorer.score(batch)
  predict = prediction.make_predict_fn(model, prediction.prediction_phases(config, model))
  expected = jax.device_get(predict(params, batch))
  for task in ("ctr", "cvr"):
    np.testing.assert_allclose(served[task], expected[task], rtol=0, atol=1e-6)


def _batch_columns(workdir):
  schema = json.loads((workdir / "feature_schema.json").read_text())
  rng = np.random.default_rng(0)
  vocab = np.array([f["vocab_size"] for f in schema["sparse"]])
  n = 100
  return {"ids": (rng.random((n, len(vocab))) * vocab).astype(np.int32),
          "dense": rng.standard_normal((n, len(schema["dense"]))).astype(np.float32),
          "scene": rng.integers(0, len(schema["scenes"]), n).astype(np.int32)}


SCENE_ROUTES = [3, star.MAX_SELECT_SCENES + 2, star.MAX_ONE_HOT_SCENES + 4]


@pytest.mark.parametrize("num_scenes", SCENE_ROUTES)
def test_scene_moments_by_select_one_hot_and_gather(num_scenes):
  # Rows by selects (up to MAX_SELECT_SCENES scenes), then one-hot matmuls (sums always up
  # to MAX_ONE_HOT_SCENES), beyond gathers and scatter-adds.
  rng = np.random.default_rng(1)
  x = rng.normal(size=(200, 5)).astype(np.float32)
  scene = rng.integers(0, num_scenes - 1, 200).astype(np.int32)      # the last scene: no rows
  count, mean, var = star.scene_moments(x, scene, num_scenes)
  for s in range(num_scenes):
    rows = x[scene == s]
    assert count[s] == len(rows)
    np.testing.assert_allclose(mean[s], rows.mean(0) if len(rows) else 0, atol=1e-6)
    np.testing.assert_allclose(var[s], rows.var(0) if len(rows) else 0, atol=1e-5)
  np.testing.assert_array_equal(star.scene_rows(mean, scene), np.asarray(mean)[scene])


@pytest.mark.parametrize("num_scenes", SCENE_ROUTES)
def test_batch_norm_gradient_equals_autodiff_of_the_moments(num_scenes):
  """batch_norm_by_scene's closed-form gradient against autodiff of Eq. 2 with each scene's
  two-pass batch moments (a scene without rows included)."""
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(0.3, 1.5, (300, 7)), jnp.float32)
  scene = jnp.asarray(rng.integers(0, num_scenes - 1, 300), jnp.int32)
  scale = jnp.asarray(rng.uniform(0.5, 1.5, (num_scenes, 7)), jnp.float32)
  bias = jnp.asarray(rng.normal(size=(num_scenes, 7)), jnp.float32)
  dy = jnp.asarray(rng.normal(size=(300, 7)), jnp.float32)

  def autodiff_norm(x, scale, bias):
    _, mean, var = star.scene_moments(x, scene, num_scenes)
    return ((x - mean[scene]) * scale[scene] * jax.lax.rsqrt(var[scene] + EPS) + bias[scene])

  def closed_form_norm(x, scale, bias):
    return star.batch_norm_by_scene(x, scene, scale, bias, num_scenes, EPS, None)

  expected = jax.grad(lambda *a: jnp.sum(autodiff_norm(*a) * dy), argnums=(0, 1, 2))(
      x, scale, bias)
  measured = jax.grad(lambda *a: jnp.sum(closed_form_norm(*a) * dy), argnums=(0, 1, 2))(
      x, scale, bias)
  np.testing.assert_allclose(closed_form_norm(x, scale, bias), autodiff_norm(x, scale, bias),
                             rtol=1e-5, atol=1e-5)
  for e, m in zip(expected, measured):
    np.testing.assert_allclose(m, e, rtol=1e-4, atol=1e-5)
