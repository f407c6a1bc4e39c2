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
(`optim.lr_schedule`) by its update count. `frozen_scenes` (phases.<p>, MTMS: scene names)
keeps the tables' rows and tower slices of those scenes' components as they were
(`keep_frozen`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from mtms_jax import embedding, losses, models, optim, sparse
from mtms_jax.errors import UserError

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


def without_scratch(state: State) -> State:
  """The state a checkpoint holds: the row-wise optimizers' `owner` scratch (sparse.py), which
  means nothing across steps, left out; `with_scratch` rebuilds it."""
  return _map_rowwise(state, lambda rowwise, table: rowwise._replace(owner=None))


def with_scratch(state: State) -> State:
  """`without_scratch`'s state with fresh `owner` scratch."""
  return _map_rowwise(state, lambda rowwise, table: rowwise._replace(
      owner=sparse.init_owner(table)))


def _map_rowwise(state: State, fn) -> State:
  """state with fn(row-wise state, its table) in place of every phase's row-wise states."""
  tables = state["params"]["embedding"]["tables"]
  opt = {phase: {**o, "tables": {k: fn(r, tables[k]) for k, r in o["tables"].items()}}
         for phase, o in state["opt"].items()}
  return {**state, "opt": opt}


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


def make_update_fn(model, tx: PhaseOptimizer, phase: str,
                   phase_config: ml_collections.ConfigDict, seed: int = 0):
  """`make_update` on one device: jitted, the state donated."""
  return jax.jit(make_update(model, tx, phase, phase_config, seed), donate_argnums=0)


def make_update(model, tx: PhaseOptimizer, phase: str, phase_config: ml_collections.ConfigDict,
                seed: int = 0, axis_name: str | None = None):
  """A pure `update(state, batch) -> (state, measurements)` for one phase, not jitted.

  axis_name: the update runs inside a map over devices (`jax.pmap`), each device holding
  a slice of the batch. The devices then sum their gradients (`losses.combine` scales each
  device's loss to its share of the whole batch's) and gather the row indices and row
  gradients of every device before the row-wise table update, so every device applies the
  one-device update of the whole batch: duplicates across devices are merged exactly as
  duplicates within a batch. Measurements are the whole batch's.
  """
  loss_spec = phase_config.loss
  losses.parse_loss(loss_spec)          # fail on a bad spec before compiling
  weights = dict(phase_config.get("loss_weights", {}))
  rate = phase_config.get("dropout", 0.0)
  if not 0 <= rate < 1:
    raise ValueError(f"phases.{phase}.dropout={rate}: expected 0 <= dropout < 1")
  frozen = frozen_scene_indices(model, phase, phase_config)
  base_key = jax.random.key(seed)

  def loss_from_rows(params, rows, batch, step):
    if rate:
      rows, dense = dropout(jax.random.fold_in(base_key, step), rate, rows, batch["dense"],
                            axis_name)
      batch = {**batch, "dense": dense}
    return losses.combine(model.apply(params, rows, batch, phase), batch, loss_spec, weights,
                          axis_name)

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
        index, row_grads = gather_devices((index, row_grads), axis_name)
        tables, table_state = sparse.apply_tables(tx.tables, tables, opt_state["tables"],
                                                  index, row_grads, lr_scale)
        opt_state = {**opt_state, "tables": table_state}
    grads, loss, task_losses = sum_devices((grads, loss, task_losses), axis_name)
    updates, dense_opt = tx.dense.update(grads, opt_state["dense"], dense)
    if tx.lr_schedule is not None:
      updates = jax.tree.map(lambda u: u * lr_scale, updates)
    params = optax.apply_updates(dense, updates)
    if not tx.dense_tables:
      params = with_tables(params, tables)
    if frozen:
      params = keep_frozen(model, frozen, state["params"], params)
    opt_state = {**opt_state, "dense": dense_opt, "count": opt_state["count"] + 1}
    new_state = {"params": params, "opt": {**state["opt"], phase: opt_state},
                 "step": step + 1}
    measurements = {"loss": loss, **{f"loss_{k}": v for k, v in task_losses.items()}}
    return new_state, measurements

  return update


def sum_devices(tree, axis_name: str | None):
  return tree if axis_name is None else jax.lax.psum(tree, axis_name)


def gather_devices(tree, axis_name: str | None):
  """Every device's arrays concatenated on the batch axis, in device order."""
  if axis_name is None:
    return tree
  return jax.lax.all_gather(tree, axis_name, axis=0, tiled=True)


def frozen_scene_indices(model, phase: str, phase_config) -> tuple[int, ...]:
  """Indices of the scenes `phases.<phase>.frozen_scenes` names; UserError if a name is not
  a scene of the model's data, or the model has no per-scene parameters."""
  names = tuple(phase_config.get("frozen_scenes", ()))
  if not names:
    return ()
  if not hasattr(model, "scene_masks"):
    raise UserError(f"phases.{phase}.frozen_scenes={names}: model "
                    f"{type(model).__module__} has no per-scene parameters to freeze")
  unknown = sorted(set(names) - set(model.schema.scenes))
  if unknown:
    raise UserError(f"phases.{phase}.frozen_scenes: {unknown} are not scenes of the data "
                    f"{list(model.schema.scenes)}")
  indices = tuple(model.schema.scenes.index(n) for n in names)
  model.components_of_scenes(indices)        # raises if the scenes share their components
  return indices


def keep_frozen(model, scenes, old: dict, new: dict) -> dict:
  """`new` params with the embedding tables' rows and tower slices of `scenes` taken from
  `old`: whatever the optimizer did (weight decay, Adam moments of earlier steps), those
  stay bitwise as they were. What a phase with `frozen_scenes` applies after each update,
  e.g. to train a newly added scene's components only (train.train_with_added_scenes)."""
  masks = model.scene_masks(old["embedding"], scenes)
  embedding = {**new["embedding"], **jax.tree.map(
      lambda m, o, n: jnp.where(m, o, n), masks,
      {k: old["embedding"][k] for k in masks}, {k: new["embedding"][k] for k in masks})}
  return {**new, "embedding": embedding}


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
