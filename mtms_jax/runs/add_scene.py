"""Adding scenes to a trained run (the paper: "new tasks or scenes could be added easily")."""

from __future__ import annotations

import json
import os
import ml_collections
from mtms_jax.errors import UserError
from mtms_jax import rundir
from mtms_jax.train import resume
from mtms_jax.train import trainer


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
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  results, base = {}, config.add_scene.base
  if not base:
    base = os.path.join(workdir, "base")
    base_config = ml_collections.ConfigDict(config.to_dict())
    del base_config["add_scene"]
    base_config.data.scenes = tuple(config.add_scene.base_scenes)
    base_results = trainer.train_and_evaluate(base_config, base,
                                              save_predictions=save_predictions)
    results.update({f"base/{k}": v for k, v in base_results.items()})
  schema_path = os.path.join(base, "feature_schema.json")
  if not os.path.exists(schema_path):
    raise UserError(f"config.add_scene.base={base!r}: not a trained run's folder (no "
                    "feature_schema.json)")
  with open(schema_path) as f:
    base_scenes = json.load(f)["scenes"]
  results.update(trainer.train_and_evaluate(
      added_scenes_config(config, base), os.path.join(workdir, "added"),
      save_predictions=save_predictions, warm_start=resume.load_with_new_scenes,
      frozen_scenes={"embedding": tuple(base_scenes)}))
  rundir.write_atomically(os.path.join(workdir, "results.json"),
                   json.dumps(results, indent=2, sort_keys=True))
  return results
