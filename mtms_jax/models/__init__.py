"""Models: each module `mtms_jax.models.<name>` exposes `Model(schema, config)`.

A model is a plain object (not a flax Module) with:
  check_config(config, where)   a classmethod: raises UserError naming the first wrong key
              of its config (`where`: the config's own key), before any data is loaded
  layout      embedding.TableLayout of its stacked tables
  phases      {phase name: tuple of top-level params keys that phase trains}
  eval_phase  the phase whose outputs are the model's predictions
  init(rng) -> params  {'embedding': {'tables': {...}, ...}, 'ranking': {...}}
  components(scene, phase) -> (B, K) int32 components each example looks up
  apply(params, rows, batch, phase, train=False, axis_name=None)
              -> {'ctr_logit': (B,), 'cvr_logit': (B,)}; train: the forward of a training
              update (a model with batch statistics normalizes with the batch's, else with
              its moving ones); axis_name: the device axis when an update's batch is split
              over devices (pmap), so that batch statistics are the whole batch's
and optionally, for a model with moving statistics (STAR's partitioned normalization):
  update_statistics(params, new_params, rows, batch, axis_name) -> new_params with the
              moving statistics moved towards those of the batch (`rows`: its looked-up
              rows under `params`). Statistics are not gradients: the update step calls
              this after the optimizer, and whatever the optimizer did to them is replaced.

`forward` is the one path from a batch to logits: components -> row index -> lookup -> apply.
Keeping the lookup out of the models lets the sparse optimizers differentiate with respect to
the gathered rows.
"""

from __future__ import annotations

import importlib
import re

import jax
import ml_collections

from mtms_jax import embedding
from mtms_jax.errors import UserError
from mtms_jax.schema import FeatureSchema


def model_class(name: str, where: str = "config.model.name"):
  """The Model class of `mtms_jax.models.<name>`; UserError if there is none."""
  if re.fullmatch(r"[a-z][a-z0-9_]*", name):
    try:
      module = importlib.import_module(f"mtms_jax.models.{name}")
    except ModuleNotFoundError as e:
      if e.name != f"mtms_jax.models.{name}":
        raise  # the module exists but one of its own imports failed
    else:
      if hasattr(module, "Model"):
        return module.Model
  raise UserError(f"{where}={name!r}: no model mtms_jax.models.{name}.Model")


def get_model(schema: FeatureSchema, config: ml_collections.ConfigDict):
  """Imports `mtms_jax.models.<config.name>` and builds its Model."""
  return model_class(config.name)(schema, config)


def embedding_index(model, batch, phase: str) -> dict[str, jax.Array]:
  return embedding.row_index(model.layout, batch["ids"], model.components(batch["scene"], phase))


def forward(model, params, batch, phase: str) -> dict[str, jax.Array]:
  """Logits {'ctr_logit', 'cvr_logit'} (B,) of `model` in `phase` for `batch`."""
  rows = embedding.lookup(params["embedding"]["tables"], embedding_index(model, batch, phase))
  return model.apply(params, rows, batch, phase)
