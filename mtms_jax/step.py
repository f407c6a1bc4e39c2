"""Train state and the pure, jitted step functions of each phase.

State is a plain dict pytree: {'params', 'opt': {phase: optimizer state}, 'step'}. Each phase
gets its own `update(state, batch) -> (state, measurements)`, jitted once with the state
donated, so parameters and moments are updated in place.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from mtms_jax import losses, models, optim

State = dict[str, Any]


def make_phase_txs(config: ml_collections.ConfigDict, model, params) -> dict:
  txs = {}
  for phase in config.schedule.order:
    if phase not in model.phases:
      raise ValueError(f"config.schedule.order names phase {phase!r}; model "
                       f"{config.model.name!r} has phases {tuple(model.phases)}")
    txs[phase] = optim.make_phase_tx(config.phases[phase].optimizer, params,
                                     model.phases[phase])
  return txs


def init_state(params, txs: dict) -> State:
  return {"params": params,
          "opt": {phase: tx.init(params) for phase, tx in txs.items()},
          "step": jnp.zeros((), jnp.int32)}


def make_update_fn(model, tx: optax.GradientTransformation, phase: str,
                   phase_config: ml_collections.ConfigDict):
  """A pure `update(state, batch) -> (state, measurements)` for one phase, jitted, donated."""
  loss_spec = phase_config.loss
  losses.parse_loss(loss_spec)          # fail on a bad spec before compiling
  weights = dict(phase_config.get("loss_weights", {}))

  def loss_fn(params, batch):
    outputs = models.forward(model, params, batch, phase)
    return losses.combine(outputs, batch, loss_spec, weights)

  def update(state: State, batch) -> tuple[State, dict]:
    (loss, task_losses), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state["params"], batch)
    updates, opt_state = tx.update(grads, state["opt"][phase], state["params"])
    params = optax.apply_updates(state["params"], updates)
    new_state = {"params": params, "opt": {**state["opt"], phase: opt_state},
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
