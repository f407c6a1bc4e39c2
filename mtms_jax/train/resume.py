"""Where a run starts, and what it saves to start there again.

The resume order, each step a function here (the trainer calls them in this order):
  1. `restore`: the workdir's own latest readable checkpoint: the run continues where it
     stopped, with its data position and the early-stopping state of its segment;
  2. else `initialize` with config.init_from: a warm start from another run, loaded by a
     `WarmStart` (`load_subtrees`: the config.init_load subtrees);
  3. else `initialize` without it: fresh parameters from config.seed.
`Saver` writes the checkpoints that step 1 reads.

Steps 1 and 2 read a run trained on some data: its data fingerprint (data_fingerprint.json,
data/fingerprint.py) must be this run's, unless config.allow_other_data; a run written
before runs had one is read with a warning.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Sequence

import grain
import jax
import ml_collections

from mtms_jax import checkpoint, checkpoint_checks, models, rundir
from mtms_jax.data import fingerprint
from mtms_jax.schema import FeatureSchema
from mtms_jax.train import early_stopping, schedule, train_state
from mtms_jax.train import progress as progress_lib


@dataclasses.dataclass(frozen=True)
class Identity:
  """What a checkpoint must match to be resumed, as its JSON items read back, and the
  fingerprint of the data (`data.fingerprint.of`) that the run it belongs to was trained on."""
  config: dict
  schema: dict
  schedule: list[dict]
  data: dict

  @classmethod
  def of(cls, config: ml_collections.ConfigDict, schema: FeatureSchema,
         segments: Sequence[schedule.Segment], data_fingerprint: dict) -> Identity:
    return cls(json.loads(config.to_json_best_effort()), json.loads(json.dumps(schema.to_dict())),
               schedule.to_json(segments), data_fingerprint)

  def check(self, saved: checkpoint.Saved, workdir: str):
    """Raises UserError unless `saved` is a checkpoint of this run, on this data."""
    source = f"the checkpoint in {os.path.join(workdir, checkpoint.CHECKPOINTS)}"
    hint = "Resuming needs the same config and data; use another workdir for a new run."
    checkpoint_checks.check_same("config", source, rundir.comparable(saved.config),
                                 rundir.comparable(self.config), hint)
    checkpoint_checks.check_same("feature schema", source, saved.schema, self.schema, hint)
    checkpoint_checks.check_same("schedule (rows per day changed?)", source,
                                 saved.progress["schedule"], self.schedule, hint)
    self.check_data(rundir.path(workdir, rundir.DATA_FINGERPRINT), "Resuming")

  def check_data(self, fingerprint_file: str, doing: str):
    """Raises UserError unless the run whose `fingerprint_file` it is was trained on this
    data or config.allow_other_data; warns if there is no such file (`fingerprint.check`)."""
    fingerprint.check(fingerprint_file, self.data, bool(self.config.get("allow_other_data")),
                      doing)


@dataclasses.dataclass
class Start:
  """Where training starts: a state, its step, and the iterator positioned there, if any."""
  state: dict
  step: int = 0
  batches: grain.DatasetIterator | None = None
  warm_start: dict | None = None
  seconds_before: float = 0.0
  # The stopper of the segment `step` lies inside.
  stopper: early_stopping.Stopper | None = None


def restore(checkpoints: checkpoint.Checkpoints, identity: Identity, abstract_state,
            batches: schedule.Batches, policy: early_stopping.Policy) -> Start | None:
  """Step 1: the run continued from its latest readable checkpoint; None if it has none.

  abstract_state: shapes, dtypes and shardings of the train state, which a restore takes.
  """
  def into(saved: checkpoint.Saved) -> checkpoint.Into:
    identity.check(saved, checkpoints.workdir)
    progress = progress_lib.Progress.from_json(saved.progress)
    return checkpoint.Into(batches.iterator(progress.segment),
                           policy.abstract_best(progress, abstract_state["params"]))

  restored = checkpoints.restore_latest(train_state.without_scratch(abstract_state), into)
  if restored is None:
    return None
  print(f"Resuming {checkpoints.workdir} from its checkpoint at step {restored.saved.step}.")
  progress = progress_lib.Progress.from_json(restored.saved.progress)
  return Start(train_state.with_scratch(restored.state), restored.saved.step, restored.iterator,
               progress.warm_start, progress.train_seconds,
               policy.restore(progress, restored.best))


# config.init_from, the model and its fresh params -> (params, what was loaded from where).
WarmStart = Callable[[ml_collections.ConfigDict, object, dict], tuple[dict, dict]]


def load_subtrees(config: ml_collections.ConfigDict, model, params: dict) -> tuple[dict, dict]:
  """The WarmStart of a run: the config.init_load subtrees of config.init_from."""
  return checkpoint.warm_start(config.init_from, params, model.schema.to_dict(),
                               config.init_load)


def load_with_new_scenes(config: ml_collections.ConfigDict, model, params: dict
                         ) -> tuple[dict, dict]:
  """The WarmStart of a run with scenes added: the embeddings of config.init_from, a run on
  fewer scenes, copied by scene name (`checkpoint.warm_start_new_scenes`)."""
  return checkpoint.warm_start_new_scenes(
      config.init_from, model, params, lambda schema: models.get_model(schema, config.model))


def initialize(config: ml_collections.ConfigDict, model, txs: dict, abstract_state,
               identity: Identity, warm_start: WarmStart = load_subtrees) -> Start:
  """Steps 2 and 3: a warm start from config.init_from if set (a run on this data, by
  `identity`), else fresh parameters."""
  init_rng = jax.random.key(config.seed)
  num_components = early_stopping.stopped_apart(config, model)
  if not config.init_from:
    # Created where it lives: a row-sharded table is never whole on one device.
    init = jax.jit(lambda rng: train_state.init_state(model.init(rng), txs, num_components),
                   out_shardings=jax.tree.map(lambda a: a.sharding, abstract_state))
    return Start(init(init_rng))
  source = checkpoint.run_folder_of(config.init_from)
  if source is not None:
    identity.check_data(os.path.join(source, rundir.DATA_FINGERPRINT), "Warm starting from")
  params, warm = warm_start(config, model, model.init(init_rng))
  print(f"Warm start: {', '.join(warm['loaded'])} from {warm['path']}.")
  return Start(train_state.init_state(params, txs, num_components), warm_start=warm)


class Saver:
  """Saves the checkpoints `restore` reads: the state, the data position, the `Progress`
  and the early-stopping state of the segment in progress."""

  def __init__(self, checkpoints: checkpoint.Checkpoints, identity: Identity, start: Start):
    self.checkpoints = checkpoints
    self.identity = identity
    self.warm_start = start.warm_start
    self.seconds_before = start.seconds_before      # training time of earlier sessions
    self.session_start = time.time()

  def train_seconds(self) -> float:
    return self.seconds_before + time.time() - self.session_start

  def save(self, step: int, index: int, segment: schedule.Segment, state,
           iterator: grain.DatasetIterator, stopper: early_stopping.Stopper | None,
           metrics: dict | None):
    """Starts an async save at `step`, inside segment `index`; `metrics` rank it."""
    progress = progress_lib.Progress(
        step, segment.day, segment.round, segment.phase, index, self.identity.schedule,
        self.warm_start, self.train_seconds(), stopper.to_json() if stopper else None)
    self.checkpoints.save(step, train_state.without_scratch(state), iterator,
                          progress.to_json(), self.identity.config, self.identity.schema,
                          metrics=metrics, best=stopper.best_params if stopper else None)
