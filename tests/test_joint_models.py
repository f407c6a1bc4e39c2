"""The field's standard models: protocol, shapes, probabilities, and a few joint steps."""

import jax
import numpy as np
import pytest

from experiments import common
from mtms_jax import models, step
from mtms_jax.data import pipeline

NAMES = sorted(common.JOINT_MODELS)


@pytest.fixture(scope="module")
def batches(tiny_data):
  return pipeline.train_iterator(tiny_data.columns, 64, 1000, seed=0)


@pytest.mark.parametrize("name", NAMES)
def test_joint_model_trains_and_predicts_probabilities(name, tiny_data, batches):
  config = common.joint_config(name, "smoke")
  model = models.get_model(tiny_data.schema, config.model)
  assert model.phases == {"joint": ("embedding", "ranking")} and model.eval_phase == "joint"
  assert model.layout.num_components == 1
  params = model.init(jax.random.key(0))
  assert set(params) == {"embedding", "ranking"} and set(params["embedding"]) == {"tables"}
  txs = step.make_phase_txs(config, model, params)
  state = step.init_state(params, txs)
  update = step.make_update_fn(model, txs["joint"], "joint", config.phases.joint)
  before = jax.tree.map(np.array, state["params"])
  losses = []
  for _ in range(4):
    state, measurements = update(state, next(batches))
    losses.append(float(measurements["loss"]))
  assert np.isfinite(losses).all()
  # One phase trains both subtrees: tables and network.
  for key in ("embedding", "ranking"):
    changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), before[key],
                           jax.tree.map(np.array, state["params"][key]))
    assert all(jax.tree.leaves(changed)), f"{name}: {key} params did not move"
  predict = step.make_predict_fn(model, "joint")
  batch = next(batches)
  probs = predict(state["params"], batch)
  for task in ("ctr", "cvr"):
    p = np.asarray(probs[task])
    assert p.shape == (64,) and ((p > 0) & (p < 1)).all(), task
  # The scene is an input: the same rows told they come from the other scene score otherwise.
  flipped = predict(state["params"], {**batch, "scene": 1 - batch["scene"]})
  for task in ("ctr", "cvr"):
    assert not np.allclose(probs[task], flipped[task]), task


@pytest.mark.parametrize("name,field,value", [
    ("mmoe", "num_experts", 0), ("ple", "shared_experts", 0),
    ("shared_bottom", "bottom_hidden", ()), ("esmm", "tower_hidden", (16, 0))])
def test_bad_config_names_the_field(name, field, value, tiny_data):
  config = common.joint_config(name, "smoke")
  config.model[field] = value
  with pytest.raises(ValueError, match=f"config.model.{field}"):
    models.get_model(tiny_data.schema, config.model)


def test_ple_levels_and_expert_shapes(tiny_data):
  config = common.joint_config("ple", "smoke")
  config.model.num_levels = 2
  model = models.get_model(tiny_data.schema, config.model)
  params = jax.eval_shape(model.init, jax.random.key(0))["ranking"]
  assert "level1_shared_gate" not in params and "level0_shared_gate" in params
  assert params["level0_ctr_experts"]["kernel0"].shape == (2, model.input_width, 16)
  assert params["level1_ctr_experts"]["kernel0"].shape == (2, 16, 16)
  # The task gate mixes its own 2 experts and the 1 shared one; the shared gate all 5.
  assert params["level1_cvr_gate"]["logits"]["kernel"].shape == (16, 3)
  assert params["level0_shared_gate"]["logits"]["kernel"].shape == (model.input_width, 5)
