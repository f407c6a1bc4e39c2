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
"""

from __future__ import annotations

import os

import ml_collections

from mtms_jax import digests
from mtms_jax.data import Dataset
from mtms_jax.data.logs import prepare, schema_file


def of(data: Dataset, data_config: ml_collections.ConfigDict) -> dict:
  """The fingerprint of `data`, loaded by `data_config` (registry.load_source)."""
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
