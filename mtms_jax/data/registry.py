"""Data sets by name: `load('movielens', path=...)` calls `mtms_jax.data.movielens.load`.

A data set is a module of `mtms_jax.data` with a `load(**kwargs) -> Dataset` function, so a
new one needs no entry here; importing by name keeps configs free of import paths.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from typing import Any

import mtms_jax.data
from mtms_jax.data import Dataset

_NAME_RE = re.compile(r"[a-z][a-z0-9_]*")


def load(name: str, **kwargs: Any) -> Dataset:
  """Loads data set `name` with `mtms_jax.data.<name>.load(**kwargs)`.

  Raises:
    ValueError: `mtms_jax.data` has no module by that name.
  """
  if not _NAME_RE.fullmatch(name) or name == "registry":
    raise ValueError(f"unknown data set {name!r}; known: {names()}")
  try:
    module = importlib.import_module(f"mtms_jax.data.{name}")
  except ModuleNotFoundError as e:
    if e.name != f"mtms_jax.data.{name}":
      raise  # the module exists but one of its own imports failed
    raise ValueError(f"unknown data set {name!r}; known: {names()}") from None
  return module.load(**kwargs)


def names() -> list[str]:
  """The data set modules of `mtms_jax.data` (those without a leading underscore)."""
  return sorted(m.name for m in pkgutil.iter_modules(mtms_jax.data.__path__)
                if _NAME_RE.fullmatch(m.name) and m.name != "registry")
