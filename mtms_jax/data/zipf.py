"""The benchmark's workload as a data set with held-out rows and known true probabilities.

`generate` draws it (shaped like Ali-CCP: Zipf-distributed ids over many fields, a few
percent clicks, a few percent conversions after a click; numpy and scipy only, so the peer
benchmark's venv without jax imports it too); `load` splits its rows into day 0 (training) and day 1 (the held-out test rows, the last `test_fraction`
of the rows; rows are drawn independently, so the tail is a random sample). Click depends on
the ids of fields 0 and 1, conversion on those of fields 2 and 3; every other field is noise
a model has to learn to ignore, which is what makes this data easy to overfit.

`truth` holds p(click) and p(conversion | click) of every row, so reports show the oracle's
metrics beside the model's (`make quality`).
"""

from __future__ import annotations

import numpy as np
from scipy import optimize, special

from mtms_jax.data import Dataset, as_columns
from mtms_jax.errors import UserError
from mtms_jax.schema import FeatureSchema, SparseField


def scene_weights(num_scenes: int) -> np.ndarray:
  """(1 + s) ** -log2(1.5): 60/40 for two scenes, a few big scenes and a long tail for many."""
  return (1.0 + np.arange(num_scenes)) ** -np.log2(1.5)


def zipf_ids(rng: np.random.Generator, vocab: int, n: int, exponent: float) -> np.ndarray:
  """n ids whose popularity ranks are Zipf(exponent) over [0, vocab), ranks scattered."""
  cdf = np.cumsum(np.arange(1, vocab + 1, dtype=np.float64) ** -exponent)
  ranks = np.searchsorted(cdf, rng.random(n) * cdf[-1])
  # A random bijection, so popular rows do not sit next to each other in the table.
  return rng.permutation(vocab).astype(np.int32)[np.minimum(ranks, vocab - 1)]


def _labels(rng, ids, columns_for_signal, rate, scale, weights=None, scene=None,
            scene_shift=0.0):
  """Bernoulli labels at mean `rate`, their logit a random effect of a few id columns.

  With scene_shift > 0 an id's effect is partly scene-specific: sqrt(1 - scene_shift) of a
  shared effect plus sqrt(scene_shift) of its scene's own (drawn only then, so the default
  workload's arrays do not depend on it).
  """
  logit = np.zeros(len(ids))
  for j in columns_for_signal:
    vocab = int(ids[:, j].max()) + 1
    effect = rng.standard_normal(vocab)[ids[:, j]]
    if scene_shift > 0:
      scene_effect = rng.standard_normal((int(scene.max()) + 1, vocab))[scene, ids[:, j]]
      effect = np.sqrt(1 - scene_shift) * effect + np.sqrt(scene_shift) * scene_effect
    logit += scale * effect
  bias = optimize.brentq(
      lambda b: np.average(special.expit(logit + b), weights=weights) - rate, -50, 50)
  p = special.expit(logit + bias)
  return rng.random(len(ids)) < p, p


def generate(num_rows: int = 1_000_000, num_scenes: int = 2, num_fields: int = 20,
             vocab: int = 100_000, zipf: float = 1.1, click_rate: float = 0.04,
             conversion_rate: float = 0.05, seed: int = 0, label_scale: float = 0.7,
             scene_shift: float = 0.0) -> dict[str, np.ndarray]:
  """{'ids': (rows, fields) int32, 'scene', 'click', 'conversion' (bool, after a click)},
  and the true probabilities of each row: 'p_click' and 'p_conversion' (given a click).

  label_scale: standard deviation of each signal field's effect on the label logit (larger:
    labels easier to predict); scene_shift: the share of that effect's variance that is
    scene-specific (0: scenes behave alike).
  """
  rng = np.random.default_rng(seed)
  ids = np.empty((num_rows, num_fields), np.int32)
  for j in range(num_fields):      # one column at a time bounds the float64 temporaries
    ids[:, j] = zipf_ids(rng, vocab, num_rows, zipf)
  w = scene_weights(num_scenes)
  scene = rng.choice(num_scenes, size=num_rows, p=w / w.sum())
  click, p_click = _labels(rng, ids, (0, 1), click_rate, label_scale, scene=scene,
                           scene_shift=scene_shift)
  convert, p_convert = _labels(rng, ids, (2, 3), conversion_rate, label_scale, weights=p_click,
                               scene=scene, scene_shift=scene_shift)
  return {"ids": ids, "scene": scene, "click": click, "conversion": click & convert,
          "p_click": p_click, "p_conversion": p_convert}



def load(num_rows: int = 1_000_000, num_scenes: int = 2, num_fields: int = 20,
         vocab: int = 100_000, zipf: float = 1.1, click_rate: float = 0.04,
         conversion_rate: float = 0.05, test_fraction: float = 0.1, embedding_dim: int = 16,
         seed: int = 0, label_scale: float = 0.7, scene_shift: float = 0.0) -> Dataset:
  """`num_rows` rows: day 0 the first (1 - test_fraction), day 1 the rest.

  label_scale and scene_shift: how predictable the labels are and how much of that is
  scene-specific (`generate`).
  """
  if not 0 <= test_fraction < 1:
    raise UserError(f"test_fraction={test_fraction}: expected 0 <= test_fraction < 1")
  arrays = generate(num_rows, num_scenes, num_fields, vocab, zipf, click_rate,
                                   conversion_rate, seed, label_scale, scene_shift)
  day = (np.arange(num_rows) >= round(num_rows * (1 - test_fraction))).astype(np.int32)
  schema = FeatureSchema(
      sparse=tuple(SparseField(f"f{j}", vocab, embedding_dim) for j in range(num_fields)),
      scenes=tuple(f"scene{s}" for s in range(num_scenes)))
  columns = as_columns({"ids": arrays["ids"], "scene": arrays["scene"],
                        "click": arrays["click"], "conversion": arrays["conversion"],
                        "dense": np.zeros((num_rows, 0), np.float32), "day": day})
  truth = {"ctr": arrays["p_click"], "cvr": arrays["p_conversion"]}
  return Dataset(columns, schema, truth=truth, name="zipf")
