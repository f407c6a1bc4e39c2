"""The pure update of a phase: `update(state, batch) -> (state, measurements)`.

Each phase gets its own update, jitted once with the state donated, so parameters, moments
and tables are updated in place. How it updates the embedding tables is the phase's
optimizer (`mtms_jax.optim`): row-wise on the gathered rows, or dense through the tables.

Regularisation (phases.<p>): `dropout` drops that share of the networks' inputs (the
looked-up embeddings and dense features) in training updates, with a key drawn from `seed`
and the step, so a resumed run draws the same masks. An update made with `frozen_scenes`
(MTMS: scene names; a run with scenes added, runs/add_scene.py) keeps the tables' rows and
tower slices of those scenes' components as they were (`freezing.keep_frozen`). With
`early_stopping.per_component` (MTMS's embedding phase), the components that the state's
(C,) 'active' mask marks stopped are kept as they were (train/early_stopping.py): the
row-wise table optimizer holds their rows (`sparse.apply_tables`' hold), and their tower
slices are put back (`freezing.keep_stopped`).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import optax

from mtms_jax import embedding, errors, losses, models, optim
from mtms_jax.embedding import sparse
from mtms_jax.train import freezing, train_state


def dropout(rng: jax.Array, rate: float, rows: dict, dense: jax.Array,
            axis_name: str | None = None):
  """Inverted dropout of the networks' inputs: each looked-up embedding value and dense
  feature is zeroed with probability `rate`, the rest scaled by 1 / (1 - rate).

  axis_name: inside a map over devices, each device holds a slice of the batch; it draws
  the whole batch's mask and keeps its slice, so the masks are those of one device.
  """
  keys = jax.random.split(rng, len(rows) + 1)

  def drop(key, x):
    if axis_name is None:
      keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    else:
      n = x.shape[0]
      whole = jax.random.bernoulli(key, 1.0 - rate, (jax.lax.axis_size(axis_name) * n,)
                                   + x.shape[1:])
      keep = jax.lax.dynamic_slice_in_dim(whole, jax.lax.axis_index(axis_name) * n, n)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))

  return ({k: drop(key, r) for key, (k, r) in zip(keys, sorted(rows.items()))},
          drop(keys[-1], dense))


def make_update_fn(model, tx: optim.PhaseOptimizer, phase: str,
                   phase_config: ml_collections.ConfigDict, seed: int = 0,
                   frozen_scenes: Sequence[str] = ()):
  """`make_update` on one device: jitted, the state donated."""
  return jax.jit(make_update(model, tx, phase, phase_config, seed, frozen_scenes=frozen_scenes),
                 donate_argnums=0)


def make_update(model, tx: optim.PhaseOptimizer, phase: str,
                phase_config: ml_collections.ConfigDict, seed: int = 0,
                axis_name: str | None = None, frozen_scenes: Sequence[str] = ()):
  """A pure `update(state, batch) -> (state, measurements)` for one phase, not jitted.

  axis_name: the update runs inside a map over devices (`jax.pmap`), each device holding
  a slice of the batch. The devices then sum their gradients (`losses.combine` scales each
  device's loss to its share of the whole batch's) and gather the row indices and row
  gradients of every device before the row-wise table update, so every device applies the
  one-device update of the whole batch: duplicates across devices are merged exactly as
  duplicates within a batch. Measurements are the whole batch's.
  frozen_scenes: names of the scenes whose components it keeps (`freezing.keep_frozen`).
  """
  loss_from_rows, loss_from_tables = make_losses(model, phase, phase_config, seed, axis_name)
  frozen = freezing.scene_indices(model, phase, frozen_scenes)
  row_wise = make_row_wise(model, tx, phase, loss_from_rows, axis_name)
  per_component = phase_config.get("early_stopping", {}).get("per_component", False)

  def update(state: train_state.State, batch) -> tuple[train_state.State, dict]:
    params, opt_state, step = state["params"], state["opt"][phase], state["step"]
    lr_scale = 1.0 if tx.lr_schedule is None else tx.lr_schedule(opt_state["count"])
    # A state without the 'active' mask (train_state.init_state without components) has
    # every component training: nothing to hold.
    stopped = ~state["active"] if per_component and "active" in state else None
    if tx.dense_tables:
      (loss, task_losses), grads = jax.value_and_grad(loss_from_tables, has_aux=True)(
          params, batch, step)
      dense = params
    else:
      (loss, task_losses), grads, dense, tables, opt_state = row_wise(
          params, opt_state, batch, step, lr_scale, stopped)
    grads, loss, task_losses = sum_devices((grads, loss, task_losses), axis_name)
    updates, dense_opt = tx.dense.update(grads, opt_state["dense"], dense)
    if tx.lr_schedule is not None:
      updates = jax.tree.map(lambda u: u * lr_scale, updates)
    params = optax.apply_updates(dense, updates)
    if not tx.dense_tables:
      params = optim.with_tables(params, tables)
    params = update_statistics(model, phase, state["params"], params, batch, axis_name)
    if frozen:
      params = freezing.keep_frozen(model, frozen, state["params"], params)
    if stopped is not None:
      params = freezing.keep_stopped(model, stopped, state["params"], params,
                                     rows_held=not tx.dense_tables)
    opt_state = {**opt_state, "dense": dense_opt, "count": opt_state["count"] + 1}
    new_state = {**state, "params": params, "opt": {**state["opt"], phase: opt_state},
                 "step": step + 1}
    measurements = {"loss": loss, **{f"loss_{k}": v for k, v in task_losses.items()}}
    return new_state, measurements

  return update


def make_losses(model, phase: str, phase_config: ml_collections.ConfigDict, seed: int,
                axis_name: str | None):
  """The phase's training loss, (loss, task losses), of the looked-up rows
  `(params, rows, batch, step)`, and of the tables `(params, batch, step)`."""
  loss_spec = phase_config.loss
  losses.parse_loss(loss_spec)          # fail on a bad spec before compiling
  weights = dict(phase_config.get("loss_weights", {}))
  rate = phase_config.get("dropout", 0.0)
  errors.expect(0 <= rate < 1, f"config.phases.{phase}.dropout", rate, "0 <= dropout < 1")
  base_key = jax.random.key(seed)

  def loss_from_rows(params, rows, batch, step):
    if rate:
      rows, dense = dropout(jax.random.fold_in(base_key, step), rate, rows, batch["dense"],
                            axis_name)
      batch = {**batch, "dense": dense}
    outputs = model.apply(params, rows, batch, phase, train=True, axis_name=axis_name)
    return losses.combine(outputs, batch, loss_spec, weights, axis_name)

  def loss_from_tables(params, batch, step):
    # The dense reference: the gradient flows through the gather into the whole tables.
    rows = embedding.lookup(params["embedding"]["tables"],
                            models.embedding_index(model, batch, phase))
    return loss_from_rows(params, rows, batch, step)

  return loss_from_rows, loss_from_tables


def make_row_wise(model, tx: optim.PhaseOptimizer, phase: str, loss_from_rows,
                  axis_name: str | None):
  """The row-wise half of an update: `(params, opt_state, batch, step, lr_scale, stopped)
  -> ((loss, task losses), gradients of the params but the tables, those params, the tables
  updated from their gathered rows' gradients, opt_state with their new state)`; stopped,
  None or (C,) bools: the components whose rows the table update holds."""

  def row_wise(params, opt_state, batch, step, lr_scale, stopped):
    tables = params["embedding"]["tables"]
    dense = optim.without_tables(params)
    index = models.embedding_index(model, batch, phase)
    # The tables are constants here: only the gathered rows can carry a gradient.
    def loss_fn(d, r):
      return loss_from_rows(optim.with_tables(d, tables), r, batch, step)
    rows = embedding.lookup(tables, index)
    if tx.tables is None:
      (loss, task_losses), grads = jax.value_and_grad(loss_fn, has_aux=True)(dense, rows)
    else:
      (loss, task_losses), (grads, row_grads) = jax.value_and_grad(
          loss_fn, argnums=(0, 1), has_aux=True)(dense, rows)
      index, row_grads = gather_devices((index, row_grads), axis_name)
      tables, table_state = sparse.apply_tables(tx.tables, tables, opt_state["tables"],
                                                index, row_grads, lr_scale,
                                                held_lookups(model, tables, index, stopped))
      opt_state = {**opt_state, "tables": table_state}
    return (loss, task_losses), grads, dense, tables, opt_state

  return row_wise


def held_lookups(model, tables, index, stopped):
  """{key: (B, K, F_g) bools}: the lookups of `index` whose rows belong to a `stopped`
  component (rows are (field_offset + id) * C + component, clipped as the lookup clips);
  None when nothing is stopped."""
  if stopped is None:
    return None
  num = model.layout.num_components
  return {k: stopped[jnp.clip(i, 0, tables[k].shape[0] - 1) % num] for k, i in index.items()}


def update_statistics(model, phase: str, params, new_params, batch, axis_name: str | None):
  """new_params with a model's moving statistics (`update_statistics` of the model protocol,
  mtms_jax/models) moved towards the batch's; new_params itself for models without."""
  if not hasattr(model, "update_statistics"):
    return new_params
  # The rows the update's forward read; XLA merges this gather with that one.
  rows = embedding.lookup(params["embedding"]["tables"],
                          models.embedding_index(model, batch, phase))
  return model.update_statistics(params, new_params, rows, batch, axis_name)


def sum_devices(tree, axis_name: str | None):
  return tree if axis_name is None else jax.lax.psum(tree, axis_name)


def gather_devices(tree, axis_name: str | None):
  """Every device's arrays concatenated on the batch axis, in device order."""
  if axis_name is None:
    return tree
  return jax.lax.all_gather(tree, axis_name, axis=0, tiled=True)
