"""The trainer: data -> model -> per-phase optimizers -> schedule -> loop -> evaluation.

`train_and_evaluate(config, workdir)` is one training run (the run kind 'single' of
`mtms_jax.runs`); it assembles the parts, which live beside it: schedule.py, train_state.py,
step.py (the pure update), early_stopping.py, loop.py, resume.py.

Checkpoints (config.checkpoint): every `every_steps` steps, at the end of training and on
SIGTERM/SIGINT; rerunning the same command resumes from the workdir's latest checkpoint and
ends with the same parameters and results.json as an uninterrupted run (bitwise on CPU).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import grain
import jax
import ml_collections
from mtms_jax import checkpoint, models, parallel
from mtms_jax.eval import metrics
from mtms_jax.data import pipeline
from mtms_jax.eval import prediction
from mtms_jax.eval import validation
from mtms_jax import optim
from mtms_jax.train import early_stopping
from mtms_jax.train import step as step_lib
from mtms_jax.train import train_state
from mtms_jax.data import registry
from mtms_jax import rundir
from mtms_jax.train import loop
from mtms_jax.train import resume
from mtms_jax.train import schedule


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains `config` into `workdir` and returns the flat results dict (also results.json).

  Rerun with the same config and workdir, it resumes from the workdir's latest checkpoint.
  results.json holds only what the run computes; wall-clock seconds and where the run
  resumed or warm-started from go to run.json.
  """
  data = registry.load_data(config.data)
  days = validation.split(config, data)
  train_days, val_data, test_data = days.train, days.val, days.test
  early_stopping.check_validation_metrics(config, val_data)

  plan = parallel.make_plan(config)
  model = models.get_model(data.schema, parallel.model_config(plan, config.model))
  init_rng = jax.random.key(config.seed)
  segments = schedule.make_schedule(config, {d: len(ds) for d, ds in train_days.items()})
  phase_total = {p: sum(s.steps for s in segments if s.phase == p) for p in config.schedule.order}
  txs = optim.make_phase_txs(config, model, jax.eval_shape(model.init, init_rng), phase_total)
  abstract_state = jax.eval_shape(lambda rng: train_state.init_state(model.init(rng), txs),
                                  init_rng)
  parallel.check_tables(plan, abstract_state["params"])
  shardings = parallel.state_shardings(plan, abstract_state)
  update_fns = {phase: parallel.compile_update(plan, update_factory(model, tx, phase, config),
                                               shardings)
                for phase, tx in txs.items()}
  predict_fn = prediction.make_predict_fn(model, prediction.prediction_phases(config, model))
  phase_predict_fns = {phase: prediction.make_predict_fn(model, phase) for phase in txs}
  def make_iterator(index: int) -> grain.DatasetIterator:
    """Segment `index`'s batches: shuffles of its day's rows (its share of them), seeded by
    the day, continuing where the segments of the same rows before it were planned to end,
    so each segment reads its own batches whether or not an earlier one stopped early."""
    segment = segments[index]
    first = sum(s.steps for s in segments[:index] if s.source == segment.source)
    data = train_days[segment.day]
    columns = {k: v[schedule.row_slice(len(data), segment.rows)] for k, v in data.columns.items()}
    return pipeline.train_iterator(columns, config.batch_size, segment.steps,
                                   seed=config.seed * 100_003 + segment.day, name=data.name,
                                   first_batch=first, share=parallel.process_share(),
                                   place=functools.partial(parallel.place_batch, plan))

  def score_val(params) -> dict:
    return metrics.report("val", val_data.columns,
                          prediction.predict(predict_fn, params, val_data, config.eval_batch_size),
                          data.schema.scenes)

  def score_phase(phase: str, params) -> tuple[float, dict]:
    """The phase's early-stopping score on the validation rows, and what to log of it."""
    report = metrics.report("val", val_data.columns, prediction.predict(
        phase_predict_fns[phase], params, val_data, config.eval_batch_size), data.schema.scenes)
    es = config.phases[phase].early_stopping
    score = (early_stopping.phase_loss(report, config.phases[phase]) if es.metric == "loss"
             else report[es.metric])
    scalars = {f"val/{phase}/{es.metric.replace('/', '_')}": score}
    scalars.update({f"val/{phase}/{task}/auc": report[f"val/all/{task}/auc"]
                    for task in data.schema.metric_tasks})
    return score, scalars

  # What a checkpoint must match to be resumed, as its JSON items read back.
  identity = json.loads(json.dumps({"config": json.loads(config.to_json_best_effort()),
                                    "schema": data.schema.to_dict(),
                                    "schedule": [dataclasses.asdict(s) for s in segments]}))
  with checkpoint.Checkpoints(workdir, config.checkpoint) as checkpoints:
    start = resume.resume_or_start(config, workdir, model, txs, init_rng, checkpoints, make_iterator,
                            identity, parallel.with_shardings(abstract_state, shardings))
    start.state = jax.device_put(start.state, shardings)
    rundir.write_config(workdir, config)
    rundir.write_text(workdir, rundir.SCHEMA, data.schema.to_json())
    with rundir.RunWriter(workdir, start.step) as writer:
      runner = loop.Loop(config, workdir, segments, update_fns, make_iterator, checkpoints, writer,
                  score_val, score_phase, model.phases, identity, start.warm_start,
                  start.seconds_before)
      state = runner.run(start.state, start.step, start.batches, start.stopper)
      results = prediction.evaluate(predict_fn, state["params"], test_data, config.eval_batch_size,
                         split="test")
      results.update(score_val(state["params"]))
      if config.get("save_predictions", False):   # for compare.py's paired significance tests
        prediction.save_predictions(predict_fn, state["params"], test_data, config.eval_batch_size,
                         rundir.path(workdir, rundir.PREDICTIONS))
      results["train_steps"] = int(state["step"])     # updates done (early stops skip some)
      writer.write(runner.total, results, day=config.test_day, phase="eval")
    best_step = checkpoints.best_step()

  run_info = {"train_seconds": runner.train_seconds(), "resumed_from_step": start.step or None,
              "warm_start": start.warm_start, "best_checkpoint_step": best_step}
  rundir.write_json(workdir, rundir.RUN_INFO, run_info, sort_keys=False)
  rundir.write_json(workdir, rundir.RESULTS, results)    # last: the run has finished
  print(f"\nTest day {config.test_day} ({len(test_data)} rows), model {config.model.name}, "
        f"{results['train_steps']} steps, {run_info['train_seconds']:.1f} s of training:")
  print(metrics.format_table(results, "test", data.schema.scenes))
  return results


def update_factory(model, tx, phase: str, config: ml_collections.ConfigDict):
  """axis_name -> the phase's pure update (`step.make_update`), for `parallel.compile_update`."""
  return lambda axis_name: step_lib.make_update(model, tx, phase, config.phases[phase],
                                                config.seed, axis_name)
