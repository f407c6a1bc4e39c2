"""The train state: a plain dict pytree {'params', 'opt': {phase: optimizer state}, 'step'},
and 'active', a (C,) mask of the components still training, in a run whose embedding phase
stops its C components apart (train/early_stopping.py `ComponentStopping`).

The row-wise optimizers keep an `owner` scratch array (embedding/sparse.py) that means
nothing across steps; checkpoints hold the state without it.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from mtms_jax import optim
from mtms_jax.embedding import sparse

State = dict[str, Any]


def init_state(params, txs: dict[str, optim.PhaseOptimizer], num_components: int = 0
               ) -> State:
  """num_components: > 0 adds the 'active' mask of that many components, all training."""
  state = {"params": params,
           "opt": {phase: tx.init(params) for phase, tx in txs.items()},
           "step": jnp.zeros((), jnp.int32)}
  if num_components:
    state["active"] = jnp.ones((num_components,), bool)
  return state


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
