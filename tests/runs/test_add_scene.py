"""A scene added to a trained model: the old scene's components stay bitwise as trained."""

import jax
import ml_collections
import numpy as np
import pytest

from experiments import add_scene as add_scene_experiment
from mtms_jax import checkpoint, models, optim
from mtms_jax.data import registry
from mtms_jax.errors import UserError
from mtms_jax.runs import add_scene
from mtms_jax.serving import export
from mtms_jax.train import freezing, train_state
from mtms_jax.train import step as step_lib


def final_params(workdir):
  config, schema = export.load_run(str(workdir))
  model = models.get_model(schema, config.model)
  return model, export.restore_params(str(workdir), model, schema)[0]


def scene_parts(model, embedding, scene):
  """The table rows of `scene`'s components ((V, 2, D) per table) and its tower slices."""
  components = model.components_of_scenes([scene])
  c = model.layout.num_components
  tables = {k: np.asarray(t).reshape(-1, c, t.shape[-1])[:, components]
            for k, t in embedding["tables"].items()}
  return tables, jax.tree.map(lambda leaf: np.asarray(leaf[scene]), embedding["towers"])


def test_old_scene_is_bitwise_unchanged_after_adding_a_scene(added_run):
  workdir, _, results = added_run
  base_model, base = final_params(workdir / "base")
  model, added = final_params(workdir / "added")
  assert base_model.schema.scenes == ("scene0",)
  assert model.schema.scenes == ("scene0", "scene1")
  # The whole added run (embedding phase with scene0 frozen, then ranking) left scene0's
  # tables and towers as the base run trained them; scene1's were trained.
  jax.tree.map(np.testing.assert_array_equal, scene_parts(base_model, base["embedding"], 0),
               scene_parts(model, added["embedding"], 0))
  fresh = model.init(jax.random.key(0))["embedding"]
  new_tables, _ = scene_parts(model, added["embedding"], 1)
  assert all(not np.array_equal(new_tables[k], v)
             for k, v in scene_parts(model, fresh, 1)[0].items())
  assert {"base/test/scene0/ctr/auc", "test/scene1/ctr/auc"} <= set(results)


@pytest.mark.parametrize("frozen", [("scene0",), ()])
def test_embedding_phase_updates_only_unfrozen_scenes(added_run, frozen):
  workdir, config, _ = added_run
  run_config = add_scene.added_scenes_config(config, str(workdir / "base"))
  data = registry.load_data(run_config.data).days([0])
  model = models.get_model(data.schema, run_config.model)
  params, _ = checkpoint.warm_start_new_scenes(
      str(workdir / "base"), model, model.init(jax.random.key(1)),
      lambda schema: models.get_model(schema, run_config.model))
  before = scene_parts(model, params["embedding"], 0)
  txs = optim.make_phase_txs(run_config, model, params)
  update = step_lib.make_update_fn(model, txs["embedding"], "embedding",
                                   run_config.phases.embedding, frozen_scenes=frozen)
  state = train_state.init_state(params, txs)
  for start in (0, 64, 128):
    batch = {k: v[start:start + 64] for k, v in data.columns.items()}
    assert set(batch["scene"].tolist()) == {0, 1}
    state, _ = update(state, batch)
  after = scene_parts(model, state["params"]["embedding"], 0)
  same = jax.tree.leaves(jax.tree.map(np.array_equal, before, after))
  assert all(same) if frozen else not any(same)


def test_frozen_scenes_must_name_scenes_of_the_data():
  config = add_scene_experiment.get_config("smoke")
  model = models.get_model(registry.load_data(config.data).schema, config.model)
  with pytest.raises(UserError, match=r"\['feed'\] are not scenes"):
    freezing.scene_indices(model, "embedding", ("feed",))
  shared = models.get_model(model.schema,
                            ml_collections.ConfigDict({**config.model, "sharing": "all"}))
  with pytest.raises(UserError, match="every scene shares one component"):
    freezing.scene_indices(shared, "embedding", ("scene0",))
