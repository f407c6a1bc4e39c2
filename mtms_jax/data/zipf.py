"""The benchmark's workload as a data set with held-out rows and known true probabilities.

`mtms_jax.bench_workload.generate` draws it (shaped like Ali-CCP: Zipf-distributed ids over
many fields, a few percent clicks, a few percent conversions after a click); here its rows
are split into day 0 (training) and day 1 (the held-out test rows, the last `test_fraction`
of the rows; rows are drawn independently, so the tail is a random sample). Click depends on
the ids of fields 0 and 1, conversion on those of fields 2 and 3; every other field is noise
a model has to learn to ignore, which is what makes this data easy to overfit.

`truth` holds p(click) and p(conversion | click) of every row, so reports show the oracle's
metrics beside the model's (`make quality`).
"""

from __future__ import annotations

import numpy as np

from mtms_jax import bench_workload
from mtms_jax.data import Dataset, as_columns
from mtms_jax.schema import FeatureSchema, SparseField


def load(num_rows: int = 1_000_000, num_scenes: int = 2, num_fields: int = 20,
         vocab: int = 100_000, zipf: float = 1.1, click_rate: float = 0.04,
         conversion_rate: float = 0.05, test_fraction: float = 0.1, embedding_dim: int = 16,
         seed: int = 0, label_scale: float = 0.7, scene_shift: float = 0.0) -> Dataset:
  """`num_rows` rows: day 0 the first (1 - test_fraction), day 1 the rest.

  label_scale and scene_shift: how predictable the labels are and how much of that is
  scene-specific (`bench_workload.generate`).
  """
  if not 0 <= test_fraction < 1:
    raise ValueError(f"test_fraction={test_fraction}: expected 0 <= test_fraction < 1")
  arrays = bench_workload.generate(num_rows, num_scenes, num_fields, vocab, zipf, click_rate,
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
