"""One's own logs end to end: a schema file trains any experiment, a comparison, and bad
input or config values stop before training with one line and exit 2."""

import json
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from experiments import common
from mtms_jax import config_checks, models
from mtms_jax.data import logs
from mtms_jax.errors import UserError
from mtms_jax.runs import compare
from mtms_jax.train import trainer

REPO = pathlib.Path(__file__).resolve().parents[3]
EXPERIMENTS = sorted(p.stem for p in (REPO / "experiments").glob("*.py")
                     if p.stem not in ("__init__", "common"))

SCHEMA = """files: {train: "logs/train-*.parquet", valid: logs/valid.parquet, test: logs/test.parquet}
scene: {column: channel}
labels: {click: clk, conversion: buy}
sparse:
  - {name: user_id, vocab: 40}
  - {name: ad_id, hash_buckets: 64}
dense:
  - {name: price, transform: log1p}
"""


def write_logs(folder, rows=(700, 700, 300, 400)):
  """Parquet logs whose clicks follow the user: a model can learn them."""
  rng = np.random.default_rng(0)
  (folder / "logs").mkdir()
  for name, n in zip(("train-0", "train-1", "valid", "test"), rows):
    user = rng.integers(0, 40, n)
    click = (rng.random(n) < np.where(user < 20, 0.6, 0.1)).astype(np.int64)
    pq.write_table(pa.table({
        "clk": click, "buy": click * (rng.random(n) < 0.4), "user_id": user,
        "ad_id": [f"ad{i}" for i in rng.integers(0, 30, n)], "price": rng.random(n) * 9,
        "channel": rng.choice(["feed", "search"], n)}), folder / "logs" / f"{name}.parquet")
  path = folder / "logs.yaml"
  path.write_text(SCHEMA)
  return path


def schema_config(config, path):
  config.data.schema = str(path)
  config_checks.check(config)
  logs.configure(config)
  return config


def run_main(workdir, *args):
  return subprocess.run(
      [sys.executable, "-m", "mtms_jax.main", "--config", "experiments/quickstart.py:smoke",
       "--workdir", str(workdir), *args], cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_takes_a_schema_file_and_passes_the_config_checks(name):
  module = __import__(f"experiments.{name}", fromlist=["get_config"])
  for arg in (None, "smoke"):
    config = module.get_config(arg)
    assert config.data.schema == ""
    config_checks.check(config)


def test_a_schema_file_trains_and_a_changed_schema_cannot_resume(tmp_path):
  path = write_logs(tmp_path)
  config = schema_config(common.base_config("smoke"), path)
  assert (config.train_days, config.test_day, config.validation.day) == ((0,), 2, 1)
  results = trainer.train_and_evaluate(config, str(tmp_path / "run"))
  assert results["test/feed/ctr/count"] + results["test/search/ctr/count"] == 400
  assert results["val/all/ctr/count"] == 300
  assert np.isfinite(results["test/all/ctcvr/auc"])
  saved = json.loads((tmp_path / "run" / "feature_schema.json").read_text())
  assert saved["scenes"] == ["feed", "search"]
  assert [f["vocab_size"] for f in saved["sparse"]] == [40, 64]
  # Issue 20, case 2: a dense column's transform changed, the feature schema as it was.
  path.write_text(SCHEMA.replace("transform: log1p", "transform: none"))
  with pytest.raises(UserError, match=r"run was written with a different data \(columns\.dense"
                                      r"\.sha256: .*; schema_file\.digest: "):
    trainer.train_and_evaluate(schema_config(common.base_config("smoke"), path),
                               str(tmp_path / "run"))
  path.write_text(SCHEMA.replace("vocab: 40", "vocab: 50"))
  proc = run_main(tmp_path / "run", f"--config.data.schema={path}")
  assert proc.returncode == 2, proc.stderr
  assert "was written with a different feature schema" in proc.stderr.splitlines()[-1]
  assert "vocab_size" in proc.stderr.splitlines()[-1]


def test_a_comparison_runs_on_a_schema_file_and_reuses_its_runs_on_its_data_only(tmp_path,
                                                                             monkeypatch):
  config = schema_config(
      __import__("experiments.table1", fromlist=["get_config"]).get_config("smoke"),
      write_logs(tmp_path))
  config.compare.order = ("ctr_cvr", "mtms_loss")
  config.compare.seeds = 1
  results = compare.run(config, str(tmp_path / "table1"))
  assert "mtms_loss/test/feed/cvr/auc_mean" in results
  assert (tmp_path / "table1" / "table.md").exists()

  # Issue 20, case 2, for the runs a rerun reuses: the logs' test clicks flipped, the config
  # as it was. Its finished runs were trained on other data: an error, not a reuse.
  test_file = tmp_path / "logs" / "test.parquet"
  table = pq.read_table(test_file)
  click = 1 - table["clk"].to_numpy()
  pq.write_table(table.set_column(0, "clk", pa.array(click))
                 .set_column(1, "buy", pa.array(click * table["buy"].to_numpy())), test_file)
  with pytest.raises(UserError, match=r"table1/ctr_cvr/seed0 was written with a different data "
                                      r"\(columns\.click\.sha256: '[0-9a-f]+' -> '[0-9a-f]+'; "
                                      r".*Reusing needs the same data: set "
                                      r"--config\.allow_other_data=True"):
    compare.run(config, str(tmp_path / "table1"))
  monkeypatch.setattr(trainer, "train_and_evaluate", None)    # a reuse trains nothing
  config.allow_other_data = True
  assert compare.run(config, str(tmp_path / "table1")).keys() == results.keys()


def test_bad_logs_stop_the_command_before_training(tmp_path):
  path = write_logs(tmp_path)
  table = pq.read_table(tmp_path / "logs" / "train-1.parquet")
  pq.write_table(table.set_column(0, "clk", pa.array([2] + [0] * (len(table) - 1))),
                 tmp_path / "logs" / "train-1.parquet")
  proc = run_main(tmp_path / "run", f"--config.data.schema={path}")
  assert proc.returncode == 2, proc.stderr
  assert proc.stderr.strip().splitlines()[-1] == (
      f"error: {tmp_path}/logs/train-1.parquet, data row 0, column 'clk': expected a label "
      "0 or 1, got 2.0")
  assert not (tmp_path / "run").exists() and not (tmp_path / "logs.cache").exists()


@pytest.mark.parametrize("change, expected", [
    (lambda c: c.update(batch_size=0), r"config\.batch_size=0: expected > 0"),
    (lambda c: c.update(eval_batch_size=-8), r"config\.eval_batch_size=-8: expected > 0"),
    (lambda c: c.checkpoint.update(every_steps=0), r"config\.checkpoint\.every_steps=0"),
])
def test_numeric_config_values_are_checked(change, expected):
  config = common.base_config("smoke")
  config_checks.check(config)
  change(config)
  with pytest.raises(UserError, match=expected):
    config_checks.check(config)


def test_epochs_without_steps_must_be_positive():
  config = common.base_config()
  config.phases.embedding.epochs = 0.0
  with pytest.raises(UserError, match=r"config\.phases\.embedding\.epochs=0\.0: expected > 0"):
    config_checks.check(config)
  config.phases.embedding.steps = 3                        # steps set: epochs are unused
  config_checks.check(config)
  config = common.compare_config("smoke", __import__(
      "experiments.table1", fromlist=["rows"]).rows)
  config.compare.rows.mtms_loss.phases.ranking.steps = -1
  with pytest.raises(UserError, match=r"rows\.mtms_loss\.phases\.ranking\.steps=-1"):
    config_checks.check(config)


@pytest.mark.parametrize("experiment", ["quickstart", "esmm", "star"])
def test_ctr_only_logs_have_no_cvr_tables_towers_losses_or_metrics(tmp_path, experiment):
  path = write_logs(tmp_path, rows=(300, 300, 200, 200))
  path.write_text(SCHEMA.replace(", conversion: buy", ""))
  config = __import__(f"experiments.{experiment}", fromlist=["get_config"]).get_config("smoke")
  config = schema_config(config, path)
  assert config.checkpoint.best_metric == "val/all/ctr/auc"
  assert {p.loss for p in config.phases.values()} == {"ctr"}
  results = trainer.train_and_evaluate(config, str(tmp_path / "run"))
  assert {k.split("/")[2] for k in results if k.startswith(("test/", "val/"))} == {"ctr"}
  assert np.isfinite(results["test/all/ctr/auc"])
  model = models.get_model(logs.load(str(path)).schema, config.model)
  params = jax.eval_shape(model.init, jax.random.key(0))
  names = {"/".join(str(getattr(k, "key", k)) for k in p)
           for p, _ in jax.tree_util.tree_leaves_with_path(params)}
  assert not any("cvr" in n for n in names) and any("ctr" in n for n in names)
  if experiment == "quickstart":           # one table set per (scene, task): 2 scenes x ctr
    assert model.layout.num_components == 2


def test_a_loss_of_absent_tasks_is_a_one_line_error(tmp_path):
  path = write_logs(tmp_path)
  path.write_text(SCHEMA.replace(", conversion: buy", ""))
  table1 = __import__("experiments.table1", fromlist=["get_config"]).get_config("smoke")
  with pytest.raises(UserError, match=r"phases\.ranking\.loss='cvr' trains none of the tasks"):
    schema_config(table1, path)


SHARED_DATA = REPO.parent / "shared" / "data"
SAMPLES = {"aliccp": (200, ("ctr", "cvr")), "aliexpress": (120, ("ctr", "cvr")),
           "kuairand": (200, ("ctr",))}


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="needs ../shared/data")
@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_the_shared_samples_prepare_through_schema_files_alone(tmp_path, name):
  # A copy beside tmp_path's cache, its relative paths made absolute.
  text = (REPO / "schemas" / f"{name}.yaml").read_text()
  path = tmp_path / f"{name}.yaml"
  path.write_text(text.replace("../../shared/data", str(SHARED_DATA)))
  config = schema_config(common.base_config("smoke"), path)
  data = logs.load(str(path))
  rows, tasks = SAMPLES[name]
  assert (len(data), data.schema.tasks) == (rows, tasks)
  assert config.test_day in set(data.columns["day"].tolist())


def test_an_unknown_experiment_name_lists_the_experiments():
  proc = subprocess.run(["make", "-s", "known-experiment", "NAME=nope"], cwd=REPO,
                        capture_output=True, text=True, timeout=60)
  assert proc.returncode == 2
  assert proc.stderr.startswith("error: unknown experiment NAME=nope; known: ")
  assert set(EXPERIMENTS) <= set(proc.stderr.splitlines()[0].split()[5:])
