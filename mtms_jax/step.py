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
state}, 'count': updates done}; 'tables' is empty unless the phase trains the tables
row-wise.

Regularisation (phases.<p>): `optimizer.embedding_weight_decay` adds an L2 penalty's
gradient to the rows a step touches (row-wise optimizers; with 'dense' tables every row
decays); `optimizer.weight_decay` decays the networks' kernels (optim.py); `dropout` drops
that share of the networks' inputs (the looked-up embeddings and dense features) in
training updates, with a key drawn from `seed` and the step, so a resumed run draws the
same masks. The learning rate of tables and networks follows the phase's schedule
(`optim.lr_schedule`) by its update count.
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
  lr_schedule: update count -> the learning rate's factor; None: always 1.
  """
  dense: optax.GradientTransformation
  tables: sparse.RowwiseOptimizer | None
  dense_tables: bool
  lr_schedule: optax.Schedule | None = None

  def init(self, params) -> dict:
    tables = params["embedding"]["tables"]
    dense = params if self.dense_tables else without_tables(params)
    table_state = sparse.init_tables_state(self.tables, tables) if self.tables else {}
    return {"dense": self.dense.init(dense), "tables": table_state,
            "count": jnp.zeros((), jnp.int32)}


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
  return ROWWISE[name](config.get("embedding_learning_rate") or config.learning_rate,
                       weight_decay=config.get("embedding_weight_decay", 0.0))


def make_phase_optimizer(config: ml_collections.ConfigDict, params,
                         trainable: tuple[str, ...], total_steps: int = 0) -> PhaseOptimizer:
  """config: the phase's optimizer config; trainable: top-level params keys it trains;
  total_steps: the phase's planned updates in the run, for its learning rate schedule."""
  rowwise = make_embedding_optimizer(config) if "embedding" in trainable else None
  dense_tables = "embedding" in trainable and rowwise is None
  dense = params if dense_tables else without_tables(params)
  tx = optim.make_phase_tx(config, dense, trainable)
  if dense_tables and config.get("embedding_weight_decay"):
    # The dense reference decays every row of the tables, touched or not.
    tables_only = lambda p: jax.tree_util.tree_map_with_path(optim.in_tables, p)  # noqa: E731
    tx = optax.chain(tx, optax.add_decayed_weights(
        -config.learning_rate * config.embedding_weight_decay, tables_only))
  constant = (config.get("decay", "constant") == "constant"
              and not config.get("warmup_steps", 0))
  schedule = None if constant else optim.lr_schedule(config, total_steps)
  return PhaseOptimizer(tx, rowwise, dense_tables, schedule)


def make_phase_txs(config: ml_collections.ConfigDict, model, params,
                   total_steps: dict[str, int] | None = None) -> dict[str, PhaseOptimizer]:
  """Each phase's optimizers; total_steps: phase -> its planned updates (schedules)."""
  txs = {}
  for phase in config.schedule.order:
    if phase not in model.phases:
      raise ValueError(f"config.schedule.order names phase {phase!r}; model "
                       f"{config.model.name!r} has phases {tuple(model.phases)}")
    txs[phase] = make_phase_optimizer(config.phases[phase].optimizer, params,
                                      model.phases[phase], (total_steps or {}).get(phase, 0))
  return txs


def init_state(params, txs: dict[str, PhaseOptimizer]) -> State:
  return {"params": params,
          "opt": {phase: tx.init(params) for phase, tx in txs.items()},
          "step": jnp.zeros((), jnp.int32)}


def dropout(rng: jax.Array, rate: float, rows: dict, dense: jax.Array):
  """Inverted dropout of the networks' inputs: each looked-up embedding value and dense
  feature is zeroed with probability `rate`, the rest scaled by 1 / (1 - rate)."""
  keys = jax.random.split(rng, len(rows) + 1)

  def drop(key, x):
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))

  return ({k: drop(key, r) for key, (k, r) in zip(keys, sorted(rows.items()))},
          drop(keys[-1], dense))


def make_update_fn(model, tx: PhaseOptimizer, phase: str,
                   phase_config: ml_collections.ConfigDict, seed: int = 0):
  """A pure `update(state, batch) -> (state, measurements)` for one phase, jitted, donated."""
  loss_spec = phase_config.loss
  losses.parse_loss(loss_spec)          # fail on a bad spec before compiling
  weights = dict(phase_config.get("loss_weights", {}))
  rate = phase_config.get("dropout", 0.0)
  if not 0 <= rate < 1:
    raise ValueError(f"phases.{phase}.dropout={rate}: expected 0 <= dropout < 1")
  base_key = jax.random.key(seed)

  def loss_from_rows(params, rows, batch, step):
    if rate:
      rows, dense = dropout(jax.random.fold_in(base_key, step), rate, rows, batch["dense"])
      batch = {**batch, "dense": dense}
    return losses.combine(model.apply(params, rows, batch, phase), batch, loss_spec, weights)

  def loss_from_tables(params, batch, step):
    # The dense reference: the gradient flows through the gather into the whole tables.
    rows = embedding.lookup(params["embedding"]["tables"],
                            models.embedding_index(model, batch, phase))
    return loss_from_rows(params, rows, batch, step)

  def update(state: State, batch) -> tuple[State, dict]:
    params, opt_state, step = state["params"], state["opt"][phase], state["step"]
    lr_scale = 1.0 if tx.lr_schedule is None else tx.lr_schedule(opt_state["count"])
    if tx.dense_tables:
      (loss, task_losses), grads = jax.value_and_grad(loss_from_tables, has_aux=True)(
          params, batch, step)
      dense = params
    else:
      tables = params["embedding"]["tables"]
      dense = without_tables(params)
      index = models.embedding_index(model, batch, phase)
      # The tables are constants here: only the gathered rows can carry a gradient.
      loss_fn = lambda d, r: loss_from_rows(with_tables(d, tables), r, batch, step)  # noqa: E731
      rows = embedding.lookup(tables, index)
      if tx.tables is None:
        (loss, task_losses), grads = jax.value_and_grad(loss_fn, has_aux=True)(dense, rows)
      else:
        (loss, task_losses), (grads, row_grads) = jax.value_and_grad(
            loss_fn, argnums=(0, 1), has_aux=True)(dense, rows)
        tables, table_state = sparse.apply_tables(tx.tables, tables, opt_state["tables"],
                                                  index, row_grads, lr_scale)
        opt_state = {**opt_state, "tables": table_state}
    updates, dense_opt = tx.dense.update(grads, opt_state["dense"], dense)
    if tx.lr_schedule is not None:
      updates = jax.tree.map(lambda u: u * lr_scale, updates)
    params = optax.apply_updates(dense, updates)
    if not tx.dense_tables:
      params = with_tables(params, tables)
    opt_state = {**opt_state, "dense": dense_opt, "count": opt_state["count"] + 1}
    new_state = {"params": params, "opt": {**state["opt"], phase: opt_state},
                 "step": step + 1}
    measurements = {"loss": loss, **{f"loss_{k}": v for k, v in task_losses.items()}}
    return new_state, measurements

  return jax.jit(update, donate_argnums=0)


def trained_tasks(loss_spec: str) -> set[str]:
  """The predicted tasks ('ctr', 'cvr') a loss trains; ctcvr = ctr x cvr trains both."""
  terms = losses.parse_loss(loss_spec)
  return {t for t in ("ctr", "cvr") if t in terms or "ctcvr" in terms}


def prediction_phases(config: ml_collections.ConfigDict, model) -> dict[str, str]:
  """{task: the phase whose outputs predict it}: the model's eval phase for the tasks its
  loss trains; for another task, the last phase of the schedule whose loss trains it (e.g.
  the embedding phase's CTR towers when the ranking phase is fine-tuned on CVR alone, the
  paper's Table I), so that no reported task comes from an untrained head."""
  order = list(config.schedule.order)
  phases = [model.eval_phase] + [p for p in reversed(order) if p != model.eval_phase]
  sources = {}
  for task in model.schema.tasks:
    trained = [p for p in phases if p in order and task in trained_tasks(config.phases[p].loss)]
    sources[task] = trained[0] if trained else model.eval_phase
  return sources


def make_predict_fn(model, phase: str | dict[str, str]):
  """Jitted (params, batch) -> {task: probabilities} of `phase`'s outputs, or of each
  task's own phase ({task: phase}, from `prediction_phases`)."""
  sources = phase if isinstance(phase, dict) else dict.fromkeys(model.schema.tasks, phase)

  def predict(params, batch):
    outputs = {p: models.forward(model, params, batch, p) for p in set(sources.values())}
    return {task: jax.nn.sigmoid(outputs[p][f"{task}_logit"]) for task, p in sources.items()}
  return jax.jit(predict)
