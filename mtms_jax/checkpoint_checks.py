"""Checks that a checkpoint fits the run that reads it: the same config, schema and data
(`check_same`), the model's leaves (`check_tree`), finite arrays (`check_finite`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mtms_jax import pytree
from mtms_jax.errors import UserError


def flat_differences(saved, current, prefix: str = "") -> list[str]:
  """'key: saved -> current' for every leaf of two JSON-like trees that differs.

  Lists of equal length are compared item by item, keyed by the items' 'name' if they all
  have one (schema fields: 'sparse.user.vocab_size'), else by position.
  """
  if isinstance(saved, list) and isinstance(current, list) and len(saved) == len(current):
    saved, current = _keyed(saved), _keyed(current)
  if isinstance(saved, dict) and isinstance(current, dict):
    return [d for k in sorted(set(saved) | set(current), key=str)
            for d in flat_differences(saved.get(k, "<missing>"), current.get(k, "<missing>"),
                                      f"{prefix}{k}.")]
  return [] if saved == current else [f"{prefix[:-1]}: {saved!r} -> {current!r}"]


def _keyed(items: list) -> dict:
  if all(isinstance(x, dict) and "name" in x for x in items):
    return {x["name"]: x for x in items}
  return dict(enumerate(items))


def check_same(kind: str, source: str, saved: dict, current: dict, hint: str):
  """Raises UserError listing the differences between a saved and the current tree."""
  differences = flat_differences(saved, current)
  if differences:
    shown = "; ".join(differences[:8]) + (" ..." if len(differences) > 8 else "")
    raise UserError(f"{source} was written with a different {kind} ({shown}). {hint}")


def check_finite(tree):
  """Raises FloatingPointError naming the floating leaves of `tree` that hold NaN or inf: the
  loop never saves such a state, so a checkpoint holding one was damaged after it was."""
  floating = {name: leaf for name, leaf in pytree.flat_names(tree).items()
              if jnp.issubdtype(leaf.dtype, jnp.floating)}
  # One fused pass over each (possibly sharded) leaf: about 0.5 s per GiB on 2 CPU cores.
  finite = _all_finite(floating)
  bad = [name for name, ok in finite.items() if not bool(ok)]
  if bad:
    raise FloatingPointError(f"non-finite values in {', '.join(bad[:4])}"
                             + (f" and {len(bad) - 4} more" if len(bad) > 4 else ""))


@jax.jit
def _all_finite(leaves: dict) -> dict:
  return {name: jnp.isfinite(leaf).all() for name, leaf in leaves.items()}


def check_tree(abstract, saved_tree, source: str, partial: bool = False):
  """Raises ValueError if `saved_tree` (orbax metadata) lacks a leaf of `abstract`, has
  another shape or dtype for it, or (unless `partial`) has leaves `abstract` lacks."""
  saved, wanted = pytree.flat_names(saved_tree), pytree.flat_names(abstract)
  problems = [f"{key} missing" for key in wanted if key not in saved]
  problems += [f"{key} is {saved[key].dtype}{list(saved[key].shape)} there, the model expects "
               f"{leaf.dtype}{list(leaf.shape)}" for key, leaf in wanted.items()
               if key in saved and (tuple(saved[key].shape), saved[key].dtype)
               != (tuple(leaf.shape), leaf.dtype)]
  if not partial:
    problems += [f"{key} is not in the model" for key in saved if key not in wanted]
  if problems:
    raise ValueError(f"{source} does not fit this model: " + "; ".join(problems[:8]))
