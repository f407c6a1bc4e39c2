"""Components kept as they were in a phase: their table rows and tower slices put back.

How a run with scenes added (runs/add_scene.py) trains the new scenes' components alone:
each update of its embedding phase puts back those of the old scenes (MTMS models only,
whose components are per scene). How per-component early stopping (train/early_stopping.py)
keeps the components it stopped, and each component's best parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from mtms_jax.errors import UserError


def scene_indices(model, phase: str, names: Sequence[str]) -> tuple[int, ...]:
  """Indices of the scenes `names`; UserError if a name is not a scene of the model's data,
  or the model has no per-scene parameters."""
  names = tuple(names)
  if not names:
    return ()
  if not hasattr(model, "scene_masks"):
    raise UserError(f"freezing scenes {names} in phase {phase!r}: model "
                    f"{type(model).__module__} has no per-scene parameters to freeze")
  unknown = sorted(set(names) - set(model.schema.scenes))
  if unknown:
    raise UserError(f"freezing scenes in phase {phase!r}: {unknown} are not scenes of the "
                    f"data {list(model.schema.scenes)}")
  indices = tuple(model.schema.scenes.index(n) for n in names)
  model.components_of_scenes(indices)        # raises if the scenes share their components
  return indices


def keep_frozen(model, scenes, old: dict, new: dict) -> dict:
  """`new` params with the embedding tables' rows and tower slices of `scenes` taken from
  `old`: whatever the optimizer did (weight decay, Adam moments of earlier steps), those
  stay bitwise as they were. What an update with `frozen_scenes` applies after each step,
  e.g. to train a newly added scene's components only (runs/add_scene.py)."""
  return with_components(model.scene_masks(old["embedding"], scenes), old, new)


def take_components(model, selected, source: dict, target: dict) -> dict:
  """`target` params with the table rows and tower slices of the components that
  `selected` ((C,) bools) marks taken from `source`: how the embedding phase's per-component
  early stopping keeps stopped components and each one's best (train/early_stopping.py)."""
  return with_components(model.component_masks(target["embedding"], selected), source, target)


def keep_stopped(model, stopped, old: dict, new: dict, rows_held: bool) -> dict:
  """`new` params with the components that `stopped` ((C,) bools) marks as in `old`: what
  an update with per-component early stopping applies after each step.

  rows_held: the row-wise table optimizer already left the stopped components' rows as they
  were (`sparse.apply_tables`'s hold), so only their tower slices are put back: a step then
  costs the batch's rows, not the tables' (C times the vocabulary). False: whole tables too.
  """
  if not rows_held:
    return take_components(model, stopped, old, new)
  return with_components({"towers": model.component_masks(new["embedding"], stopped)["towers"]},
                         old, new)


def with_components(masks: dict, source: dict, target: dict) -> dict:
  """`target` params with the embedding parameters `masks` marks taken from `source`."""
  embedding = {**target["embedding"], **jax.tree.map(
      lambda m, s, t: jnp.where(m, s, t), masks,
      {k: source["embedding"][k] for k in masks}, {k: target["embedding"][k] for k in masks})}
  return {**target, "embedding": embedding}
