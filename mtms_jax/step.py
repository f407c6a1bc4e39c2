"""Train state and the pure, jitted step functions of each phase.

State is a plain dict pytree: {'params', 'opt': {phase: optimizer state}, 'step'}. Each phase
gets its own `update(state, batch) -> (state, measurements)`, jitted once with the state
donated, so parameters, moments and tables are updated in place.

How a phase updates the embedding tables (params['embedding']['tables']) is
`phases.<p>.optimizer.embedding`:
  'lazy_adam', 'rowwise_adagrad', 'sgd'  row-wise (`mtms_jax.sparse`): the step differentiates
      with respect to the gathered rows and updates only the touched rows, so it costs what
      the batch touches, not the table size. Learning rate `embedding_learning_rate`, or
      `learning_rate` when that is 0 or absent.
  'dense'  the tables join the phase's optax optimizer like any other parameter: every table
      parameter is updated every step. The reference the row-wise optimizers are tested
      against; also what `clip_norm` needs (a global norm over the table gradient).
A phase that does not train 'embedding' never differentiates the tables: they are constants.
Everything else (towers, ranking networks) always uses the phase's optax optimizer.
The optimizer state of a phase is {'dense': optax state, 'tables': {table key: row-wise
state}}; 'tables' is empty unless the phase trains the tables row-wise.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from mtms_jax import embedding, losses, models, optim, sparse

State = dict[str, Any]

ROWWISE = {"sgd": sparse.sgd, "rowwise_adagrad": sparse.rowwise_adagrad,
           "lazy_adam": sparse.lazy_adam}
EMBEDDING_OPTIMIZERS = ("dense",) + tuple(ROWWISE)


class PhaseOptimizer(NamedTuple):
  """The optimizers of one phase.

  dense: optax transform over the params, without the tables unless `dense_tables`.
  tables: row-wise optimizer of the tables, or None when they are frozen or dense-trained.
  dense_tables: whether the tables are among the optax-trained params.
  """
  dense: optax.GradientTransformation
  tables: sparse.RowwiseOptimizer | None
  dense_tables: bool

  def init(self, params) -> dict:
    tables = params["embedding"]["tables"]
    dense = params if self.dense_tables else without_tables(params)
    table_state = sparse.init_tables_state(self.tables, tables) if self.tables else {}
    return {"dense": self.dense.init(dense), "tables": table_state}


def without_tables(params):
  return {**params, "embedding": {k: v for k, v in params["embedding"].items() if k != "tables"}}


def with_tables(params, tables):
  return {**params, "embedding": {**params["embedding"], "tables": tables}}


def make_embedding_optimizer(config: ml_collections.ConfigDict) -> sparse.RowwiseOptimizer | None:
  """The row-wise optimizer `config.embedding` names, None for 'dense' (or no key)."""
  name = config.get("embedding", "dense")
  if name not in EMBEDDING_OPTIMIZERS:
    raise ValueError(f"optimizer.embedding={name!r}; expected one of {EMBEDDING_OPTIMIZERS}")
  if name == "dense":
    return None
  if config.get("clip_norm"):
    raise ValueError(f"optimizer.clip_norm needs the dense table gradient; with "
                     f"optimizer.embedding={name!r} set clip_norm=0 or embedding='dense'")
  return ROWWISE[name](config.get("embedding_learning_rate") or config.learning_rate)


def make_phase_optimizer(config: ml_collections.ConfigDict, params,
                         trainable: tuple[str, ...]) -> PhaseOptimizer:
  """config: the phase's optimizer config; trainable: top-level params keys it trains."""
  rowwise = make_embedding_optimizer(config) if "embedding" in trainable else None
  dense_tables = "embedding" in trainable and rowwise is None
  dense = params if dense_tables else without_tables(params)
  return PhaseOptimizer(optim.make_phase_tx(config, dense, trainable), rowwise, dense_tables)


def make_phase_txs(config: ml_collections.ConfigDict, model, params) -> dict[str, PhaseOptimizer]:
  txs = {}
  for phase in config.schedule.order:
    if phase not in model.phases:
      raise ValueError(f"config.schedule.order names phase {phase!r}; model "
                       f"{config.model.name!r} has phases {tuple(model.phases)}")
    txs[phase] = make_phase_optimizer(config.phases[phase].optimizer, params,
                                      model.phases[phase])
  return txs


def init_state(params, txs: dict[str, PhaseOptimizer]) -> State:
  return {"params": params,
          "opt": {phase: tx.init(params) for phase, tx in txs.items()},
          "step": jnp.zeros((), jnp.int32)}


def make_update_fn(model, tx: PhaseOptimizer, phase: str,
                   phase_config: ml_collections.ConfigDict):
  """A pure `update(state, batch) -> (state, measurements)` for one phase, jitted, donated."""
  loss_spec = phase_config.loss
  losses.parse_loss(loss_spec)          # fail on a bad spec before compiling
  weights = dict(phase_config.get("loss_weights", {}))

  def loss_from_rows(params, rows, batch):
    return losses.combine(model.apply(params, rows, batch, phase), batch, loss_spec, weights)

  def loss_from_tables(params, batch):
    # The dense reference: the gradient flows through the gather into the whole tables.
    rows = embedding.lookup(params["embedding"]["tables"],
                            models.embedding_index(model, batch, phase))
    return loss_from_rows(params, rows, batch)

  def update(state: State, batch) -> tuple[State, dict]:
    params, opt_state = state["params"], state["opt"][phase]
    if tx.dense_tables:
      (loss, task_losses), grads = jax.value_and_grad(loss_from_tables, has_aux=True)(
          params, batch)
      dense = params
    else:
      tables = params["embedding"]["tables"]
      dense = without_tables(params)
      index = models.embedding_index(model, batch, phase)
      # The tables are constants here: only the gathered rows can carry a gradient.
      loss_fn = lambda d, r: loss_from_rows(with_tables(d, tables), r, batch)  # noqa: E731
      rows = embedding.lookup(tables, index)
      if tx.tables is None:
        (loss, task_losses), grads = jax.value_and_grad(loss_fn, has_aux=True)(dense, rows)
      else:
        (loss, task_losses), (grads, row_grads) = jax.value_and_grad(
            loss_fn, argnums=(0, 1), has_aux=True)(dense, rows)
        tables, table_state = sparse.apply_tables(tx.tables, tables, opt_state["tables"],
                                                  index, row_grads)
        opt_state = {**opt_state, "tables": table_state}
    updates, dense_opt = tx.dense.update(grads, opt_state["dense"], dense)
    params = optax.apply_updates(dense, updates)
    if not tx.dense_tables:
      params = with_tables(params, tables)
    new_state = {"params": params,
                 "opt": {**state["opt"], phase: {**opt_state, "dense": dense_opt}},
                 "step": state["step"] + 1}
    measurements = {"loss": loss, **{f"loss_{k}": v for k, v in task_losses.items()}}
    return new_state, measurements

  return jax.jit(update, donate_argnums=0)


def make_predict_fn(model, phase: str):
  def predict(params, batch):
    outputs = models.forward(model, params, batch, phase)
    return {"ctr": jax.nn.sigmoid(outputs["ctr_logit"]),
            "cvr": jax.nn.sigmoid(outputs["cvr_logit"])}
  return jax.jit(predict)
