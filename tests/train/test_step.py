"""The row-wise (sparse) training step against the dense optax step it replaces."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from experiments import common
from mtms_jax import embedding, losses, models, optim
from mtms_jax.data import pipeline
from mtms_jax.train import step as step_lib
from mtms_jax.train import train_state

LR = 0.05


@functools.cache
def _model_and_params(schema, model_name):
  config = (common.base_config("smoke") if model_name == "mtms"
            else common.joint_config(model_name, "smoke"))
  model = models.get_model(schema, config.model)
  return config, model, jax.tree.map(np.array, model.init(jax.random.key(0)))


def _setup(tiny_data, embedding_optimizer, name="adam", model_name="mtms"):
  config, model, params = _model_and_params(tiny_data.schema, model_name)
  config = ml_collections.ConfigDict(config.to_dict())
  for p in config.phases.values():
    p.optimizer.update(name=name, learning_rate=LR, embedding=embedding_optimizer)
  txs = optim.make_phase_txs(config, model, params)
  update_fns = {p: step_lib.make_update_fn(model, tx, p, config.phases[p]) for p, tx in txs.items()}
  return config, model, params, txs, update_fns


def _batches(tiny_data, n):
  it = pipeline.train_iterator(tiny_data.columns, 64, n, seed=3)
  return [next(it) for _ in range(n)]


def _train(tiny_data, embedding_optimizer, name, batches, phase, model_name="mtms"):
  _, _, params, txs, update_fns = _setup(tiny_data, embedding_optimizer, name, model_name)
  state = train_state.init_state(jax.tree.map(jnp.array, params), txs)
  for batch in batches:
    state, _ = update_fns[phase](state, batch)
  return state


def _assert_close(a, b):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=0, atol=1e-6), a, b)


@pytest.mark.parametrize("model_name, phase", [("mtms", "embedding"), ("esmm", "joint")])
def test_sparse_sgd_step_equals_dense_sgd_step(tiny_data, model_name, phase):
  batches = _batches(tiny_data, 4)
  sparse_state = _train(tiny_data, "sgd", "sgd", batches, phase, model_name)
  dense_state = _train(tiny_data, "dense", "sgd", batches, phase, model_name)
  _assert_close(sparse_state["params"], dense_state["params"])


def test_lazy_adam_step_equals_dense_adam_step_on_a_repeated_batch(tiny_data):
  """The same batch every step touches the same rows every step; untouched rows have zero
  moments under dense Adam, so it moves them by exactly 0: both must agree on every row."""
  batches = _batches(tiny_data, 1) * 4
  sparse_state = _train(tiny_data, "lazy_adam", "adam", batches, "embedding")
  dense_state = _train(tiny_data, "dense", "adam", batches, "embedding")
  _assert_close(sparse_state["params"], dense_state["params"])


def test_rowwise_adagrad_step_equals_dense_rowwise_adagrad_on_the_table_gradient(tiny_data):
  config, model, params, txs, update_fns = _setup(tiny_data, "rowwise_adagrad")
  state = train_state.init_state(jax.tree.map(jnp.array, params), txs)
  tables = {k: np.array(t, copy=True) for k, t in params["embedding"]["tables"].items()}
  accumulators = {k: np.full(t.shape[0], 0.1, np.float32) for k, t in tables.items()}

  @jax.jit
  def table_grads(params, batch):
    def loss(tables):
      rows = embedding.lookup(tables, models.embedding_index(model, batch, "embedding"))
      outputs = model.apply(optim.with_tables(params, tables), rows, batch, "embedding")
      return losses.combine(outputs, batch, config.phases.embedding.loss)[0]
    return jax.grad(loss)(params["embedding"]["tables"])

  for batch in _batches(tiny_data, 3):
    grads = table_grads(state["params"], batch)
    state, _ = update_fns["embedding"](state, batch)
    for key, g in grads.items():
      accumulators[key] += np.mean(np.asarray(g) ** 2, axis=1)
      tables[key] -= LR * np.asarray(g) / (np.sqrt(accumulators[key])[:, None] + 1e-8)
      new_table = np.asarray(state["params"]["embedding"]["tables"][key])
      np.testing.assert_allclose(new_table, tables[key], rtol=0, atol=1e-6)
      np.testing.assert_allclose(state["opt"]["embedding"]["tables"][key].accumulator,
                                 accumulators[key], rtol=1e-6)
      tables[key] = new_table.copy()     # keep rounding differences from compounding


def test_sparse_state_holds_no_dense_table_moments(tiny_data):
  _, _, params, txs, _ = _setup(tiny_data, "lazy_adam")
  opt = train_state.init_state(params, txs)["opt"]["embedding"]
  towers = sum(np.size(x) for x in jax.tree.leaves(params["embedding"]["towers"]))
  # Adam mu and nu for the towers plus its count; the tables' moments are row-wise.
  assert sum(np.size(x) for x in jax.tree.leaves(opt["dense"])) == 2 * towers + 1
  assert set(opt["tables"]) == set(params["embedding"]["tables"])


def test_unknown_embedding_optimizer_and_clip_norm_are_errors():
  params = {"embedding": {"tables": {"dim4": jnp.zeros((3, 4))}}, "ranking": {}}
  config = common.phase().optimizer
  config.embedding = "adagrad"
  with pytest.raises(ValueError, match="optimizer.embedding"):
    optim.make_phase_optimizer(config, params, ("embedding",))
  config.update(embedding="lazy_adam", clip_norm=1.0)
  with pytest.raises(ValueError, match="clip_norm"):
    optim.make_phase_optimizer(config, params, ("embedding",))
  # A phase that freezes the tables does not care how they would be trained.
  optim.make_phase_optimizer(config, params, ("ranking",))
