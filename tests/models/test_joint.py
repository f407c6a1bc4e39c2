"""The field's standard models: protocol, shapes, probabilities, scene input.

tests/runs/test_compare.py trains every model for a few steps through the trainer (table2's
smoke run) and checks that their test predictions are probabilities of the right shape.
"""

import jax
import numpy as np
import pytest

from experiments import common
from mtms_jax import models, optim
from mtms_jax.data import pipeline
from mtms_jax.eval import prediction

NAMES = sorted(common.JOINT_MODELS)


# Compile time is most of these tests: fewer XLA passes (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("fast_compiles")


@pytest.fixture(scope="module")
def batches(tiny_data):
  return pipeline.train_iterator(tiny_data.columns, 64, 1000, seed=0)


@pytest.mark.parametrize("name", NAMES)
def test_joint_model_protocol_probabilities_and_scene_input(name, tiny_data, batches):
  config = common.joint_config(name, "smoke")
  model = models.get_model(tiny_data.schema, config.model)
  assert model.phases == {"joint": ("embedding", "ranking")} and model.eval_phase == "joint"
  assert model.layout.num_components == 1
  params = model.init(jax.random.key(0))
  assert set(params) == {"embedding", "ranking"} and set(params["embedding"]) == {"tables"}
  # The one phase trains both subtrees: tables and network.
  assert optim.phase_labels(params, model.phases["joint"]) == {"embedding": "train",
                                                               "ranking": "train"}
  predict = prediction.make_predict_fn(model, "joint")
  batch = next(batches)
  probs = predict(params, batch)
  for task in ("ctr", "cvr"):
    p = np.asarray(probs[task])
    assert p.shape == (64,) and ((p > 0) & (p < 1)).all(), task
  # The scene is an input: the same rows told they come from the other scene score otherwise.
  flipped = predict(params, {**batch, "scene": 1 - batch["scene"]})
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


def test_reference_sizes_and_expert_shapes(tiny_data):
  shapes = {name: jax.eval_shape(models.get_model(tiny_data.schema, common.joint_config(
      name).model).init, jax.random.key(0))["ranking"] for name in NAMES}
  width = models.get_model(tiny_data.schema, common.joint_config("mmoe").model).input_width
  assert shapes["mmoe"]["experts"]["kernel0"].shape == (8, width, 16)
  assert shapes["mmoe"]["gate_cvr"]["logits"]["kernel"].shape == (width, 8)
  assert shapes["mmoe"]["ctr"]["dense0"]["kernel"].shape == (16, 8)
  assert shapes["ple"]["level0_ctr_experts"]["kernel0"].shape == (2, width, 16)
  assert shapes["ple"]["level0_shared_experts"]["kernel0"].shape == (1, width, 16)
  assert "level0_shared_gate" not in shapes["ple"]          # one level: no shared gate
  assert shapes["shared_bottom"]["bottom"]["dense0"]["kernel"].shape == (width, 117)
  assert shapes["esmm"]["cvr"]["dense1"]["kernel"].shape == (16, 8)


def test_ple_two_levels(tiny_data):
  config = common.joint_config("ple", "smoke")
  config.model.num_levels = 2
  model = models.get_model(tiny_data.schema, config.model)
  params = jax.eval_shape(model.init, jax.random.key(0))["ranking"]
  assert "level1_shared_gate" not in params and "level0_shared_gate" in params
  assert params["level1_ctr_experts"]["kernel0"].shape == (2, 16, 16)
  # A task gate mixes its own 2 experts and the 1 shared one; the shared gate all 5.
  assert params["level1_cvr_gate"]["logits"]["kernel"].shape == (16, 3)
  assert params["level0_shared_gate"]["logits"]["kernel"].shape == (model.input_width, 5)
