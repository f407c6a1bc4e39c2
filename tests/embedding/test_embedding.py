import jax
import jax.numpy as jnp
import numpy as np
import pytest

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
    per_component = np.asarray(tables[group.key]).reshape(group.rows_per_component, 3, -1)
    per_component = per_component.transpose(1, 0, 2)        # (C, V, D): a table per component
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


def test_ranking_scenes_bound_the_components_read(tiny_data):
  scene = jnp.array([0, 1, 1])
  config = common.base_config().model
  config.ranking_scenes = (1,)
  model = models.get_model(tiny_data.schema, config)
  # Own scene's (ctr, cvr) components, then scene 1's.
  np.testing.assert_array_equal(model.components(scene, "ranking"),
                                [[0, 1, 2, 3], [2, 3, 2, 3], [2, 3, 2, 3]])
  assert model.num_ranking_sources == 4
  config.sharing = "tasks"
  model = models.get_model(tiny_data.schema, config)
  np.testing.assert_array_equal(model.components(scene, "ranking"), [[0, 1], [1, 1], [1, 1]])
  params = model.init(jax.random.key(0))
  batch = {k: jnp.asarray(v[:8]) for k, v in tiny_data.columns.items()}
  out = models.forward(model, params, batch, "ranking")
  assert out["ctr_logit"].shape == (8,)
  config.ranking_scenes = (2,)
  with pytest.raises(ValueError, match="ranking_scenes"):
    models.get_model(tiny_data.schema, config)


def test_init_table_in_chunks_fills_every_row():
  rows = embedding.INIT_CHUNK_ROWS + 1000           # a partial last chunk
  table = np.asarray(embedding.init_table(jax.random.key(0), rows, 4, stddev=0.5))
  assert table.shape == (rows, 4)
  assert abs(table.std() - 0.5) < 0.01 and abs(table[-1000:].std() - 0.5) < 0.05
  assert np.unique(table, axis=0).shape[0] == rows   # no chunk repeats another's draws
  np.testing.assert_array_equal(table, embedding.init_table(jax.random.key(0), rows, 4, 0.5))
