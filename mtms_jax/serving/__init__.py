"""Scoring with an exported model (`mtms_jax.export`): jax and numpy only.

  scorer = serving.load("exported/quickstart")
  probs = scorer.score({"ids": ids, "dense": dense, "scene": scene})   # {'ctr', 'cvr'}: (B,)

This module imports nothing else of mtms_jax, so a serving process needs only the artifact
folder and `pip install jax flatbuffers numpy`. The batch is checked against the artifact's
schema first: the graph clips an out-of-range id to the table's edge without a word.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np


class Scorer:
  """An exported model: its deserialized graph, its parameters and its schema."""

  def __init__(self, path: str):
    with open(os.path.join(path, "schema.json")) as f:
      self.schema = json.load(f)
    with open(os.path.join(path, "manifest.json")) as f:
      manifest = json.load(f)
    with open(os.path.join(path, "model.stablehlo"), "rb") as f:
      self.exported = jax.export.deserialize(bytearray(f.read()))
    self.params = {name: jax.device_put(np.load(os.path.join(path, entry["file"])))
                   for name, entry in manifest.items()}
    self.vocab_sizes = np.array([f["vocab_size"] for f in self.schema["sparse"]])
    self._call = jax.jit(self.exported.call)

  @property
  def scenes(self) -> list[str]:
    return self.schema["scenes"]

  def check(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The batch's columns in the graph's dtypes; ValueError naming what does not fit."""
    columns = {k: np.asarray(batch[k], dtype=spec["dtype"]) if k in batch else None
               for k, spec in self.schema["batch"].items()}
    missing = [k for k, v in columns.items() if v is None]
    if missing:
      raise ValueError(f"batch lacks columns {missing}; expected {list(columns)}")
    n = len(columns["scene"])
    for k, spec in self.schema["batch"].items():
      if columns[k].shape != (n, *spec["shape"][1:]):
        raise ValueError(f"batch column {k!r} has shape {columns[k].shape}, expected "
                         f"{(n, *spec['shape'][1:])}")
    bad = (columns["ids"] < 0) | (columns["ids"] >= self.vocab_sizes)
    if bad.any():
      row, field = np.argwhere(bad)[0]
      raise ValueError(f"row {row}, field {self.schema['sparse'][field]['name']!r}: id "
                       f"{columns['ids'][row, field]} outside [0, {self.vocab_sizes[field]})")
    if ((columns["scene"] < 0) | (columns["scene"] >= len(self.scenes))).any():
      raise ValueError(f"scene outside [0, {len(self.scenes)}): scenes are {self.scenes}")
    return columns

  def score(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """{'ctr': p(click), 'cvr': p(conversion | click)}, (B,) each, for a batch of
    candidates: 'ids' (B, F) int, 'dense' (B, Nd) float, 'scene' (B,) int."""
    out = self._call(self.params, self.check(batch))
    return {k: np.asarray(v) for k, v in out.items()}


def load(path: str) -> Scorer:
  """The exported model in folder `path` (written by `python -m mtms_jax.export`)."""
  return Scorer(path)
