"""Scoring with an exported model (`mtms_jax.export`): jax and numpy only.

  scorer = serving.load("exported/quickstart")
  probs = scorer.score({"ids": ids, "dense": dense, "scene": scene})   # {'ctr', 'cvr'}: (B,)

Scoring imports no training code of mtms_jax (only `serving.inputs` and `errors`), so a
serving process needs only the artifact folder and `pip install jax flatbuffers numpy`. The
batch is checked against the artifact's schema before it is cast (`serving.inputs`).
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np

from mtms_jax.serving import inputs


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
    self._call = jax.jit(self.exported.call)
    self.check = inputs.BatchCheck(self.schema)

  @property
  def scenes(self) -> list[str]:
    return self.schema["scenes"]

  def score(self, batch: dict) -> dict[str, np.ndarray]:
    """{'ctr': p(click), 'cvr': p(conversion | click)}, (B,) each, for a batch of
    candidates: 'ids' (B, F) int, 'dense' (B, Nd) float, 'scene' (B,) int; a single
    candidate (ids (F,), dense (Nd,), a scalar scene) scores as a batch of one. The batch
    is checked first (`serving.inputs.BatchCheck`); a value that does not fit is a UserError."""
    columns = self.check(batch)
    if len(columns["scene"]) == 0:             # a graph call needs a batch of at least 1
      return jax.tree.unflatten(self.exported.out_tree, [
          np.empty((0, *a.shape[1:]), a.dtype) for a in self.exported.out_avals])
    out = self._call(self.params, columns)
    return {k: np.asarray(v) for k, v in out.items()}


def load(path: str) -> Scorer:
  """The exported model in folder `path` (written by `python -m mtms_jax.export`)."""
  return Scorer(path)
