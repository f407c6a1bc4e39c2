"""A data set's fingerprint: what identifies the rows a model reads, saved with its run.

A run resumed, or warm-started, on data with another fingerprint would mix two data sets
in one model without a word; train/resume.py compares the fingerprints (and refuses unless
config.allow_other_data). The fingerprint is of the data set as loaded, before
config.data.scenes keeps some of its scenes (the config says which), so the runs of one data
set on different scenes or days (runs/add_scene.py, runs/daily.py) share it:

  columns      each column's dtype, shape and SHA-256 (`digests.array_digest`: all of it up
               to 1 GiB a column, else 1024 evenly spaced blocks of 1 MiB; `sampled` says
               which). A built-in loader's arguments and files and a schema file's
               options (transforms, hashing, labels) all end up in these values.
  schema_file  for a schema file's logs, also the schema's digest (every option but where
               its cache lies) and the source files' names and sizes: what a sampled column
               could miss.

A process computes the fingerprint of a data set once (the rows and seeds of a comparison,
the days of a day-by-day run, the points of a sweep share it), and again only when what
loads it changed: the data config (but its scenes), the loader function, and the files it
reads (a schema file's sources; a built-in loader's path arguments), by size and mtime.

`check` compares a run's saved fingerprint with the data's: a resume, a warm start
(train/resume.py) and a reused finished run (rundir.finished_results) all go through it.
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import ml_collections

from mtms_jax import checkpoint_checks, digests, errors
from mtms_jax.data import Dataset, registry
from mtms_jax.data.logs import prepare, schema_file

_COMPUTED: dict[tuple, dict] = {}       # `_key` of a data set -> its fingerprint


def of(data: Dataset, data_config: ml_collections.ConfigDict) -> dict:
  """The fingerprint of `data`, loaded by `data_config` (registry.load_source); computed
  once a process per data set (module docstring)."""
  return _once(data_config, lambda: data)


def of_config(data_config: ml_collections.ConfigDict) -> dict:
  """The fingerprint of the data set `data_config` loads, loaded only if not computed yet."""
  return _once(data_config, lambda: registry.load_source(data_config))


def _once(data_config: ml_collections.ConfigDict, load: Callable[[], Dataset]) -> dict:
  key = _key(data_config)
  if key not in _COMPUTED:
    _COMPUTED[key] = _compute(load(), data_config)
  return copy.deepcopy(_COMPUTED[key])


def check(fingerprint_file: str, current: dict, allow_other_data: bool, doing: str) -> None:
  """Raises UserError unless the run whose `fingerprint_file` it is was trained on the data
  of fingerprint `current`, or allow_other_data (the config's); warns if there is no such
  file.

  doing: what needs the same data, starting the message's hint ("Resuming").
  """
  try:
    with open(fingerprint_file) as f:
      saved = json.load(f)
  except FileNotFoundError:
    warnings.warn(f"{doing.lower()} a run without a {os.path.basename(fingerprint_file)} "
                  "(written before runs had one), not knowing if its data was this",
                  errors.Notice, stacklevel=3)
    return
  if allow_other_data:
    return
  checkpoint_checks.check_same(
      "data", os.path.dirname(fingerprint_file) or ".", saved, current,
      f"{doing} needs the same data: set --config.allow_other_data=True to go on with this "
      "data all the same, or use another workdir.")


def _key(data_config: ml_collections.ConfigDict) -> tuple:
  """What identifies the data set `data_config` loads, short of reading it (module docstring)."""
  options = {k: v for k, v in data_config.to_dict().items() if k != "scenes"}
  if data_config.get("schema"):
    schema = schema_file.load(data_config.schema)
    return (json.dumps(options, sort_keys=True, default=str), schema.digest(),
            _stats(f for files in schema.files.values() for f in files))
  kwargs = data_config.get("kwargs", {})
  paths = [v for v in kwargs.values() if isinstance(v, str) and os.path.exists(v)]
  return (json.dumps(options, sort_keys=True, default=str), registry.loader(data_config.name),
          _stats(f for p in paths for f in ([Path(p)] if os.path.isfile(p)
                                            else sorted(Path(p).rglob("*")))))


def _stats(files) -> tuple:
  return tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)


def _compute(data: Dataset, data_config: ml_collections.ConfigDict) -> dict:
  columns = {}
  for name, column in sorted(data.columns.items()):
    digest, sampled = digests.array_digest(column)
    columns[name] = {"dtype": column.dtype.str, "shape": list(column.shape),
                     "sha256": digest[:32], "sampled": sampled}
  fingerprint = {"rows": len(data), "columns": columns}
  if data_config.get("schema"):
    schema = schema_file.load(data_config.schema)
    manifest = prepare.read_manifest(schema.cache)
    fingerprint["schema_file"] = {
        "digest": schema.digest(),
        "sources": {os.path.basename(path): size for path, size, _ in manifest["sources"]}}
  return fingerprint
