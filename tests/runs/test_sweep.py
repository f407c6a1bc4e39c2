"""Sweeps: declaring points, checking keys, folder names; a tiny sweep that skips and resumes."""

import json
import pathlib
import subprocess
import sys

import pytest

from experiments import common, sweep_demo
from mtms_jax import config_checks
from mtms_jax.runs import sweep
from mtms_jax.train import loop

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_product_and_zipit_build_points():
  points = sweep.product([sweep.sweep("config.a", [1, 2]),
                          sweep.zipit([sweep.sweep("b", ["x", "y"]), sweep.sweep("c", [3, 4])]),
                          sweep.fixed("d", 0.5)])
  assert points == [{"config.a": 1, "b": "x", "c": 3, "d": 0.5},
                    {"config.a": 1, "b": "y", "c": 4, "d": 0.5},
                    {"config.a": 2, "b": "x", "c": 3, "d": 0.5},
                    {"config.a": 2, "b": "y", "c": 4, "d": 0.5}]
  with pytest.raises(ValueError, match=r"equal length, got lengths \[2, 1\]"):
    sweep.zipit([sweep.sweep("b", [1, 2]), sweep.sweep("c", [3])])
  with pytest.raises(ValueError, match=r"\['b'\] are set twice"):
    sweep.product([sweep.sweep("b", [1]), sweep.sweep("b", [2])])


def test_point_names_are_readable_and_file_safe():
  points = [{"config.model.aggregation": "mean", "config.seed": 1,
             "config.phases.embedding.steps": 3, "config.phases.ranking.steps": 4},
            {"config.model.aggregation": "a/b c", "config.seed": 2,
             "config.phases.embedding.steps": 3, "config.phases.ranking.steps": 4},
            {"config.model.ranking_hidden": (32, 16), "config.data.kwargs.seed": 1e-3}]
  assert sweep.point_names(points) == [
      "aggregation=mean,seed=1,embedding.steps=3,ranking.steps=4",
      "aggregation=a_b_c,seed=2,embedding.steps=3,ranking.steps=4",
      "ranking_hidden=32-16,kwargs.seed=0.001"]
  with pytest.raises(ValueError, match="share the folder name 'seed=a_b'"):
    sweep.point_names([{"seed": "a/b"}, {"seed": "a b"}])


def test_unknown_or_mistyped_key_is_a_clear_error():
  config = common.base_config("smoke")
  with pytest.raises(KeyError, match=r"sweeps 'config.model.agregation', but config.model has "
                                     r"no key 'agregation'; its keys are \['aggregation'"):
    sweep.check_keys(config, [{"config.model.agregation": "mean"}], "exp.py")
  with pytest.raises(KeyError, match="config.seed has no key 'x'"):
    sweep.check_keys(config, [{"config.seed.x": 1}], "exp.py")
  with pytest.raises(TypeError, match="exp.py: get_hyper sets 'config.seed' to 'one'"):
    sweep.apply(config, {"config.seed": "one"}, "exp.py")
  config.sweep.metric = "test/all/ctcvr/acu"
  with pytest.raises(ValueError, match=r"config.sweep.metric='test/all/ctcvr/acu'"):
    config_checks.check_sweep(config.sweep)
  config.sweep.metric = "test/scene1/cvr/logloss"
  config_checks.check_sweep(config.sweep)
  changed = sweep.apply(config, {"config.model.aggregation": "mean", "seed": 3}, "exp.py")
  assert (changed.model.aggregation, changed.seed, config.model.aggregation) == (
      "mean", 3, "concat")


def test_sweep_demo_declares_valid_points():
  points = sweep.hyper_points(sweep_demo)
  sweep.check_keys(sweep_demo.get_config("smoke"), points, "sweep_demo.py")
  assert sweep.point_names(points) == [
      "aggregation=concat,seed=0,kwargs.seed=0", "aggregation=concat,seed=1,kwargs.seed=1",
      "aggregation=mean,seed=0,kwargs.seed=0", "aggregation=mean,seed=1,kwargs.seed=1"]


def test_tiny_sweep_runs_skips_finished_and_resumes_unfinished(tmp_path, monkeypatch):
  config = common.base_config("smoke")
  points = sweep.zipit([sweep.sweep("config.seed", [0, 1]),
                        sweep.sweep("config.data.kwargs.seed", [0, 1])])
  first, second = tmp_path / "seed=0,kwargs.seed=0", tmp_path / "seed=1,kwargs.seed=1"
  # Stopped inside the first point: the sweep stops, that point keeps its checkpoint.
  monkeypatch.setenv(loop.TEST_SIGNAL_ENV, "7:TERM")
  with pytest.raises(loop.Interrupted):
    sweep.run_sweep(config, points, str(tmp_path), "test")
  monkeypatch.delenv(loop.TEST_SIGNAL_ENV)
  assert not (first / "results.json").exists() and not second.exists()
  # Rerun: the first point resumes from step 7, the second trains from scratch.
  rows = sweep.run_sweep(config, points, str(tmp_path), "test")
  assert json.loads((first / "run.json").read_text())["resumed_from_step"] == 7
  assert json.loads((second / "run.json").read_text())["resumed_from_step"] is None
  # Rerun again: both are finished and skipped; the table is the same.
  mtimes = [(p / "results.json").stat().st_mtime_ns for p in (first, second)]
  assert sweep.run_sweep(config, points, str(tmp_path), "test") == rows
  assert [(p / "results.json").stat().st_mtime_ns for p in (first, second)] == mtimes

  metric = config.sweep.metric
  values = [json.loads((p / "results.json").read_text())[metric] for p in (first, second)]
  assert [r[metric] for r in rows] == values           # rows in point order ...
  table = (tmp_path / "sweep.md").read_text().splitlines()
  best_first = sorted(zip(values, (first.name, second.name)), reverse=True)
  assert [line.split(" | ")[0].lstrip("| ") for line in table[4:]] == [n for _, n in best_first]
  csv_lines = (tmp_path / "sweep.csv").read_text().splitlines()
  assert csv_lines[0].startswith("point,seed,kwargs.seed,test/") and len(csv_lines) == 3
  assert (tmp_path / "sweep.png").stat().st_size > 0


def test_a_point_its_data_cannot_take_fails_in_one_line_and_the_sweep_goes_on(tmp_path,
                                                                              capsys):
  points = sweep.sweep("config.data.scenes", [(5,), (6,)])    # scenes the data lacks
  rows = sweep.run_sweep(common.base_config("smoke"), points, str(tmp_path), "test")
  assert [r["status"].split(":")[:3] for r in rows] == [
      ["failed", " UserError", " config.data.scenes=(5,)"],
      ["failed", " UserError", " config.data.scenes=(6,)"]]
  err = capsys.readouterr().err
  assert "Traceback" not in err
  assert "error: scenes=5: config.data.scenes=(5,): expected distinct indices of" in err


def test_cli_rejects_a_swept_key_missing_from_the_config(tmp_path):
  experiment = tmp_path / "bad_sweep.py"
  experiment.write_text("from experiments import common\n\n"
                        "def get_config(arg=None):\n  return common.base_config(arg)\n\n"
                        "def get_hyper(h):\n"
                        "  return h.sweep('config.model.no_such_key', [1, 2])\n")
  proc = subprocess.run([sys.executable, "-m", "mtms_jax.runs.sweep", "--config",
                         f"{experiment}:smoke", "--workdir", str(tmp_path / "sweep")],
                        cwd=REPO, capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0
  assert "sweeps 'config.model.no_such_key', but config.model has no key" in proc.stderr
  assert not (tmp_path / "sweep").exists()
