"""Adding scenes to a trained run (the paper: "new tasks or scenes could be added easily")."""

from __future__ import annotations

import json
import os

import ml_collections

from mtms_jax import errors, models, rundir
from mtms_jax.errors import UserError
from mtms_jax.train import resume, trainer


def check(config: ml_collections.ConfigDict) -> None:
  """Raises UserError for an `add_scene` section that cannot run: a base that is not a
  trained run's folder, no base scenes to train one on, or a model whose scenes have no
  parameters of their own to freeze."""
  add = config.add_scene
  if add.base and not os.path.exists(os.path.join(add.base, rundir.SCHEMA)):
    raise UserError(f"config.add_scene.base={add.base!r}: not a trained run's folder (no "
                    f"{rundir.SCHEMA})")
  scenes = tuple(add.base_scenes)
  errors.expect(add.base or (scenes and len(set(scenes)) == len(scenes)
                             and all(s >= 0 for s in scenes)),
                "config.add_scene.base_scenes", scenes, "distinct scene indices >= 0 to train "
                "the base run on (config.add_scene.base is '')")
  model = models.model_class(config.model.name)
  if not hasattr(model, "scene_masks"):
    raise UserError(f"config.model.name={config.model.name!r} has no per-scene parameters to "
                    "freeze; config.add_scene needs a multi-scene model such as 'mtms'")
  model.check_scenes_apart(config.model)


# Adding scenes (the paper: "new tasks or scenes could be added easily")
def added_scenes_config(config: ml_collections.ConfigDict, base: str
                        ) -> ml_collections.ConfigDict:
  """The run on every scene of config.data, warm-started from the run in `base`."""
  added = config.to_dict()
  del added["add_scene"]
  added.update(init_from=base, init_load=("embedding",))
  return ml_collections.ConfigDict(added)


def train_with_added_scenes(config: ml_collections.ConfigDict, workdir: str, *,
                            save_predictions: bool = False) -> dict[str, float]:
  """config.add_scene.base: a trained run lacking some scenes of config.data; '' trains one
  first in `<workdir>/base`, on the scenes config.add_scene.base_scenes (indices). Then
  `added_scenes_config` runs in `<workdir>/added`: the base run's components copied by
  scene name, frozen in the embedding phase, which so trains the new scenes' components
  alone; a fresh ranking network then fine-tuned on every scene. results.json: the added
  run's results, and the base run's under 'base/' when it was trained here.
  save_predictions: as in `trainer.train_and_evaluate`, for both runs."""
  check(config)
  rundir.write_config(workdir, config)
  results, base = {}, config.add_scene.base
  if not base:
    base = os.path.join(workdir, "base")
    base_config = ml_collections.ConfigDict(config.to_dict())
    del base_config["add_scene"]
    base_config.data.scenes = tuple(config.add_scene.base_scenes)
    base_results = trainer.train_and_evaluate(base_config, base,
                                              save_predictions=save_predictions)
    results.update({f"base/{k}": v for k, v in base_results.items()})
  schema_path = os.path.join(base, rundir.SCHEMA)   # the base run's own (process 0's)
  if not os.path.exists(schema_path):
    raise UserError(f"config.add_scene.base={base!r}: not a trained run's folder (no "
                    f"{rundir.SCHEMA})")
  with open(schema_path) as f:
    base_scenes = json.load(f)["scenes"]
  results.update(trainer.train_and_evaluate(
      added_scenes_config(config, base), os.path.join(workdir, "added"),
      save_predictions=save_predictions, warm_start=resume.load_with_new_scenes,
      frozen_scenes={"embedding": tuple(base_scenes)}))
  rundir.write_json(workdir, rundir.RESULTS, results)
  return results
