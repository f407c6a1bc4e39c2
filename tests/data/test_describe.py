import numpy as np
import pytest

from mtms_jax.data import Dataset, as_columns
from mtms_jax.data.describe import describe
from mtms_jax.schema import FeatureSchema, SparseField


def test_statistics_of_a_hand_made_data_set():
  # scene 0 sees items 0 (x3, all clicked, 1 conversion) and 1 (x1); scene 1 sees 1 and 2.
  item = np.array([0, 0, 0, 1, 1, 2])
  scene = np.array([0, 0, 0, 0, 1, 1])
  click = np.array([1, 1, 1, 0, 1, 0])
  conversion = np.array([1, 0, 0, 0, 1, 0])
  schema = FeatureSchema(sparse=(SparseField("item", 4, 2),), dense=(),
                         scenes=("a", "b"))
  data = Dataset(as_columns({"ids": item[:, None], "dense": np.zeros((6, 0)), "scene": scene,
                             "click": click, "conversion": conversion,
                             "day": np.zeros(6)}), schema)
  stats = describe(data, "item", min_rows=1, min_conversions=2)
  assert stats["scene_share"] == pytest.approx([4 / 6, 2 / 6])
  assert stats["click_rate"] == pytest.approx([0.75, 0.5])
  assert stats["conversions_per_click"] == pytest.approx([1 / 3, 1.0])
  assert stats["item_jaccard"] == pytest.approx(1 / 3)
  # popularity (3/4, 1/4, 0) against (0, 1/2, 1/2)
  assert stats["item_popularity_tv"] == pytest.approx(0.5 * (0.75 + 0.25 + 0.5))
  assert np.isnan(stats["item_ctr_correlation"])     # one item in both scenes: too few
  # per item: 1/3 (item 0), 1/1 (item 1); items 2 and 3 never clicked
  assert stats["item_conversions_per_click_median"] == pytest.approx(2 / 3)
  assert stats["items_with_enough_conversions"] == 0.0
