"""Where a run starts: the resume order, written out in `resume_or_start`.

  1. the workdir's own latest readable checkpoint: the run continues where it stopped;
  2. else config.init_from: warm start (the config.init_load subtrees) from another run;
  3. else fresh parameters from config.seed.
"""

from __future__ import annotations

import dataclasses
import os
import grain
import jax
from mtms_jax import checkpoint, models
from mtms_jax.train import early_stopping
from mtms_jax.train import train_state


# Train and evaluate
@dataclasses.dataclass
class Start:
  """Where training starts: a state, its step, and the iterator positioned there, if any."""
  state: dict
  step: int = 0
  batches: grain.DatasetIterator | None = None
  warm_start: dict | None = None
  seconds_before: float = 0.0
  stopper: early_stopping.EarlyStopping | None = None   # of the segment `step` lies inside


def resume_or_start(config, workdir, model, txs, init_rng, checkpoints, make_iterator,
                    identity, abstract_state) -> Start:
  """Resume order:
    1. the workdir's own latest readable checkpoint: the run continues where it stopped;
    2. else config.init_from: warm start (the config.init_load subtrees) from another run;
    3. else fresh parameters from config.seed.
  abstract_state: shapes, dtypes and shardings of the train state, which a restore takes.
  """
  def abstract_best(progress: dict):
    saved = progress.get("early_stopping")
    if not saved or not saved["has_best_params"]:
      return None
    return {k: abstract_state["params"][k] for k in model.phases[progress["phase"]]}

  restored = checkpoints.restore_latest(train_state.without_scratch(abstract_state), make_iterator,
                                        same_run_check(identity, workdir), abstract_best)
  if restored is not None:
    print(f"Resuming {workdir} from its checkpoint at step {restored.step}.")
    progress = restored.progress
    stopper = None
    if progress.get("early_stopping"):
      stopper = early_stopping.EarlyStopping.from_config(config.phases[progress["phase"]])
      stopper.load_json(progress["early_stopping"])
      stopper.best_params = restored.best
    return Start(train_state.with_scratch(restored.state), restored.step, restored.iterator,
                 progress["warm_start"], progress["train_seconds"], stopper)
  if not config.init_from:
    # Created where it lives: a row-sharded table is never whole on one device.
    init = jax.jit(lambda rng: train_state.init_state(model.init(rng), txs),
                   out_shardings=jax.tree.map(lambda a: a.sharding, abstract_state))
    return Start(init(init_rng))
  params = model.init(init_rng)
  if config.get("init_new_scenes"):    # a run with scenes added (train_with_added_scenes)
    params, warm = checkpoint.warm_start_new_scenes(
        config.init_from, model, params, lambda schema: models.get_model(schema, config.model))
  else:
    params, warm = checkpoint.warm_start(config.init_from, params, identity["schema"],
                                         config.init_load)
  print(f"Warm start: {', '.join(warm['loaded'])} from {warm['path']}.")
  return Start(train_state.init_state(params, txs), warm_start=warm)


def same_run_check(identity: dict, workdir: str):
  """(progress, config, schema) of a checkpoint -> raises unless it is this run's."""
  def check(progress: dict, saved_config: dict, saved_schema: dict):
    source = f"the checkpoint in {os.path.join(workdir, checkpoint.CHECKPOINTS)}"
    hint = "Resuming needs the same config and data; use another workdir for a new run."
    checkpoint.check_same("config", source, saved_config, identity["config"], hint)
    checkpoint.check_same("feature schema", source, saved_schema, identity["schema"], hint)
    checkpoint.check_same("schedule (rows per day changed?)", source, progress["schedule"],
                          identity["schedule"], hint)
  return check
