"""One optax transform per phase: the phase's subtrees train, the rest are frozen.

`optax.partition` with `optax.set_to_zero()` on the frozen labels: frozen leaves get zero
updates and no optimizer moments (MaskedNode). Not `optax.masked`, which passes the raw
gradient through for masked-out leaves instead of freezing them.

Regularisation and schedules of a phase's optimizer config:
  weight_decay   decoupled weight decay (AdamW's) of the networks' kernels, not of biases or
                 embedding tables (those have embedding_weight_decay, step.py)
  warmup_steps   the learning rate rises linearly from 0 over this many steps of the phase,
  decay          then stays ('constant') or falls ('linear', 'cosine') to final_factor times
                 the learning rate at the phase's last planned step (`lr_schedule`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from mtms_jax import embedding, errors, pytree
from mtms_jax.embedding import sparse
from mtms_jax.errors import UserError

OPTIMIZERS = {"adam": optax.adam, "adagrad": optax.adagrad, "sgd": optax.sgd,
              "adamw": optax.adamw}


DECAYS = ("constant", "linear", "cosine")
# Optional optimizer fields that are off at 0 (embedding_learning_rate 0: learning_rate).
NON_NEGATIVE = ("warmup_steps", "final_factor", "clip_norm", "weight_decay",
                "embedding_learning_rate", "embedding_weight_decay")


def decays_weight(path, leaf) -> bool:
  """Weight decay applies to network kernels: not to biases or embedding tables."""
  return (leaf.ndim >= 2 and not embedding.in_tables(path)
          and "bias" not in pytree.key_names(path)[-1])


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """config: name (one of OPTIMIZERS), learning_rate, optional clip_norm, weight_decay."""
  tx = OPTIMIZERS[config.name](config.learning_rate)
  if config.get("weight_decay"):
    mask = lambda params: jax.tree_util.tree_map_with_path(decays_weight, params)  # noqa: E731
    # Decoupled (AdamW): the decay is added after the optimizer's scaling of the gradient.
    tx = optax.chain(tx, optax.add_decayed_weights(-config.learning_rate * config.weight_decay,
                                                   mask))
  if config.get("clip_norm"):
    tx = optax.chain(optax.clip_by_global_norm(config.clip_norm), tx)
  return tx


def lr_schedule(config: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """The learning rate's factor (1 at the peak) at each update of a phase that plans
  `total_steps` updates in the whole run: `warmup_steps` of linear warmup from 0, then
  `decay` ('constant', 'linear' or 'cosine') down to `final_factor` at `total_steps`."""
  decay, warmup = config.get("decay", "constant"), config.get("warmup_steps", 0)
  length, final = max(total_steps - warmup, 1), config.get("final_factor", 0.0)
  after = {"constant": optax.constant_schedule(1.0),
           "linear": optax.linear_schedule(1.0, final, length),
           "cosine": optax.cosine_decay_schedule(1.0, length, alpha=final)}[decay]
  if not warmup:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, 1.0, warmup), after], [warmup])


def phase_labels(params: Mapping, trainable: Sequence[str]) -> dict[str, str]:
  """A prefix tree of labels: each top-level params key is 'train' or 'frozen'."""
  unknown = set(trainable) - set(params)
  if unknown:
    raise ValueError(f"trainable subtrees {sorted(unknown)} not in params {sorted(params)}")
  return {key: "train" if key in trainable else "frozen" for key in params}


def make_phase_tx(config: ml_collections.ConfigDict, params: Mapping,
                  trainable: Sequence[str]) -> optax.GradientTransformation:
  return optax.partition({"train": make_optimizer(config), "frozen": optax.set_to_zero()},
                         phase_labels(params, trainable))


# ----------------------------------------------------------------------------------------
# The optimizers of a phase: optax for the networks, row-wise for the tables
# ----------------------------------------------------------------------------------------
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
  if name == "dense":
    return None
  return ROWWISE[name](config.get("embedding_learning_rate") or config.learning_rate,
                       weight_decay=config.get("embedding_weight_decay", 0.0))


def check_config(config: ml_collections.ConfigDict, where: str = "optimizer",
                 trains_tables: bool = True) -> None:
  """Raises UserError naming the first wrong field of a phase's optimizer config (`where`:
  its key). trains_tables: whether the phase trains the tables; one that freezes them does
  not care that clip_norm cannot clip their row-wise updates."""
  errors.expect_choice(f"{where}.name", config.name, sorted(OPTIMIZERS))
  errors.expect(config.learning_rate > 0, f"{where}.learning_rate", config.learning_rate, "> 0")
  for field in NON_NEGATIVE:
    errors.expect(config.get(field, 0) >= 0, f"{where}.{field}", config.get(field, 0), ">= 0")
  errors.expect_choice(f"{where}.decay", config.get("decay", "constant"), DECAYS)
  table_optimizer = config.get("embedding", "dense")
  errors.expect_choice(f"{where}.embedding", table_optimizer, EMBEDDING_OPTIMIZERS)
  if trains_tables and table_optimizer != "dense" and config.get("clip_norm"):
    raise UserError(f"{where}.clip_norm needs the dense table gradient; with "
                    f"{where}.embedding={table_optimizer!r} set clip_norm=0 or "
                    "embedding='dense'")


def make_phase_optimizer(config: ml_collections.ConfigDict, params,
                         trainable: tuple[str, ...], total_steps: int = 0) -> PhaseOptimizer:
  """config: the phase's optimizer config; trainable: top-level params keys it trains;
  total_steps: the phase's planned updates in the run, for its learning rate schedule."""
  check_config(config, trains_tables="embedding" in trainable)
  rowwise = make_embedding_optimizer(config) if "embedding" in trainable else None
  dense_tables = "embedding" in trainable and rowwise is None
  dense = params if dense_tables else without_tables(params)
  tx = make_phase_tx(config, dense, trainable)
  if dense_tables and config.get("embedding_weight_decay"):
    # The dense reference decays every row of the tables, touched or not.
    tables_only = lambda p: jax.tree_util.tree_map_with_path(embedding.in_tables, p)  # noqa: E731
    tx = optax.chain(tx, optax.add_decayed_weights(
        -config.learning_rate * config.embedding_weight_decay, tables_only))
  constant = (config.get("decay", "constant") == "constant"
              and not config.get("warmup_steps", 0))
  schedule = None if constant else lr_schedule(config, total_steps)
  return PhaseOptimizer(tx, rowwise, dense_tables, schedule)


def make_phase_txs(config: ml_collections.ConfigDict, model, params,
                   total_steps: dict[str, int] | None = None) -> dict[str, PhaseOptimizer]:
  """Each phase's optimizers; total_steps: phase -> its planned updates (schedules)."""
  txs = {}
  for i, phase in enumerate(config.schedule.order):
    errors.expect_choice(f"config.schedule.order[{i}]", phase, tuple(model.phases))
    txs[phase] = make_phase_optimizer(config.phases[phase].optimizer, params,
                                      model.phases[phase], (total_steps or {}).get(phase, 0))
  return txs
