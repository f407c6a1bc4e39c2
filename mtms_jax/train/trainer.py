"""The trainer: data -> model -> per-phase optimizers -> schedule -> loop -> evaluation.

`train_and_evaluate(config, workdir)` is one training run (the run kind 'single' of
`mtms_jax.runs`). It only assembles the parts, which live beside it: schedule.py (the
segments and their batches), train_state.py, step.py (the pure update), early_stopping.py,
loop.py, resume.py and progress.py (what checkpoints hold), and the validation rows'
`Evaluator` (eval/validation.py).

Checkpoints (config.checkpoint): every `every_steps` steps, at the end of training and on
SIGTERM/SIGINT; rerunning the same command resumes from the workdir's latest checkpoint and
ends with the same parameters and results.json as an uninterrupted run (bitwise on CPU).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence

import jax
import ml_collections

from mtms_jax import checkpoint, models, optim, parallel, rundir
from mtms_jax.data import Dataset, fingerprint, registry
from mtms_jax.eval import metrics, prediction, validation
from mtms_jax.schema import FeatureSchema
from mtms_jax.train import early_stopping, loop, resume, schedule, train_state
from mtms_jax.train import step as step_lib


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       save_predictions: bool = False,
                       warm_start: resume.WarmStart = resume.load_subtrees,
                       frozen_scenes: Mapping[str, Sequence[str]] | None = None
                       ) -> dict[str, float]:
  """Trains `config` into `workdir` and returns the flat results dict (also results.json).

  Rerun with the same config and workdir, it resumes from the workdir's latest checkpoint.
  results.json holds only what the run computes; wall-clock seconds and where the run
  resumed or warm-started from go to run.json.

  Args:
    save_predictions: also save the test day's predictions (test_predictions.npz), for the
      paired significance tests of a comparison (runs/compare.py).
    warm_start: how config.init_from is loaded into the fresh parameters.
    frozen_scenes: phase -> the scenes (names) whose components its updates keep as they
      are (`freezing.keep_frozen`; runs/add_scene.py).
  """
  source = registry.load_source(config.data)
  data_fingerprint = fingerprint.of(source, config.data)
  data = registry.configured_scenes(source, config.data)
  days = validation.split(config, data)
  early_stopping.check_validation_metrics(config, days.val)
  parts = assemble(config, data.schema, days, frozen_scenes or {}, data_fingerprint)
  with checkpoint.Checkpoints(workdir, config.checkpoint) as checkpoints:
    start = (resume.restore(checkpoints, parts.identity, parts.abstract_state, parts.batches,
                            parts.stopping)
             or resume.initialize(config, parts.model, parts.txs, parts.abstract_state,
                                  parts.identity, warm_start))
    start.state = jax.device_put(start.state, parts.shardings)
    rundir.write_config(workdir, config)
    rundir.write_text(workdir, rundir.SCHEMA, data.schema.to_json())
    rundir.write_json(workdir, rundir.DATA_FINGERPRINT, data_fingerprint)
    with rundir.RunWriter(workdir, start.step) as writer:
      saver = resume.Saver(checkpoints, parts.identity, start)
      runner = loop.Loop(config, parts.segments, parts.update_fns, parts.batches,
                         parts.evaluator, parts.stopping, saver, writer)
      state = runner.run(start)
      predictions = rundir.path(workdir, rundir.PREDICTIONS) if save_predictions else None
      results = final_results(config, parts.evaluator, state, days.test, predictions)
      writer.write(runner.total, results, day=config.test_day, phase="eval")
    best_step = checkpoints.best_step()

  run_info = {"train_seconds": saver.train_seconds(), "resumed_from_step": start.step or None,
              "warm_start": start.warm_start, "best_checkpoint_step": best_step}
  rundir.write_json(workdir, rundir.RUN_INFO, run_info, sort_keys=False)
  rundir.write_json(workdir, rundir.RESULTS, results)    # last: the run has finished
  print(f"\nTest day {config.test_day} ({len(days.test)} rows), model {config.model.name}, "
        f"{results['train_steps']} steps, {run_info['train_seconds']:.1f} s of training:")
  print(metrics.format_table(results, "test", data.schema.scenes))
  return results


@dataclasses.dataclass(frozen=True)
class Parts:
  """The parts of a training run, assembled from its config and data."""
  model: object                           # `models.get_model`: MTMS or a joint model
  segments: list[schedule.Segment]
  txs: dict[str, optim.PhaseOptimizer]
  shardings: object                       # where each leaf of the train state lives
  abstract_state: object                  # its shapes, dtypes and shardings
  update_fns: dict[str, Callable]         # phase -> its compiled update
  batches: schedule.Batches
  evaluator: validation.Evaluator
  stopping: early_stopping.Policy
  identity: resume.Identity


def assemble(config: ml_collections.ConfigDict, schema: FeatureSchema, days: validation.Split,
             frozen_scenes: Mapping[str, Sequence[str]], data_fingerprint: dict) -> Parts:
  """The run's parts; raises on a config the data or devices cannot take, before training.
  data_fingerprint: of the data the days are of (`data.fingerprint.of`)."""
  plan = parallel.make_plan(config)
  model = models.get_model(schema, parallel.model_config(plan, config.model))
  init_rng = jax.random.key(config.seed)
  segments = schedule.make_schedule(config, {d: len(ds) for d, ds in days.train.items()})
  phase_total = {p: sum(s.steps for s in segments if s.phase == p) for p in config.schedule.order}
  txs = optim.make_phase_txs(config, model, jax.eval_shape(model.init, init_rng), phase_total)
  num_components = early_stopping.stopped_apart(config, model)
  abstract_state = jax.eval_shape(
      lambda rng: train_state.init_state(model.init(rng), txs, num_components), init_rng)
  parallel.check_tables(plan, abstract_state["params"])
  shardings = parallel.state_shardings(plan, abstract_state)
  update_fns = {phase: parallel.compile_update(
                    plan, update_factory(model, tx, phase, config, frozen_scenes.get(phase, ())),
                    shardings)
                for phase, tx in txs.items()}
  batches = schedule.Batches(segments, days.train, config.batch_size, config.seed,
                             parallel.process_share(),
                             functools.partial(parallel.place_batch, plan))
  evaluator = validation.Evaluator.of(config, model, days.val)
  return Parts(model, segments, txs, shardings,
               parallel.with_shardings(abstract_state, shardings), update_fns, batches,
               evaluator, early_stopping.Policy.of(config, model, evaluator.phase_score),
               resume.Identity.of(config, schema, segments, data_fingerprint))


def update_factory(model, tx, phase: str, config: ml_collections.ConfigDict,
                   frozen_scenes: Sequence[str] = ()):
  """axis_name -> the phase's pure update (`step.make_update`), for `parallel.compile_update`."""
  return lambda axis_name: step_lib.make_update(model, tx, phase, config.phases[phase],
                                                config.seed, axis_name, frozen_scenes)


def final_results(config: ml_collections.ConfigDict, evaluator: validation.Evaluator, state,
                  test: Dataset, predictions_path: str | None) -> dict[str, float]:
  """The trained model's metrics on the test day, then on the validation rows, and the
  updates done; its test-day predictions saved to `predictions_path` if given."""
  params = state["params"]
  results = prediction.evaluate(evaluator.predict_fn, params, test, config.eval_batch_size,
                                split="test")
  results.update(evaluator.metrics(params))
  if predictions_path:
    prediction.save_predictions(evaluator.predict_fn, params, test, config.eval_batch_size,
                                predictions_path)
  results["train_steps"] = int(state["step"])     # updates done (early stops skip some)
  return results
