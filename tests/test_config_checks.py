"""The config pass: every key family's mistakes are a UserError naming the key, before any
data is loaded; on the command line one line on stderr and exit 2, no run folder left."""

import pathlib
import re
import subprocess
import sys

import pytest

from experiments import common
from experiments import regimes as regimes_experiment
from mtms_jax import config_checks, models
from mtms_jax.errors import UserError
from mtms_jax.runs import sweep

REPO = pathlib.Path(__file__).resolve().parents[1]
MTMS_SHARING = "expected one of ['none', 'tasks', 'all']"


def experiment(name):
  """The smoke config of experiments/NAME.py, or of a joint model by name."""
  if name in common.JOINT_MODELS:
    return common.joint_config(name, "smoke")
  return __import__(f"experiments.{name}", fromlist=["get_config"]).get_config("smoke")


def set_key(config, key, value):
  *parents, last = key.split(".")
  for part in parents:
    config = config[part]
  config[last] = value


CASES = {
    "model": [
        ("quickstart", "model.sharing", "bogus",
         f"config.model.sharing='bogus': {MTMS_SHARING}"),
        ("quickstart", "model.name", "nope", "config.model.name='nope': no model"),
        ("quickstart", "model.aggregation", "max", "config.model.aggregation='max'"),
        ("quickstart", "model.scene_route", "fast", "config.model.scene_route='fast'"),
        ("quickstart", "model.ranking_head", "each",
         "config.model.ranking_head='each': expected one of ['scene', 'shared']"),
        ("quickstart", "model.ranking_hidden", (), "config.model.ranking_hidden=(): expected a"),
        ("quickstart", "model.tower_hidden", (8, 0), "config.model.tower_hidden=(8, 0)"),
        ("quickstart", "model.cvr_tower_hidden", (0,), "config.model.cvr_tower_hidden=(0,)"),
        ("quickstart", "model.ranking_scenes", (-1,), "config.model.ranking_scenes=(-1,)"),
        ("mmoe", "model.num_experts", 0, "config.model.num_experts=0: expected >= 1"),
        ("ple", "model.num_levels", 0, "config.model.num_levels=0: expected >= 1"),
        ("shared_bottom", "model.bottom_hidden", (), "config.model.bottom_hidden=()"),
        ("pepnet", "model.gate_hidden", 0, "config.model.gate_hidden=0: expected >= 1"),
        ("pepnet", "model.tower_hidden", (), "config.model.tower_hidden=(): expected a"),
        ("m2m", "model.scene_dim", 0, "config.model.scene_dim=0: expected >= 1"),
    ],
    "phases/loss": [
        ("quickstart", "phases.embedding.loss", "ctr+cvx",
         "config.phases.embedding.loss='ctr+cvx'"),
        ("quickstart", "phases.ranking.loss", "ctr+ctr", "config.phases.ranking.loss='ctr+ctr'"),
        ("quickstart", "phases.embedding.loss_weights", {"ctcrv": 2.0},
         "config.phases.embedding.loss_weights={'ctcrv': 2.0}"),
        ("quickstart", "phases.ranking.dropout", 1.0, "config.phases.ranking.dropout=1.0"),
        ("quickstart", "phases.ranking.rows", (0.75, 0.5),
         "config.phases.ranking.rows=(0.75, 0.5)"),
    ],
    "optimizer": [
        ("quickstart", "phases.ranking.optimizer.name", "adm",
         "config.phases.ranking.optimizer.name='adm': expected one of ['adagrad', 'adam', "
         "'adamw', 'sgd']"),
        ("quickstart", "phases.ranking.optimizer.decay", "step",
         "config.phases.ranking.optimizer.decay='step'"),
        ("quickstart", "phases.embedding.optimizer.embedding", "adagrad",
         "config.phases.embedding.optimizer.embedding='adagrad'"),
        ("quickstart", "phases.embedding.optimizer.clip_norm", 1.0,
         "config.phases.embedding.optimizer.clip_norm needs the dense table gradient"),
        ("quickstart", "phases.embedding.optimizer.learning_rate", 0.0,
         "config.phases.embedding.optimizer.learning_rate=0.0: expected > 0"),
        ("quickstart", "phases.embedding.optimizer.learning_rate", -0.01,
         "config.phases.embedding.optimizer.learning_rate=-0.01: expected > 0"),
        ("quickstart", "phases.ranking.optimizer.learning_rate", float("nan"),
         "config.phases.ranking.optimizer.learning_rate=nan: expected > 0"),
        ("quickstart", "phases.ranking.optimizer.warmup_steps", -1,
         "config.phases.ranking.optimizer.warmup_steps=-1: expected >= 0"),
        ("quickstart", "phases.ranking.optimizer.embedding_learning_rate", -1e-3,
         "config.phases.ranking.optimizer.embedding_learning_rate=-0.001"),
    ],
    "early stopping": [
        ("quickstart", "phases.ranking.early_stopping.mode", "best",
         "early_stopping.mode='best'"),
        ("quickstart", "phases.ranking.early_stopping.metric", "val/all/ctr/acu",
         "config.phases.ranking.early_stopping.metric='val/all/ctr/acu'"),
        ("quickstart", "phases.ranking.early_stopping.metric", "val/all/ctr/calibration",
         "early_stopping.metric='val/all/ctr/calibration': set early_stopping.mode"),
        ("quickstart", "phases.embedding.early_stopping.evals_per_epoch", 0,
         "config.phases.embedding.early_stopping.evals_per_epoch=0: expected > 0"),
        ("quickstart", "phases.embedding.early_stopping.patience", -1,
         "config.phases.embedding.early_stopping.patience=-1: expected >= 0"),
        ("quickstart", "phases.embedding.early_stopping.min_rows", -5,
         "config.phases.embedding.early_stopping.min_rows=-5: expected an integer >= 0"),
    ],
    "schedule": [
        ("quickstart", "schedule.order", ("embedding", "joint"),
         "config.schedule.order[1]='joint': expected one of ['embedding', 'ranking']"),
        ("mmoe", "schedule.order", ("embedding",), "config.schedule.order[0]='embedding'"),
        ("quickstart", "schedule.order", (), "config.schedule.order=()"),
        ("quickstart", "schedule.rounds_per_day", 0, "config.schedule.rounds_per_day=0"),
    ],
    "checkpoint": [
        ("quickstart", "checkpoint.keep", 0, "config.checkpoint.keep=0: expected > 0"),
        ("quickstart", "checkpoint.best_mode", "up", "config.checkpoint.best_mode='up'"),
        ("quickstart", "checkpoint.best_metric", "val/all/ctcvr/acu",
         "config.checkpoint.best_metric='val/all/ctcvr/acu'"),
        ("quickstart", "checkpoint.every_steps", 0, "config.checkpoint.every_steps=0"),
    ],
    "validation": [
        ("quickstart", "validation.day", 3, "config.validation.day=3 is the test day"),
        ("quickstart", "validation.fraction", 1.5, "config.validation.fraction=1.5"),
        ("quickstart", "validation.max_rows", 0, "config.validation.max_rows=0"),
        ("quickstart", "test_day", 2, "config.test_day=2 is also a training day"),
        ("quickstart", "train_days", (), "config.train_days=()"),
    ],
    "daily": [
        ("daily", "daily.window", 0, "config.daily.window=0: expected >= 1"),
        ("daily", "daily.first_test_day", 1, "config.daily.first_test_day=1: expected >= "
                                             "config.daily.window=2"),
        ("daily", "daily.last_test_day", 1, "config.daily.last_test_day=1"),
    ],
    "add_scene": [
        ("add_scene", "add_scene.base", "/no/such/run",
         "config.add_scene.base='/no/such/run': not a trained run's folder"),
        ("add_scene", "add_scene.base_scenes", (), "config.add_scene.base_scenes=()"),
        ("add_scene", "model.sharing", "all", "config.model.sharing='all': every scene shares"),
    ],
    "compare": [
        ("table1", "compare.order", ("ctr_cvr", "nope"),
         "config.compare.order=('ctr_cvr', 'nope')"),
        ("table1", "compare.baseline", "nope", "config.compare.baseline='nope'"),
        ("table1", "compare.seeds", 0, "config.compare.seeds=0"),
        ("table1", "compare.layout", "grid", "config.compare.layout='grid'"),
        ("table1", "compare.tasks", ("cvx",), "config.compare.tasks=('cvx',)"),
        ("table1", "compare.metrics", ("acc",), "config.compare.metrics=('acc',)"),
        ("table1", "compare.rows.ctr_cvr.model.sharing", "bogus",
         "config.compare.rows.ctr_cvr.model.sharing='bogus'"),
        ("table1", "compare.rows.ctr_cvr.phases.ranking.optimizer.name", "adm",
         "config.compare.rows.ctr_cvr.phases.ranking.optimizer.name='adm'"),
        ("table1", "compare.rows.ctr_cvr.scenes", (0, 0), "config.compare.rows.ctr_cvr.scenes"),
        ("table1", "compare.rows.ctr_cvr.phases.ranking.steps", -1,
         "config.compare.rows.ctr_cvr.phases.ranking.steps=-1"),
        ("table2", "compare.rows.mmoe.model.num_experts", 0,
         "config.compare.rows.mmoe.model.num_experts=0"),
        ("quality", "quality.curve_epochs", (0,), "config.quality.curve_epochs=(0,)"),
        ("replay", "replay.candidates", 1, "config.replay.candidates=1: expected >= 2"),
    ],
    "sweep": [
        ("quickstart", "sweep.metric", "test/all/ctcvr/acu", "config.sweep.metric='test/all/"),
        ("quickstart", "sweep.mode", "up", "config.sweep.mode='up'"),
    ],
    "parallel": [
        ("quickstart", "parallel.mode", "ring", "config.parallel.mode='ring'"),
        ("quickstart", "parallel.table_sharding", "rows", "needs parallel.mode='mesh'"),
        ("quickstart", "parallel.num_processes", 2, "config.parallel.num_processes=2 needs "
                                                   "parallel.coordinator"),
        ("quickstart", "parallel.num_processes", -2, "config.parallel.num_processes=-2"),
    ],
    "data": [
        ("quickstart", "data.name", "nope", "unknown data set 'nope' (config.data.name)"),
        ("quickstart", "data.kwargs.rows_per_dy", 10, "config.data.kwargs: got an unexpected "
                                                      "keyword argument 'rows_per_dy'"),
        ("quickstart", "data.scenes", (0, 0), "config.data.scenes=(0, 0)"),
        ("quickstart", "data.scenes", (-1,), "config.data.scenes=(-1,)"),
    ],
    "init/warm start": [
        ("quickstart", "init_load", ("towers",), "config.init_load=('towers',): expected a "
                                                 "non-empty subset"),
        ("quickstart", "init_load", (), "config.init_load=()"),
        ("quickstart", "init_from", "/no/such/run", "config.init_from='/no/such/run'"),
    ],
    "numeric values": [
        ("quickstart", "batch_size", 0, "config.batch_size=0: expected > 0"),
        ("quickstart", "eval_batch_size", -8, "config.eval_batch_size=-8: expected > 0"),
        ("quickstart", "log_every", 0, "config.log_every=0: expected > 0"),
        ("quickstart", "phases.embedding.steps", -1, "config.phases.embedding.steps=-1"),
        ("quickstart", "phases.embedding.min_steps", -1, "config.phases.embedding.min_steps=-1"),
    ],
}


@pytest.mark.parametrize("name, key, value, message", [
    pytest.param(*case, id=f"{family}:{case[1]}={case[2]!r}")
    for family, cases in CASES.items() for case in cases])
def test_a_wrong_value_is_a_user_error_naming_the_key(name, key, value, message):
  config = experiment(name)
  config_checks.check(config)
  set_key(config, key, value)
  with pytest.raises(UserError, match=re.escape(message)):
    config_checks.check(config)


@pytest.mark.parametrize("name, field", [(name, field) for name, fields in
                                         common.JOINT_MODELS.items() for field in fields])
def test_a_joint_models_missing_field_is_a_user_error_naming_it_or_not_needed(name, field,
                                                                              tiny_data):
  """Every field of a joint model's section, taken out: the config pass names it (it was a
  KeyError or AttributeError), unless the model builds without it (a field with a default)."""
  config = experiment(name)
  config.model = {k: v for k, v in config.model.items() if k != field}
  try:
    config_checks.check(config)
  except UserError as e:
    assert str(e).startswith(f"config.model.{field}: missing; model {name!r} reads it")
  else:
    models.get_model(tiny_data.schema, config.model)


def test_a_phase_of_the_schedule_needs_its_section():
  config = experiment("quickstart")
  del config.phases["ranking"]
  with pytest.raises(UserError, match=re.escape("config.phases has no 'ranking', a phase of "
                                                "config.schedule.order")):
    config_checks.check(config)


def test_adding_scenes_needs_a_model_with_scenes_of_their_own():
  config = experiment("add_scene")
  for key, section in common.joint_sections("esmm").items():
    config[key] = section
  with pytest.raises(UserError, match=re.escape("config.model.name='esmm' has no per-scene "
                                                "parameters to freeze")):
    config_checks.check(config)


def test_a_sweep_checks_every_point_before_training_any(tmp_path):
  points = [{"config.model.aggregation": "mean"}, {"config.model.aggregation": "sum"}]
  with pytest.raises(UserError, match=re.escape("config.model.aggregation='sum'")):
    sweep.run_sweep(experiment("quickstart"), points, str(tmp_path / "sweep"), "exp.py")
  assert not (tmp_path / "sweep").exists()


def test_cli_prints_one_line_exits_2_and_leaves_no_run_folder(tmp_path):
  workdir = tmp_path / "run"
  proc = subprocess.run(
      [sys.executable, "-m", "mtms_jax.main", "--config", "experiments/quickstart.py:smoke",
       "--workdir", str(workdir), "--config.model.sharing=bogus"],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2, proc.stderr
  assert proc.stderr.strip().splitlines() == [
      f"error: config.model.sharing='bogus': {MTMS_SHARING}"]
  assert "Traceback" not in proc.stdout + proc.stderr
  assert not workdir.exists()


def test_a_data_sets_own_value_checks_run_before_any_load():
  config = regimes_experiment.get_config("smoke")
  config.data.kwargs.scene_similarity = 2.0
  with pytest.raises(UserError, match="config.data.kwargs.scene_similarity=2.0"):
    config_checks.check(config)
