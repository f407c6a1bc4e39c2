"""Data sets by name: `load('movielens', path=...)` calls `mtms_jax.data.movielens.load`.

A data set is a module of `mtms_jax.data` with a `load(**kwargs) -> Dataset` function, so a
new one needs no entry here; importing by name keeps configs free of import paths.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import re
from collections.abc import Callable
from typing import Any

import ml_collections
import numpy as np

import mtms_jax.data
from mtms_jax import errors
from mtms_jax.data import Dataset, logs
from mtms_jax.errors import UserError

_NAME_RE = re.compile(r"[a-z][a-z0-9_]*")


def load(name: str, **kwargs: Any) -> Dataset:
  """Loads data set `name` with `mtms_jax.data.<name>.load(**kwargs)`.

  Raises:
    UserError: `mtms_jax.data` has no module by that name.
  """
  return loader(name)(**kwargs)


def loader(name: str) -> Callable[..., Dataset]:
  """The `load` function of data set `name`; UserError if `mtms_jax.data` has no such
  module with a `load` (config.data.name)."""
  load = _load_function(name)
  if load is None:
    raise UserError(f"unknown data set {name!r} (config.data.name); known: {names()}")
  return load


def names() -> list[str]:
  """The data sets: the modules of `mtms_jax.data` without a leading underscore that have a
  `load` (the pipeline, checks and statistics beside them are not data sets)."""
  return sorted(m.name for m in pkgutil.iter_modules(mtms_jax.data.__path__)
                if _load_function(m.name) is not None)


def _load_function(name: str) -> Callable[..., Dataset] | None:
  if not _NAME_RE.fullmatch(name) or name == "registry":
    return None
  try:
    module = importlib.import_module(f"mtms_jax.data.{name}")
  except ModuleNotFoundError as e:
    if e.name != f"mtms_jax.data.{name}":
      raise  # the module exists but one of its own imports failed
    return None
  return getattr(module, "load", None)


# Data
def load_data(config: ml_collections.ConfigDict) -> Dataset:
  """`load_source(config)` restricted to `config.scenes` if set."""
  return configured_scenes(load_source(config), config)


def load_source(config: ml_collections.ConfigDict) -> Dataset:
  """`mtms_jax.data.<config.name>.load(**config.kwargs)`, or the logs of schema file
  `config.schema` if set (mtms_jax/data/logs.py): all of its scenes."""
  if config.get("schema"):
    return logs.load(config.schema)
  return load(config.name, **config.get("kwargs", {}))


def configured_scenes(data: Dataset, config: ml_collections.ConfigDict) -> Dataset:
  """The rows of `config.scenes` of `data` if set (`keep_scenes`), else `data`."""
  return keep_scenes(data, config.scenes) if config.get("scenes") else data


def keep_scenes(data: Dataset, scenes) -> Dataset:
  """Rows of the given scene indices only, renumbered 0..len(scenes)-1, names kept.

  A one-scene model of two-scene data then has one scene's components, not untrained tables
  for the others, and still reports under the scene's own name (e.g. 'test/scene0/...').
  """
  scenes = list(scenes)
  errors.expect(len(set(scenes)) == len(scenes)
                and all(0 <= s < data.schema.num_scenes for s in scenes),
                "config.data.scenes", tuple(scenes), f"distinct indices of {data.schema.scenes}")
  kept = data.select(np.isin(data.columns["scene"], scenes))
  renumber = np.zeros(data.schema.num_scenes, np.int32)
  renumber[scenes] = np.arange(len(scenes))
  columns = {**kept.columns, "scene": renumber[kept.columns["scene"]]}
  schema = dataclasses.replace(data.schema, scenes=tuple(data.schema.scenes[s] for s in scenes))
  return Dataset(columns, schema, kept.truth, name=f"{data.name}[scenes {scenes}]")
