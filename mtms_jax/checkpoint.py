"""Checkpoints of a run (orbax): what one holds, async saves, resume with fallback, warm start.

A workdir's checkpoints live in `<workdir>/checkpoints/<step>/`, one orbax step each, with
the items:

  state     the train state {'params', 'opt': {phase: optax state}, 'step'}
  data      the grain iterator of the day in progress (its position in that day's batches)
  progress  JSON: where the run stands (the trainer's `train.progress.Progress`); this module
            saves and reads it back without looking inside
  config    JSON: the run's config
  schema    JSON: the feature schema
  metrics   (orbax's) {best_metric: value}, when a best checkpoint is tracked
  best      the best parameters so far of the phase in progress, when it is stopped early
            and restores them (`train.early_stopping`); its score is in progress

There is no RNG item: the update is deterministic, and the data order is a function of the
seed, the day and the iterator's position.

A restore reads a checkpoint in two steps: its JSON items first (`Saved`), from which the
caller checks that it is this run's and builds what the arrays are restored into (`Into`:
the data iterator to position, the shapes of `best`); then its arrays.

Saves are asynchronous: `save` returns once the arrays are copied to host memory, and orbax
writes them in a thread into a temporary folder that it renames when complete, so a killed
save leaves no step folder. In that thread, once the items are written and before the
rename, process 0 writes the SHA-256 of every item file to `<step>/sha256sums.json`
(digests.py), so a complete checkpoint has its sums. The last `keep` checkpoints and the
best one by `best_metric` are kept; orbax deletes older ones only after a newer save has
completed.

A restore takes the newest checkpoint that is whole: its files match their sums (a
checkpoint written before sums were has none, and is read as it is), it reads, and its
parameters and optimizer state are finite. Any other is moved to `corrupt_checkpoints/`
with a one-line warning, and the next older one is tried.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
import shutil
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import checkpoint_managers

from mtms_jax import checkpoint_checks, digests, errors, orbax_errors
from mtms_jax.errors import UserError
from mtms_jax.schema import FeatureSchema

CHECKPOINTS = "checkpoints"              # folder of a workdir that holds its checkpoints
CORRUPT = "corrupt_checkpoints"          # where unreadable checkpoints are moved, not deleted
STATE, DATA, PROGRESS, CONFIG, SCHEMA, BEST = ("state", "data", "progress", "config", "schema",
                                              "best")
# orbax's suffix of a step's folder while it is written (renamed away when complete); on
# file systems without renames (object stores) it writes into the step's folder itself.
TMP_SUFFIX = ocp.path.atomicity_types.TMP_DIR_SUFFIX


@dataclasses.dataclass(frozen=True)
class Saved:
  """The JSON items of a checkpoint, read before its arrays."""
  step: int
  progress: dict
  config: dict
  schema: dict


@dataclasses.dataclass(frozen=True)
class Into:
  """What a checkpoint's arrays are restored into: a fresh iterator of the data it was
  reading, to position, and the shapes and dtypes of its `best` item (None: it has none)."""
  iterator: grain.DatasetIterator
  best: Any = None


@dataclasses.dataclass
class Restored:
  """A checkpoint read back: its JSON items, the train state, the iterator positioned
  where it stopped, and its `best` item, if any."""
  saved: Saved
  state: dict
  iterator: grain.DatasetIterator
  best: dict | None = None


def manager_options(config: ml_collections.ConfigDict, on_written: Callable[[], None] | None = None
                    ) -> ocp.CheckpointManagerOptions:
  """Async saves; keep the last `config.keep` and the best by `config.best_metric` (if set);
  `on_written` runs in the save's thread once its items are written, before the rename."""
  errors.expect(config.keep >= 1, "config.checkpoint.keep", config.keep, "> 0")
  errors.expect_choice("config.checkpoint.best_mode", config.best_mode, ("max", "min"))
  policies = [checkpoint_managers.LatestN(config.keep)]
  best_fn = None
  if config.best_metric:
    def best_fn(metrics):
      return metrics[config.best_metric]
    policies.append(checkpoint_managers.BestN(
        get_metric_fn=best_fn, reverse=config.best_mode == "min", n=1,
        keep_checkpoints_without_metrics=False))
  return ocp.CheckpointManagerOptions(
      enable_async_checkpointing=True,
      async_options=ocp.AsyncOptions(post_finalization_callback=on_written),
      cleanup_tmp_directories=True,        # folders of saves killed before they completed
      best_fn=best_fn, best_mode=config.best_mode,
      preservation_policy=checkpoint_managers.AnyPreservationPolicy(policies))


class Checkpoints:
  """The checkpoints of one workdir."""

  def __init__(self, workdir: str, config: ml_collections.ConfigDict):
    self.workdir = workdir
    self.config = config
    # Handlers named up front, so the state's metadata can be read before restoring it.
    handlers = {STATE: ocp.StandardCheckpointHandler(), BEST: ocp.StandardCheckpointHandler(),
                DATA: grain.checkpoint.CheckpointHandler(),
                **{k: ocp.JsonCheckpointHandler() for k in (PROGRESS, CONFIG, SCHEMA)}}
    self.directory = os.path.abspath(os.path.join(workdir, CHECKPOINTS))
    self._in_flight = collections.deque()   # steps saved, in order, whose sums are not written
    self._size = 0                          # bytes of the arrays of the last save
    orbax_errors.drop_late_read_callbacks()
    orbax_errors.drop_abandoned_reads()       # before a read can fail: its echoes come any time
    self.manager = ocp.CheckpointManager(self.directory,
                                         options=manager_options(config, self._write_sums),
                                         item_handlers=handlers)

  def save(self, step: int, state, iterator: grain.DatasetIterator, progress: dict,
           run_config: dict, schema: dict, metrics: Mapping[str, float] | None = None,
           best: dict | None = None):
    """Starts an asynchronous save; `metrics` ranks it for the best checkpoint; `best`: the
    phase's best parameters so far, if it keeps them."""
    items = {STATE: ocp.args.StandardSave(state),
             DATA: grain.checkpoint.CheckpointSave(iterator),
             PROGRESS: ocp.args.JsonSave(progress),
             CONFIG: ocp.args.JsonSave(run_config),
             SCHEMA: ocp.args.JsonSave(schema)}
    if best is not None:
      items[BEST] = ocp.args.StandardSave(best)
    ranked = None
    if metrics is not None and self.config.best_metric:
      ranked = {self.config.best_metric: self._rank_value(metrics[self.config.best_metric])}
    self._in_flight.append(step)
    self._size = sum(x.nbytes for x in jax.tree.leaves((state, best)))
    try:   # waits for the save before, and raises its error
      self.manager.save(step, args=ocp.args.Composite(**items), metrics=ranked, force=True)
    except Exception as e:
      self._in_flight.pop()                 # not started
      self._raise_if_disk_full(e)
      raise

  def _raise_if_disk_full(self, error: BaseException):
    """Raises a one-line UserError in place of `error` if it is a full disk."""
    if not orbax_errors.disk_full(error):
      return
    self.manager.reload()
    raise UserError(
        f"no space left on the disk of {self.directory} to save a checkpoint: "
        f"{shutil.disk_usage(self.directory).free / 2**20:.1f} MiB free, a checkpoint needs "
        f"about {self._size / 2**20:.1f} MiB. The checkpoints before it are kept "
        f"(steps {self.manager.all_steps()}): free some space and rerun the same command"
    ) from None

  def _write_sums(self):
    """The post-finalization callback of a save (orbax's save thread, one save at a time, in
    the order of `save` calls): the sums of the step's temporary folder, before its rename."""
    step = self._in_flight.popleft()
    if jax.process_index() == 0:
      written = self._step_dir(step) + TMP_SUFFIX
      digests.write_sums(written if os.path.isdir(written) else self._step_dir(step))

  def _rank_value(self, value: float) -> float:
    # A NaN metric (e.g. AUC of a slice without positives) must never rank as the best.
    if not math.isnan(value):
      return value
    return float("-inf") if self.config.best_mode == "max" else float("inf")

  def restore_latest(self, abstract_state, into: Callable[[Saved], Into]) -> Restored | None:
    """The newest whole checkpoint, or None if there is none.

    Args:
      abstract_state: shapes and dtypes of the train state (`jax.eval_shape`).
      into: a checkpoint's JSON items -> what to restore its arrays into; raises if the
        checkpoint belongs to another run (config, schema or schedule differ). Its errors
        are not taken for corruption.

    A checkpoint whose files do not match their sums, that cannot be read, or whose arrays
    are not finite is moved to `<workdir>/corrupt_checkpoints/` with a warning, and the next
    older one is tried.
    """
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        digests.check_sums(self._step_dir(step))
        saved, saved_tree = self._read_json(step)
      except Exception as e:  # any read error: a half-written or damaged checkpoint
        self._set_aside(step, e)
        continue
      target = into(saved)
      checkpoint_checks.check_tree(
          abstract_state, saved_tree, f"checkpoint {self._step_dir(step)} (written by other "
          "model code? resume needs the same code; use a new --workdir)")
      restore = {STATE: ocp.args.StandardRestore(abstract_state),
                 DATA: grain.checkpoint.CheckpointRestore(target.iterator)}
      if target.best is not None:
        restore[BEST] = ocp.args.StandardRestore(target.best)
      try:
        items = self.manager.restore(step, args=ocp.args.Composite(**restore))
        checkpoint_checks.check_finite({STATE: items[STATE], BEST: items.get(BEST)})
      except Exception as e:
        self._set_aside(step, e)
        continue
      return Restored(saved, items[STATE], items[DATA], items.get(BEST))
    return None

  def _read_json(self, step: int) -> tuple[Saved, Any]:
    """The JSON items of checkpoint `step`, and the metadata of its state."""
    meta = self.manager.restore(step, args=ocp.args.Composite(
        **{k: ocp.args.JsonRestore() for k in (PROGRESS, CONFIG, SCHEMA)}))
    saved_tree = self.manager.item_metadata(step)[STATE]
    if saved_tree is None:
      raise ValueError(f"no metadata for item {STATE!r}")
    return Saved(step, meta[PROGRESS], meta[CONFIG], meta[SCHEMA]), saved_tree

  def _step_dir(self, step: int) -> str:
    return os.path.join(str(self.manager.directory), str(step))

  def _set_aside(self, step: int, error: Exception):
    target = os.path.join(self.workdir, CORRUPT, str(step))
    while os.path.exists(target):
      target += "+"
    os.makedirs(os.path.dirname(target), exist_ok=True)
    os.replace(self._step_dir(step), target)
    self.manager.reload()
    reason = " ".join(f"{type(error).__name__}: {error}".split())[:300]
    warnings.warn(f"checkpoint at step {step} is unreadable ({reason}); moved it to {target} "
                  "and falling back to the previous checkpoint", errors.Notice, stacklevel=3)

  def best_step(self) -> int | None:
    return self.manager.best_step() if self.config.best_metric else None

  def __enter__(self):
    return self

  def __exit__(self, exc_type, exc, traceback):
    # Waits for the save in flight: it holds a good state even when the loop failed after.
    try:
      self.manager.close()
    except Exception as e:
      if exc is None:                     # else the error on its way says more
        self._raise_if_disk_full(e)
        raise


# ----------------------------------------------------------------------------------------
# Warm start (init_from)
# ----------------------------------------------------------------------------------------
def find(path: str) -> tuple[str, int]:
  """(checkpoints folder, step) for a workdir, its checkpoints/ folder, or one step folder.

  A workdir or checkpoints/ folder gives its latest complete checkpoint.
  """
  expected = ("expected a workdir (holding checkpoints/), its checkpoints/ folder, or a step "
              "folder checkpoints/<step>")
  if not os.path.isdir(path):
    raise FileNotFoundError(f"init_from={path!r}: no such folder; {expected}")
  if os.path.isdir(os.path.join(path, CHECKPOINTS)):
    path = os.path.join(path, CHECKPOINTS)
  name = os.path.basename(os.path.normpath(path))
  if name.isdigit() and os.path.isdir(os.path.join(path, STATE)):
    return os.path.dirname(os.path.normpath(path)), int(name)
  steps = ocp.utils.checkpoint_steps(path)        # complete ones only
  if not steps:
    raise FileNotFoundError(f"init_from={path!r}: no complete checkpoint there; {expected}")
  return path, max(steps)


def run_folder_of(path: str) -> str | None:
  """The workdir of the checkpoint `find(path)` names; None if it is not in a workdir's
  checkpoints/ folder."""
  root = os.path.normpath(find(path)[0])
  return os.path.dirname(root) if os.path.basename(root) == CHECKPOINTS else None


def warm_start(path: str, params: dict, schema: dict, subtrees) -> tuple[dict, dict]:
  """`params` with the `subtrees` (top-level keys, e.g. ('embedding',)) loaded from `path`.

  Returns (params, source) where source = {'path', 'step', 'loaded'} says what was loaded.
  Raises ValueError if the checkpoint's feature schema differs from `schema`, or a loaded
  leaf is missing or has another shape or dtype: never a silent partial load.
  """
  subtrees = tuple(subtrees)
  unknown = sorted(set(subtrees) - set(params))
  errors.expect(subtrees and not unknown, "config.init_load", subtrees,
                f"a non-empty subset of the params' top-level keys {sorted(params)}")
  step_dir, saved_schema = saved_schema_of(path)
  try:
    digests.check_sums(str(step_dir))
  except ValueError as e:
    raise UserError(f"init_from checkpoint {step_dir} is damaged: {e}") from None
  checkpoint_checks.check_same(
      "feature schema", f"init_from checkpoint {step_dir}", saved_schema,
      json.loads(json.dumps(schema)), "Warm starts need the same fields, vocabularies, dims "
      "and scenes.")
  target = {"params": {k: jax.tree.map(ocp.utils.to_shape_dtype_struct, params[k])
                       for k in subtrees}}
  handler = ocp.PyTreeCheckpointHandler()
  checkpoint_checks.check_tree(target, handler.metadata(step_dir / STATE),
                               f"init_from checkpoint {step_dir}", partial=True)
  loaded = handler.restore(step_dir / STATE, args=ocp.args.PyTreeRestore(
      item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
      partial_restore=True))
  handler.close()
  source = {"path": str(step_dir), "step": int(step_dir.name), "loaded": list(subtrees)}
  return {**params, **loaded["params"]}, source


def saved_schema_of(path: str) -> tuple[epath.Path, dict]:
  """(step folder, its feature schema) of the checkpoint `find(path)` names."""
  root, step = find(path)
  # Item handlers read one item of another run's checkpoint, without a manager over its folder.
  step_dir = epath.Path(os.path.abspath(root)) / str(step)
  return step_dir, ocp.JsonCheckpointHandler().restore(step_dir / SCHEMA)


def warm_start_new_scenes(path: str, model, params: dict, make_model) -> tuple[dict, dict]:
  """`params` of `model` with params['embedding'] of the checkpoint at `path`, whose schema
  lacks some of `model`'s scenes: its scenes' components and tower slices are copied by
  scene name (`model.embedding_from`), the new scenes' stay as in `params`.

  make_model: schema -> the model of the same config on that schema (the checkpoint's).
  Raises UserError unless the two schemas have the same fields and every saved scene is
  among `model`'s.
  """
  _, saved = saved_schema_of(path)
  old_schema, schema = FeatureSchema.from_dict(saved), model.schema
  fields = lambda d: {k: d[k] for k in ("sparse", "dense")}  # noqa: E731
  checkpoint_checks.check_same("feature fields", f"init_from={path!r}", fields(saved),
                               fields(json.loads(json.dumps(schema.to_dict()))),
                               "Adding scenes needs the same fields, vocabularies and dims.")
  missing = sorted(set(old_schema.scenes) - set(schema.scenes))
  if missing:
    raise UserError(f"init_from={path!r} has scenes {missing} that the data lacks "
                    f"(its scenes: {list(schema.scenes)})")
  old_model = make_model(old_schema)
  abstract = jax.eval_shape(old_model.init, jax.random.key(0))
  old, source = warm_start(path, abstract, saved, ("embedding",))
  scenes = {i: schema.scenes.index(name) for i, name in enumerate(old_schema.scenes)}
  embedding = model.embedding_from(old_model, old["embedding"], params["embedding"], scenes)
  return {**params, "embedding": embedding}, {**source, "scenes": list(old_schema.scenes)}
