"""Adding scenes to a trained run (the paper: "new tasks or scenes could be added easily")."""

from __future__ import annotations

import json
import os

import ml_collections

from mtms_jax import rundir
from mtms_jax.errors import UserError
from mtms_jax.train import trainer


# Adding scenes (the paper: "new tasks or scenes could be added easily")
def added_scenes_config(config: ml_collections.ConfigDict, base: str, base_scenes
                        ) -> ml_collections.ConfigDict:
  """The run on every scene of config.data, warm-started from the run in `base` (trained
  on the scenes named `base_scenes`): their components copied by scene name, frozen in the
  embedding phase, which so trains the new scenes' components alone; a fresh ranking
  network then fine-tuned on every scene."""
  added = config.to_dict()
  del added["add_scene"]
  added.update(init_from=base, init_load=("embedding",), init_new_scenes=True)
  added["phases"]["embedding"]["frozen_scenes"] = tuple(base_scenes)
  return ml_collections.ConfigDict(added)


def train_with_added_scenes(config: ml_collections.ConfigDict, workdir: str
                            ) -> dict[str, float]:
  """config.add_scene.base: a trained run lacking some scenes of config.data; '' trains one
  first in `<workdir>/base`, on the scenes config.add_scene.base_scenes (indices). Then
  `added_scenes_config` runs in `<workdir>/added`. results.json: the added run's results,
  and the base run's under 'base/' when it was trained here."""
  rundir.write_config(workdir, config)
  results, base = {}, config.add_scene.base
  if not base:
    base = os.path.join(workdir, "base")
    base_config = ml_collections.ConfigDict(config.to_dict())
    del base_config["add_scene"]
    base_config.data.scenes = tuple(config.add_scene.base_scenes)
    base_results = trainer.train_and_evaluate(base_config, base)
    results.update({f"base/{k}": v for k, v in base_results.items()})
  schema_path = os.path.join(base, rundir.SCHEMA)   # the base run's own (process 0's)
  if not os.path.exists(schema_path):
    raise UserError(f"config.add_scene.base={base!r}: not a trained run's folder (no "
                    f"{rundir.SCHEMA})")
  with open(schema_path) as f:
    base_scenes = json.load(f)["scenes"]
  results.update(trainer.train_and_evaluate(added_scenes_config(config, base, base_scenes),
                                    os.path.join(workdir, "added")))
  rundir.write_json(workdir, rundir.RESULTS, results)
  return results
