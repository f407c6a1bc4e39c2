"""Row-wise optimizers for stacked embedding tables: cost grows with the touched rows.

A dense optax optimizer updates every parameter of a table each step, although a batch
touches a few thousand of its millions of rows. The optimizers here take the gradient with
respect to the gathered rows (the output of `embedding.lookup`) and update only those rows
of the table and of the optimizer state:

  rows = embedding.lookup(tables, index)                  # {key: (B, K, F_g, D)}
  row_grads = jax.grad(loss_from_rows)(rows)              # same shapes
  tables, state = apply_tables(tx, tables, state, index, row_grads)

Duplicate lookups of a row are merged exactly as dense autodiff merges them: their
gradients are summed first, and the row is updated once from the sum. Merging needs no
sort (slow in XLA on CPU): every state keeps `owner`, an int32 scratch slot per table row.
Each lookup position writes its index into its row's slot; reading the slots back, all
duplicates of a row agree on one representative position, and a `segment_sum` by
representative gives each distinct row's summed gradient. `owner` is derived scratch:
checkpoints leave it out (`step.without_scratch`) and a restored run starts a fresh one.

Row indices are clipped to [0, R) as `embedding.lookup` clips them, so the update matches
the gradient of the lookup. Jit `update` (or `apply_tables`) with the table and state
donated: the scatters then write in place instead of copying whole tables.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mtms_jax.embedding import Tables

RowwiseState = Any
InitFn = Callable[[jax.Array], RowwiseState]
UpdateFn = Callable[[jax.Array, RowwiseState, jax.Array, jax.Array],
                    tuple[jax.Array, RowwiseState]]


class RowwiseOptimizer(NamedTuple):
  """A pair of pure functions, like `optax.GradientTransformation`, for one table.

  init(table) -> state, for an (R, D) table.
  update(table, state, rows, row_grads, lr_scale=1.0, hold=None) -> (table, state): rows
    is an int array of any shape S of flat table rows, duplicates allowed; row_grads has
    shape S + (D,), the gradient of the loss with respect to `table[rows]`; lr_scale
    multiplies the learning rate in this step (a schedule's factor); hold, None or bools of
    shape S: the rows it marks keep their table values bitwise (their optimizer state
    still steps), as per-component early stopping holds a stopped component's rows.
  """
  init: InitFn
  update: UpdateFn


class SgdState(NamedTuple):
  owner: jax.Array          # (R,) int32 scratch for merging duplicates; no meaning across steps


class RowwiseAdagradState(NamedTuple):
  owner: jax.Array          # (R,) int32 scratch
  accumulator: jax.Array    # (R,) float32 sum over steps of the row's mean squared gradient


class LazyAdamState(NamedTuple):
  owner: jax.Array          # (R,) int32 scratch
  count: jax.Array          # () int32 global step: updates applied so far
  mu: jax.Array             # (R, D) first moment
  nu: jax.Array             # (R, D) second moment


class _Merged(NamedTuple):
  """The rows of one update with duplicates merged; N is the number of lookups."""
  owner: jax.Array          # (R,) scratch after this update's writes
  rows: jax.Array           # (N,) flat rows, clipped into the table
  targets: jax.Array        # (N,) the row at its representative position, R (dropped) elsewhere
  grads: jax.Array          # (N, D) the row's summed gradient at its representative, 0 elsewhere


def init_owner(table: jax.Array | jax.ShapeDtypeStruct) -> jax.Array:
  return jnp.zeros(table.shape[:1], jnp.int32)


def _merge_duplicates(owner: jax.Array, rows: jax.Array, row_grads: jax.Array) -> _Merged:
  """Sums the gradients of duplicate rows without sorting.

  Scatters write the result through `targets` with mode="drop": the out-of-range row R
  at non-representative positions makes each distinct row be written exactly once.
  """
  if row_grads.shape[:-1] != rows.shape:
    raise ValueError(f"row_grads shape {row_grads.shape} must be rows shape {rows.shape} "
                     "plus the embedding dim")
  num_rows = owner.shape[0]
  rows = jnp.clip(rows.reshape(-1), 0, num_rows - 1).astype(jnp.int32)
  positions = jnp.arange(rows.shape[0], dtype=jnp.int32)
  # Among duplicates one write wins, whichever; reading back makes them all agree on it.
  owner = owner.at[rows].set(positions)
  representative = owner[rows]
  grads = jax.ops.segment_sum(row_grads.reshape(rows.shape[0], row_grads.shape[-1]), representative,
                              num_segments=rows.shape[0])
  targets = jnp.where(representative == positions, rows, num_rows)
  return _Merged(owner, rows, targets, grads)


def _table_targets(m: _Merged, hold: jax.Array | None, num_rows: int) -> jax.Array:
  """The targets of the table's own scatter: the held rows' dropped (R), so the update leaves
  them bitwise as they were; reading them back after the scatter would make XLA copy the
  whole table every step."""
  if hold is None:
    return m.targets
  return jnp.where(hold.reshape(-1), num_rows, m.targets)


def _with_weight_decay(m: _Merged, table: jax.Array, weight_decay: float) -> _Merged:
  """Adds weight_decay * row to each touched row's summed gradient (an L2 penalty on the
  rows a step touches, FBGEMM's WeightDecayMode.L2); untouched rows are not decayed."""
  if not weight_decay:
    return m
  return m._replace(grads=m.grads + weight_decay * table[m.rows])


def sgd(learning_rate: float, weight_decay: float = 0.0) -> RowwiseOptimizer:
  """Plain SGD on the touched rows; equals `optax.sgd(learning_rate)` on the table."""

  def init(table):
    return SgdState(init_owner(table))

  def update(table, state, rows, row_grads, lr_scale=1.0, hold=None):
    m = _with_weight_decay(_merge_duplicates(state.owner, rows, row_grads), table, weight_decay)
    table = table.at[_table_targets(m, hold, table.shape[0])].add(
        -learning_rate * lr_scale * m.grads, mode="drop")
    return table, SgdState(m.owner)

  return RowwiseOptimizer(init, update)


def rowwise_adagrad(learning_rate: float, initial_accumulator_value: float = 0.1,
                    eps: float = 1e-8, weight_decay: float = 0.0) -> RowwiseOptimizer:
  """Adagrad with one accumulator scalar per row (torchrec/FBGEMM `EXACT_ROWWISE_ADAGRAD`).

  For each touched row r with summed gradient g_r (shape (D,)) in a step:

    acc_r += mean(g_r ** 2)                  # mean over the D columns, not the sum
    table_r -= learning_rate * g_r / (sqrt(acc_r) + eps)

  Rows not touched keep their row and accumulator, which is also what the dense update
  does for them (their gradient is zero). State: 4 bytes a row plus the owner slot.
  weight_decay adds weight_decay * table_r to g_r of the touched rows (`_with_weight_decay`).
  """

  def init(table):
    accumulator = jnp.full(table.shape[:1], initial_accumulator_value, table.dtype)
    return RowwiseAdagradState(init_owner(table), accumulator)

  def update(table, state, rows, row_grads, lr_scale=1.0, hold=None):
    m = _with_weight_decay(_merge_duplicates(state.owner, rows, row_grads), table, weight_decay)
    accumulator = state.accumulator[m.rows] + jnp.mean(m.grads ** 2, axis=-1)
    scale = learning_rate * lr_scale / (jnp.sqrt(accumulator) + eps)
    table = table.at[_table_targets(m, hold, table.shape[0])].add(-scale[:, None] * m.grads,
                                                                  mode="drop")
    accumulator = state.accumulator.at[m.targets].set(accumulator, mode="drop")
    return table, RowwiseAdagradState(m.owner, accumulator)

  return RowwiseOptimizer(init, update)


def lazy_adam(learning_rate: float, b1: float = 0.9, b2: float = 0.999,
              eps: float = 1e-8, weight_decay: float = 0.0) -> RowwiseOptimizer:
  """Adam on the touched rows only, with bias correction by the global step.

  Each call is one step t (the count starts at 1, as in optax). For every row touched
  in the step, its row, mu and nu become exactly what `optax.adam(learning_rate, b1, b2,
  eps)` computes for that row at step t from the row's stored mu and nu:

    mu_r = (1 - b1) * g_r + b1 * mu_r;   nu_r = (1 - b2) * g_r ** 2 + b2 * nu_r
    table_r -= learning_rate * mu_hat / (sqrt(nu_hat) + eps),
    mu_hat = mu_r / (1 - b1 ** t),  nu_hat = nu_r / (1 - b2 ** t)

  Rows not touched keep their row, mu and nu bitwise; dense Adam instead decays their
  moments and keeps moving them on momentum. So a row touched in every step since its
  first touch follows dense Adam exactly (before its first touch dense Adam leaves its
  zero moments at zero). TF Addons' LazyAdam and torch's SparseAdam count steps the same
  way, one count per table; a per-row count would differ from dense Adam already at the
  first touch of a row after step 1.
  State: 2 * D floats a row plus the owner slot.
  """

  def init(table):
    return LazyAdamState(init_owner(table), jnp.zeros([], jnp.int32),
                         jnp.zeros_like(table), jnp.zeros_like(table))

  def update(table, state, rows, row_grads, lr_scale=1.0, hold=None):
    m = _with_weight_decay(_merge_duplicates(state.owner, rows, row_grads), table, weight_decay)
    count = optax.safe_increment(state.count)
    # The expressions of optax.scale_by_adam, and its (jitted) bias correction: an eager
    # b1 ** count rounds differently from a jitted one.
    mu = (1 - b1) * m.grads + b1 * state.mu[m.rows]
    nu = (1 - b2) * (m.grads ** 2) + b2 * state.nu[m.rows]
    mu_hat = optax.tree.bias_correction(mu, b1, count)
    nu_hat = optax.tree.bias_correction(nu, b2, count)
    step = -learning_rate * lr_scale * (mu_hat / (jnp.sqrt(nu_hat) + eps))
    table = table.at[_table_targets(m, hold, table.shape[0])].add(step, mode="drop")
    mu = state.mu.at[m.targets].set(mu, mode="drop")
    nu = state.nu.at[m.targets].set(nu, mode="drop")
    return table, LazyAdamState(m.owner, count, mu, nu)

  return RowwiseOptimizer(init, update)


def init_tables_state(tx: RowwiseOptimizer, tables: Tables) -> dict[str, RowwiseState]:
  """One optimizer state per stacked table: {group key: state}."""
  return {key: tx.init(table) for key, table in tables.items()}


def apply_tables(tx: RowwiseOptimizer, tables: Tables, state: dict[str, RowwiseState],
                 index: dict[str, jax.Array], row_grads: dict[str, jax.Array],
                 lr_scale: jax.Array | float = 1.0, hold: dict[str, jax.Array] | None = None
                 ) -> tuple[Tables, dict[str, RowwiseState]]:
  """Updates every table from the gradient with respect to its gathered rows.

  Args:
    tables: {key: (R, D)} stacked tables, as from `embedding.init_tables`.
    state: {key: state}, as from `init_tables_state`.
    index: {key: (B, K, F_g)} rows, as from `embedding.row_index`.
    row_grads: {key: (B, K, F_g, D)}, the gradient with respect to
      `embedding.lookup(tables, index)`.
    lr_scale: the learning rate's factor in this step (a schedule's).
    hold: None, or {key: (B, K, F_g) bools}: the lookups whose rows keep their values.
  Returns:
    (tables, state) after one step; every table steps, also a lazy Adam count.
  """
  new_tables, new_state = {}, {}
  for key in tables:
    new_tables[key], new_state[key] = tx.update(tables[key], state[key], index[key],
                                                row_grads[key], lr_scale,
                                                None if hold is None else hold[key])
  return new_tables, new_state
