"""Names of pytree leaves: 'embedding/tables/dim16', as optimizers, checkpoints and exports
name them."""

from __future__ import annotations

from typing import Any

import jax


def key_names(path) -> tuple[str, ...]:
  """The names of a key path's entries: dict keys, attribute names and sequence indices
  alike (orbax's metadata turns NamedTuple attributes into dict keys, so a saved tree and a
  live one name their leaves the same)."""
  return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def path_name(path) -> str:
  return "/".join(key_names(path))


def flat_names(tree) -> dict[str, Any]:
  """{'embedding/tables/dim16': leaf, ...}: the leaves of `tree` by name, in leaf order."""
  return {path_name(path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}
