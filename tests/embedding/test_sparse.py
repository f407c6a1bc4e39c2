"""Row-wise optimizers against dense references on the full table gradient."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mtms_jax import embedding
from mtms_jax.embedding import sparse
from mtms_jax.schema import FeatureSchema, SparseField

NUM_ROWS, DIM = 64, 4
LOOKUP_SHAPE = (8, 2, 3)   # (B, K, F), as from embedding.row_index
STEPS = 5


def _batch(key: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Rows skewed to a few, so with heavy duplicates, and the loss weights.

  Rows >= NUM_ROWS - 16 are never drawn.
  """
  k_rows, k_weights = jax.random.split(key)
  u = jax.random.uniform(k_rows, LOOKUP_SHAPE)
  rows = ((NUM_ROWS - 16) * u ** 6).astype(jnp.int32)
  return rows, jax.random.normal(k_weights, LOOKUP_SHAPE + (DIM,))


def _loss(gathered: jax.Array, weights: jax.Array) -> jax.Array:
  # Nonlinear, so duplicate lookups of a row get different gradients.
  return jnp.sum(jnp.sin(3.0 * gathered * weights))


def _row_grads(table, rows, weights):
  return jax.grad(_loss)(jnp.take(table, rows, axis=0, mode="clip"), weights)


def _dense_grad(table, rows, weights):
  return jax.grad(lambda t: _loss(jnp.take(t, rows, axis=0, mode="clip"), weights))(table)


def _touched(rows):
  return jnp.zeros(NUM_ROWS, bool).at[rows.reshape(-1)].set(True)


class DenseRef(NamedTuple):
  """A dense optimizer on the full table gradient; `touched` marks the looked-up rows."""
  init: Callable[[jax.Array], Any]
  step: Callable[[jax.Array, Any, jax.Array, jax.Array], tuple[jax.Array, Any]]


def dense_rowwise_adagrad(lr, initial_accumulator_value=0.1, eps=1e-8) -> DenseRef:
  def init(table):
    return jnp.full(table.shape[:1], initial_accumulator_value, table.dtype)

  def step(table, acc, grad, touched):
    del touched   # untouched rows have a zero gradient: nothing changes for them
    acc = acc + jnp.mean(grad ** 2, axis=1)
    return table - (lr / (jnp.sqrt(acc) + eps))[:, None] * grad, acc

  return DenseRef(init, step)


def dense_optax(tx: optax.GradientTransformation, restrict: bool) -> DenseRef:
  """optax on the full table; with `restrict`, untouched rows keep row and moments."""

  def keep_untouched(new, old, touched):
    if not restrict or new.ndim == 0:   # the step count advances every step
      return new
    return jnp.where(touched.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)

  def step(table, state, grad, touched):
    updates, new_state = tx.update(grad, state, table)
    new_table = optax.apply_updates(table, updates)
    new_state = jax.tree.map(lambda n, o: keep_untouched(n, o, touched), new_state, state)
    return keep_untouched(new_table, table, touched), new_state

  return DenseRef(tx.init, step)


def _initial_table(seed=0):
  return 0.1 * jax.random.normal(jax.random.key(seed), (NUM_ROWS, DIM))


def _batches(seed=1, steps=STEPS):
  batches = [_batch(key) for key in jax.random.split(jax.random.key(seed), steps)]
  for rows, _ in batches:
    assert np.unique(rows).size < rows.size / 2, "the tests need heavy duplicates"
  return batches


def _run_sparse(tx: sparse.RowwiseOptimizer, batches):
  table = _initial_table()
  state = tx.init(table)
  for rows, weights in batches:
    table, state = tx.update(table, state, rows, _row_grads(table, rows, weights))
  return table, state


def _run_dense(ref: DenseRef, batches):
  table = _initial_table()
  state = ref.init(table)
  for rows, weights in batches:
    table, state = ref.step(table, state, _dense_grad(table, rows, weights), _touched(rows))
  return table, state


def test_rowwise_adagrad_matches_dense():
  batches = _batches()
  table, state = _run_sparse(sparse.rowwise_adagrad(0.1), batches)
  ref_table, ref_acc = _run_dense(dense_rowwise_adagrad(0.1), batches)
  assert np.max(np.abs(table - ref_table)) < 1e-5
  assert np.max(np.abs(state.accumulator - ref_acc)) < 1e-5


def test_lazy_adam_matches_optax_adam_restricted_to_touched_rows():
  batches = _batches()
  table, state = _run_sparse(sparse.lazy_adam(0.01), batches)
  ref_table, (adam_state, _) = _run_dense(dense_optax(optax.adam(0.01), restrict=True),
                                          batches)
  # Exact on CPU, where both sides sum a row's duplicates in the same order.
  np.testing.assert_array_equal(table, ref_table)
  np.testing.assert_array_equal(state.mu, adam_state.mu)
  np.testing.assert_array_equal(state.nu, adam_state.nu)
  assert state.count == adam_state.count == STEPS


def test_lazy_adam_follows_dense_adam_for_a_row_touched_every_step():
  batches = _batches()
  assert all((rows == 0).any() for rows, _ in batches)
  table, _ = _run_sparse(sparse.lazy_adam(0.01), batches)
  ref_table, _ = _run_dense(dense_optax(optax.adam(0.01), restrict=False), batches)
  np.testing.assert_array_equal(table[0], ref_table[0])
  # Dense Adam keeps moving rows on momentum after their last touch; lazy Adam does not.
  assert (table != ref_table).any()


def test_sgd_equals_optax_sgd_exactly():
  batches = _batches()
  table, _ = _run_sparse(sparse.sgd(0.1), batches)
  ref_table, _ = _run_dense(dense_optax(optax.sgd(0.1), restrict=False), batches)
  np.testing.assert_array_equal(table, ref_table)


OPTIMIZERS = {"sgd": lambda: sparse.sgd(0.1),
              "rowwise_adagrad": lambda: sparse.rowwise_adagrad(0.1),
              "lazy_adam": lambda: sparse.lazy_adam(0.01)}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_untouched_rows_stay_bitwise_unchanged(name):
  tx = OPTIMIZERS[name]()
  batches = _batches()
  table, initial_state = _initial_table(), tx.init(_initial_table())
  new_table, state = _run_sparse(tx, batches)
  touched = np.asarray(_touched(jnp.stack([rows for rows, _ in batches])))
  assert 0 < touched.sum() < NUM_ROWS
  np.testing.assert_array_equal(new_table[~touched], table[~touched])
  assert (new_table[touched] != table[touched]).any(axis=1).all()
  for field in state._fields:
    if field not in ("owner", "count"):
      np.testing.assert_array_equal(getattr(state, field)[~touched],
                                    getattr(initial_state, field)[~touched])


def test_rows_are_clipped_like_lookup():
  table = _initial_table()
  rows = jnp.array([[-3, 0, NUM_ROWS - 1, NUM_ROWS + 5]])
  weights = jax.random.normal(jax.random.key(3), rows.shape + (DIM,))
  tx = sparse.sgd(0.1)
  new_table, _ = tx.update(table, tx.init(table), rows, _row_grads(table, rows, weights))
  expected = table - 0.1 * _dense_grad(table, rows, weights)
  np.testing.assert_array_equal(new_table, expected)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_jitted_donated_update_compiles_once(name):
  tx = OPTIMIZERS[name]()
  traces = []

  def update(table, state, rows, row_grads):
    traces.append(1)
    return tx.update(table, state, rows, row_grads)

  step = jax.jit(update, donate_argnums=(0, 1))
  table = _initial_table()
  state = tx.init(table)
  eager_table, eager_state = table.copy(), jax.tree.map(jnp.copy, state)
  with warnings.catch_warnings():
    warnings.simplefilter("error")   # e.g. "Some donated buffers were not usable"
    for rows, weights in _batches(steps=3):
      old_table = table
      table, state = step(table, state, rows, _row_grads(table, rows, weights))
      assert old_table.is_deleted()
      eager_table, eager_state = tx.update(eager_table, eager_state, rows,
                                           _row_grads(eager_table, rows, weights))
  assert len(traces) == 1
  np.testing.assert_allclose(table, eager_table, rtol=0, atol=1e-6)


def _tiny_model():
  """Three fields over two dims and three components, and a logistic loss of the rows."""
  schema = FeatureSchema(sparse=(SparseField("user", 30, dim=4), SparseField("item", 20, dim=4),
                                 SparseField("cat", 10, dim=8)))
  layout = embedding.make_layout(schema, num_components=3)
  keys = jax.random.split(jax.random.key(7), 5)
  batch, k = 16, 2
  vocab = jnp.array([f.vocab_size for f in schema.sparse])
  # Few distinct ids, so rows repeat across examples.
  ids = (vocab * jax.random.uniform(keys[0], (batch, 3)) ** 3).astype(jnp.int32)
  components = jax.random.randint(keys[1], (batch, k), 0, 3)
  index = embedding.row_index(layout, ids, components)
  w = jax.random.normal(keys[2], (layout.width,))
  labels = jax.random.bernoulli(keys[3], 0.3, (batch, k)).astype(jnp.float32)

  def loss_from_rows(rows):
    logits = embedding.flatten_rows(rows) @ w
    return optax.sigmoid_binary_cross_entropy(logits, labels).mean()

  return embedding.init_tables(keys[4], layout), index, loss_from_rows


@pytest.mark.parametrize("tx, ref", [
    (sparse.rowwise_adagrad(0.5), dense_rowwise_adagrad(0.5)),
    (sparse.lazy_adam(0.01), dense_optax(optax.adam(0.01), restrict=False)),
], ids=["rowwise_adagrad", "lazy_adam"])
def test_end_to_end_through_lookup(tx, ref):
  """Same index every step, so every touched row is touched every step and lazy Adam must
  follow dense Adam on those rows."""
  tables, index, loss_from_rows = _tiny_model()

  @jax.jit
  def sparse_step(tables, state):
    row_grads = jax.grad(loss_from_rows)(embedding.lookup(tables, index))
    return sparse.apply_tables(tx, tables, state, index, row_grads)

  @jax.jit
  def dense_step(tables, state):
    grads = jax.grad(lambda t: loss_from_rows(embedding.lookup(t, index)))(tables)
    new = {key: ref.step(tables[key], state[key], grads[key], None) for key in tables}
    return {key: n[0] for key, n in new.items()}, {key: n[1] for key, n in new.items()}

  sparse_tables, sparse_state = tables, sparse.init_tables_state(tx, tables)
  dense_tables, dense_state = tables, {key: ref.init(t) for key, t in tables.items()}
  for _ in range(4):
    sparse_tables, sparse_state = sparse_step(sparse_tables, sparse_state)
    dense_tables, dense_state = dense_step(dense_tables, dense_state)
  for key in tables:
    touched = np.zeros(tables[key].shape[0], bool)
    touched[np.asarray(index[key]).reshape(-1)] = True
    np.testing.assert_allclose(sparse_tables[key][touched], dense_tables[key][touched],
                               rtol=0, atol=1e-6)
    np.testing.assert_array_equal(sparse_tables[key][~touched], tables[key][~touched])
    assert (sparse_tables[key][touched] != tables[key][touched]).any()


@pytest.mark.parametrize("name, ref", [
    ("sgd", lambda wd: optax.chain(optax.add_decayed_weights(wd), optax.sgd(0.1))),
    ("lazy_adam", lambda wd: optax.chain(optax.add_decayed_weights(wd), optax.adam(0.01)))])
def test_weight_decay_is_l2_on_the_touched_rows(name, ref):
  batches = _batches()
  tx = {"sgd": sparse.sgd(0.1, weight_decay=0.3),
        "lazy_adam": sparse.lazy_adam(0.01, weight_decay=0.3)}[name]
  table, _ = _run_sparse(tx, batches)
  ref_table, _ = _run_dense(dense_optax(ref(0.3), restrict=True), batches)
  np.testing.assert_allclose(table, ref_table, rtol=0, atol=1e-6)
  undecayed, _ = _run_sparse(OPTIMIZERS[name](), batches)
  ever_touched = np.any([_touched(rows) for rows, _ in batches], axis=0)
  assert (table != undecayed).any()       # (Adam's first step ignores the gradient's size)
  np.testing.assert_array_equal(table[~ever_touched], undecayed[~ever_touched])


def _first_step(name):
  """(optimizer, table, rows, row gradients) of one step from the initial table."""
  rows, weights = _batches(steps=1)[0]
  table = _initial_table()
  return OPTIMIZERS[name](), table, rows, _row_grads(table, rows, weights)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_lr_scale_scales_the_step(name):
  tx, table, rows, grads = _first_step(name)
  full, _ = tx.update(table, tx.init(table), rows, grads)
  half, _ = tx.update(table, tx.init(table), rows, grads, lr_scale=0.5)
  np.testing.assert_allclose(half - table, 0.5 * (full - table), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_held_rows_keep_their_values_and_their_state_steps(name):
  # Per-component early stopping holds a stopped component's rows (train/step.py): held
  # rows stay bitwise, the others and every row's optimizer state update as without hold.
  tx, table, rows, grads = _first_step(name)
  hold = rows % 2 == 1                              # every lookup of an odd row
  free, free_state = tx.update(table, tx.init(table), rows, grads)
  held, held_state = tx.update(table, tx.init(table), rows, grads, hold=hold)
  odd = np.arange(NUM_ROWS) % 2 == 1
  assert (free[odd & _touched(rows)] != table[odd & _touched(rows)]).any()
  np.testing.assert_array_equal(held[odd], table[odd])
  np.testing.assert_array_equal(held[~odd], free[~odd])
  for got, want in zip(jax.tree.leaves(held_state), jax.tree.leaves(free_state)):
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_a_donated_update_with_held_rows_copies_no_table(name):
  # Reading the held rows back after the scatter made XLA copy the table every step.
  tx, table, rows, grads = _first_step(name)
  step = jax.jit(lambda t, s, g, h: tx.update(t, s, rows, g, hold=h), donate_argnums=(0, 1))
  hlo = step.lower(table, tx.init(table), grads, rows % 2 == 1).compile().as_text()
  assert f"f32[{NUM_ROWS},{DIM}]{{1,0}} copy(" not in hlo
