"""Validation rows, early stopping with restore, and their resume; regularisation knobs."""

import json
import math

import jax
import ml_collections
import numpy as np
import optax
import pytest

from experiments import common
from mtms_jax import optim
from mtms_jax.errors import UserError
from mtms_jax.eval import validation
from mtms_jax.train import early_stopping, loop, schedule, trainer
from mtms_jax.train import step as step_lib


def _split_config(**validation_fields):
  config = common.base_config("smoke")
  config.validation.update(validation_fields)
  return config


def test_held_out_tail_of_each_training_day_is_validation(tiny_data):
  days = validation.split(_split_config(fraction=0.1, max_rows=10**6), tiny_data)
  day_of = tiny_data.columns["day"]
  held_out = []
  for d in (0, 1, 2):
    rows = np.flatnonzero(day_of == d)
    keep = len(rows) - round(0.1 * len(rows))
    np.testing.assert_array_equal(days.train[d].columns["ids"], tiny_data.columns["ids"][rows[:keep]])
    held_out.append(rows[keep:])
  np.testing.assert_array_equal(days.val.columns["ids"],
                                tiny_data.columns["ids"][np.concatenate(held_out)])
  assert set(days.test.columns["day"]) == {3}
  np.testing.assert_array_equal(days.val.truth["ctr"],
                                tiny_data.truth["ctr"][np.concatenate(held_out)])


def test_validation_rows_are_capped_evenly_and_a_day_can_be_chosen(tiny_data):
  days = validation.split(_split_config(max_rows=100), tiny_data)
  assert len(days.val) == 100 and set(days.val.columns["day"]) == {0, 1, 2}
  config = _split_config(day=2)
  config.train_days = (0, 1)
  days = validation.split(config, tiny_data)
  assert set(days.val.columns["day"]) == {2} and len(days.train[0]) == 3000


@pytest.mark.parametrize("fields, train_days, match", [
    ({"day": 3}, (0, 1, 2), "validation.day=3 is the test day or a training day"),
    ({"day": 1}, (0, 1, 2), "validation.day=1 is the test day or a training day"),
    ({"fraction": 0.0}, (0, 1, 2), r"validation.fraction=0.0: expected a share"),
    ({"max_rows": 0}, (0, 1, 2), "max_rows=0: expected at least 1"),
    ({}, (0, 3), "test_day=3 is also a training day")])
def test_validation_that_overlaps_training_or_test_is_refused(tiny_data, fields, train_days,
                                                              match):
  config = _split_config(**fields)
  config.train_days = train_days
  with pytest.raises(UserError, match=match):
    validation.split(config, tiny_data)


def _stopper(mode="min", patience=2, min_delta=0.0):
  return early_stopping.EarlyStopping(mode, patience, min_delta, restore_best=True,
                                      trained=("ranking",))


def test_early_stopping_counts_evaluations_without_improvement():
  stopper = _stopper(patience=2, min_delta=0.1)
  params = {"ranking": {"w": jax.numpy.ones(3)}}
  assert not stopper.update(1.0, 0, params)
  assert not stopper.update(0.95, 5, params)          # within min_delta: no improvement
  assert not stopper.update(0.5, 10, params)          # improves: the count restarts
  assert (stopper.best_step, stopper.bad_evals) == (10, 0)
  assert not stopper.update(math.nan, 15, params)     # NaN never improves
  assert stopper.update(0.6, 20, params)              # second evaluation without improving
  assert stopper.to_json() == {"best_score": 0.5, "best_step": 10, "bad_evals": 2,
                               "has_best_params": True}
  restored = _stopper()
  restored.load_json(stopper.to_json())
  assert (restored.best_score, restored.best_step, restored.bad_evals) == (0.5, 10, 2)
  assert not _stopper(patience=0).update(2.0, 1, params)


def test_best_params_are_a_copy_not_an_alias():
  stopper = _stopper()
  params = {"ranking": {"w": jax.numpy.ones(3)}}
  stopper.update(1.0, 0, params)
  assert stopper.best_params["ranking"]["w"] is not params["ranking"]["w"]
  np.testing.assert_array_equal(stopper.best_params["ranking"]["w"], np.ones(3))


@pytest.mark.parametrize("metric, mode, expected", [
    ("loss", "auto", "min"), ("val/all/ctr/auc", "auto", "max"),
    ("val/all/cvr/logloss", "auto", "min"), ("val/all/ctr/calibration", "max", "max")])
def test_metric_mode(metric, mode, expected):
  assert early_stopping.metric_mode(metric, mode) == expected


def test_a_mode_that_cannot_be_inferred_is_refused():
  with pytest.raises(UserError, match="set early_stopping.mode"):
    early_stopping.metric_mode("val/all/ctr/calibration", "auto")


def _overfitting_config(**early_stopping):
  """ESMM on one small day, a high learning rate and many epochs: it overfits quickly."""
  config = common.joint_config("esmm", "smoke")
  config.data.kwargs.update(rows_per_day=3000)
  config.train_days, config.test_day = (0,), 1
  joint = config.phases.joint
  joint.update(steps=0, epochs=30.0)
  joint.optimizer.learning_rate = 0.005
  joint.early_stopping.update({"patience": 2, "evals_per_epoch": 4, "min_eval_steps": 1,
                              **early_stopping})
  config.checkpoint.every_steps = 7
  config.log_every = 5
  return config


def _early_stopping_scores(workdir):
  lines = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
  return [x["val/joint/loss"] for x in lines if x["phase"] == "early_stopping"]


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("stopped_run")
  results = trainer.train_and_evaluate(_overfitting_config(), str(workdir))
  return workdir, results


def test_phase_stops_early_and_returns_to_its_best_parameters(stopped_run):
  workdir, results = stopped_run
  planned = math.ceil(30 * 2700 / 64)
  assert results["train_steps"] < planned / 3
  scores = _early_stopping_scores(workdir)
  # The run ended after `patience` evaluations without improvement on one in the middle ...
  best = int(np.argmin(scores))
  assert 0 < best == len(scores) - 3 and min(scores[-2:]) >= scores[best]
  # ... and back at the parameters of its best evaluation: its score is the final model's.
  final = validation.phase_loss(results, _overfitting_config().phases.joint)
  assert final == pytest.approx(scores[best], rel=1e-6)


def test_early_stopped_run_resumes_exactly(stopped_run, tmp_path, monkeypatch):
  workdir, _ = stopped_run
  scores = _early_stopping_scores(workdir)
  assert len(scores) >= 5      # evaluations every 11 steps: 4 of them before step 50
  # Stopped (SIGINT) after a few evaluations, inside the segment: its best-so-far
  # parameters are saved with the checkpoint, and the resumed run stops where the
  # uninterrupted one did, with the same parameters.
  monkeypatch.setenv(loop.TEST_SIGNAL_ENV, "50:INT")
  with pytest.raises(loop.Interrupted, match="SIGINT at step 50"):
    trainer.train_and_evaluate(_overfitting_config(), str(tmp_path))
  monkeypatch.delenv(loop.TEST_SIGNAL_ENV)
  trainer.train_and_evaluate(_overfitting_config(), str(tmp_path))
  assert json.loads((tmp_path / "run.json").read_text())["resumed_from_step"] == 50
  for name in ("results.json", "metrics.jsonl"):
    assert (tmp_path / name).read_text() == (workdir / name).read_text(), name


def test_restore_best_off_keeps_the_last_parameters(tmp_path):
  config = _overfitting_config(restore_best=False)
  results = trainer.train_and_evaluate(config, str(tmp_path))
  final = validation.phase_loss(results, config.phases.joint)
  scores = _early_stopping_scores(tmp_path)
  assert final == pytest.approx(scores[-1], rel=1e-6) and final > min(scores)


def test_bad_early_stopping_config_fails_before_training(tmp_path):
  config = _overfitting_config(metric="val/all/ctr/acu")
  with pytest.raises(UserError, match="early_stopping.metric='val/all/ctr/acu'"):
    trainer.train_and_evaluate(config, str(tmp_path))
  assert not (tmp_path / "checkpoints").exists()


def test_lr_schedule_warms_up_then_decays():
  config = ml_collections.ConfigDict({"warmup_steps": 10, "decay": "linear",
                                      "final_factor": 0.1})
  schedule = optim.lr_schedule(config, total_steps=110)
  np.testing.assert_allclose([schedule(0), schedule(5), schedule(10), schedule(60),
                              schedule(110)], [0.0, 0.5, 1.0, 0.55, 0.1], rtol=1e-6)
  cosine = optim.lr_schedule(ml_collections.ConfigDict({"decay": "cosine"}), 100)
  np.testing.assert_allclose([cosine(0), cosine(50), cosine(100)], [1.0, 0.5, 0.0],
                             atol=1e-6)


def test_weight_decay_decays_network_kernels_only():
  params = {"embedding": {"tables": {"dim4": np.ones((8, 4))},
                          "towers": {"ctr": {"kernel0": np.ones((2, 3, 4)),
                                             "bias0": np.ones((2, 4))}}},
            "ranking": {"input": {"kernel": np.ones((3, 4)), "bias": np.ones(4)},
                        "scene_bias": np.ones((2, 4))}}
  mask = jax.tree_util.tree_map_with_path(optim.decays_weight, params)
  assert jax.tree.leaves(mask) == [False, False, True, False, True, False]
  tx = optim.make_optimizer(ml_collections.ConfigDict(
      {"name": "sgd", "learning_rate": 0.1, "weight_decay": 0.5}))
  updates, _ = tx.update(jax.tree.map(np.zeros_like, params), tx.init(params), params)
  new = optax.apply_updates(params, updates)
  assert new["ranking"]["input"]["kernel"][0, 0] == pytest.approx(1 - 0.1 * 0.5)
  assert new["ranking"]["input"]["bias"][0] == 1.0
  assert new["embedding"]["tables"]["dim4"][0, 0] == 1.0


def test_dropout_is_drawn_from_the_step_and_keeps_the_mean():
  rows = {"dim4": jax.numpy.ones((2000, 2, 5, 4))}
  dense = jax.numpy.ones((2000, 3))
  a, _ = step_lib.dropout(jax.random.key(3), 0.25, rows, dense)
  b, _ = step_lib.dropout(jax.random.key(3), 0.25, rows, dense)
  c, _ = step_lib.dropout(jax.random.key(4), 0.25, rows, dense)
  np.testing.assert_array_equal(a["dim4"], b["dim4"])
  assert (a["dim4"] != c["dim4"]).any()
  assert float((a["dim4"] == 0).mean()) == pytest.approx(0.25, abs=0.01)
  assert float(a["dim4"].mean()) == pytest.approx(1.0, abs=0.02)


def test_phases_can_read_their_own_share_of_each_day(tiny_data):
  config = common.base_config()
  config.phases.embedding.update(rows=(0.0, 0.75), min_steps=0)
  config.phases.ranking.update(rows=(0.75, 1.0), min_steps=0)
  segments = schedule.make_schedule(config, {0: 4000, 1: 4000, 2: 4000})
  steps = {s.phase: s.steps for s in segments}
  epochs = {p: config.phases[p].epochs for p in ("embedding", "ranking")}
  assert steps == {"embedding": math.ceil(epochs["embedding"] * 3000 / 1024),
                   "ranking": math.ceil(epochs["ranking"] * 1000 / 1024)}
  config.phases.ranking.min_steps = 200
  assert schedule.make_schedule(config, {0: 4000, 1: 4000, 2: 4000})[1].steps == 200
  config.phases.ranking.rows = (0.75, 0.5)
  with pytest.raises(UserError, match=r"phases.ranking.rows=\(0.75, 0.5\)"):
    schedule.make_schedule(config, {0: 4000})


def _component_report():
  """A validation report of three scenes: 'big' with many rows, 'small' and 'tiny' with few,
  'tiny' without clicked rows."""
  report = {}
  for scene, rows, clicked, ctr_loss, cvr_loss in (("big", 5000, 500, 0.30, 0.60),
                                                    ("small", 300, 30, 0.20, 0.50),
                                                    ("tiny", 100, 0, 0.40, None)):
    report.update({f"val/{scene}/ctr/count": rows, f"val/{scene}/ctr/logloss": ctr_loss,
                   f"val/{scene}/cvr/count": clicked})
    if cvr_loss is not None:
      report[f"val/{scene}/cvr/logloss"] = cvr_loss
  components = tuple((scene, (task,)) for scene in ("big", "small", "tiny")
                     for task in ("ctr", "cvr"))
  return report, components


def test_each_component_is_scored_on_its_own_rows_and_task():
  report, components = _component_report()
  scores = validation.component_scores(report, "loss", components)
  np.testing.assert_allclose(scores[:4], [0.30, 0.60, 0.20, 0.50])
  assert scores[4] == 0.40 and np.isnan(scores[5])      # no clicked rows: no CVR score


def test_components_with_few_rows_are_scored_on_their_rows_pooled():
  report, components = _component_report()
  scores = validation.component_scores(report, "loss", components, min_rows=1000)
  # CTR: big alone; small and tiny pooled, their log losses weighted by rows.
  pooled_ctr = (300 * 0.20 + 100 * 0.40) / 400
  np.testing.assert_allclose(scores[[0, 2, 4]], [0.30, pooled_ctr, pooled_ctr])
  # CVR: every scene below 1000 clicked rows; tiny has none, so it adds nothing to the pool.
  pooled_cvr = (500 * 0.60 + 30 * 0.50) / 530
  np.testing.assert_allclose(scores[[1, 3, 5]], [pooled_cvr] * 3)


def test_a_pooled_metric_leaves_out_the_scenes_it_cannot_score():
  report, components = _component_report()
  report.update({"val/big/ctr/auc": 0.7, "val/small/ctr/auc": math.nan, "val/tiny/ctr/auc": 0.6})
  ctr = tuple(c for c in components if c[1] == ("ctr",))
  scores = validation.component_scores(report, "val/all/ctr/auc", ctr, min_rows=1000)
  np.testing.assert_allclose(scores, [0.7, 0.6, 0.6])     # small's one-class AUC left out
