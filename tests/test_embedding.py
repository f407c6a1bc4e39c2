import jax
import jax.numpy as jnp
import numpy as np

from experiments import common
from mtms_jax import embedding, models
from mtms_jax.schema import FeatureSchema, SparseField


def test_stacked_lookup_equals_per_table_lookup():
  schema = FeatureSchema(sparse=(SparseField("a", 7, 4), SparseField("b", 3, 2),
                                 SparseField("c", 5, 4)), scenes=("s0",))
  layout = embedding.make_layout(schema, num_components=3)
  tables = embedding.init_tables(jax.random.key(0), layout)
  assert {k: v.shape for k, v in tables.items()} == {"dim2": (9, 2), "dim4": (36, 4)}
  rng = np.random.default_rng(0)
  ids = np.stack([rng.integers(0, f.vocab_size, 6) for f in schema.sparse], axis=1)
  components = rng.integers(0, 3, (6, 2))
  rows = embedding.lookup(tables, embedding.row_index(layout, jnp.asarray(ids),
                                                      jnp.asarray(components)))
  # Reference: cut the stacked array into one table per (component, field) and index those.
  for group in layout.groups:
    per_component = np.asarray(tables[group.key]).reshape(3, group.rows_per_component, -1)
    for b in range(6):
      for k in range(2):
        for j, (field, offset) in enumerate(zip(group.fields, group.offsets)):
          vocab = schema.sparse[field].vocab_size
          table = per_component[components[b, k], offset:offset + vocab]
          np.testing.assert_array_equal(rows[group.key][b, k, j], table[ids[b, field]])


def test_mtms_components_by_sharing(tiny_data):
  scene = jnp.array([0, 1, 1])
  expected = {"none": ([[0, 1], [2, 3], [2, 3]], 4), "tasks": ([[0, 0], [1, 1], [1, 1]], 2),
              "all": ([[0, 0], [0, 0], [0, 0]], 1)}
  for sharing, (own, num) in expected.items():
    config = common.base_config().model
    config.sharing = sharing
    model = models.get_model(tiny_data.schema, config)
    np.testing.assert_array_equal(model.components(scene, "embedding"), own)
    np.testing.assert_array_equal(model.components(scene, "ranking"),
                                  np.tile(np.arange(num), (3, 1)))
