"""Every experiment file runs end to end on its `smoke` shrink and writes its outputs."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from ml_collections import config_flags  # noqa: F401  (the CLI's config loader)

from experiments import common
from experiments import regimes as regimes_experiment
from mtms_jax import config_checks, runs
from mtms_jax.data import registry
from mtms_jax.runs import compare

REPO = pathlib.Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.stem for p in (REPO / "experiments").glob("*.py")
                     if p.stem not in ("__init__", "common"))


def _load(name, arg="smoke"):
  module = __import__(f"experiments.{name}", fromlist=["get_config"])
  return module.get_config(arg)


# Comparison configs (a `compare` section) train many models; tests/runs/test_compare.py runs them.
SINGLE_RUNS = [name for name in EXPERIMENTS if "compare" not in _load(name)]


@pytest.mark.parametrize("name", SINGLE_RUNS)
def test_experiment_runs_and_writes_outputs(name, tmp_path, request):
  if name == "add_scene":       # the run tests/runs/test_add_scene.py checks, trained once
    tmp_path, _, results = request.getfixturevalue("added_run")
  elif name == "quickstart":    # the session's smoke run (conftest.smoke_run) is this config
    assert _load(name).to_json() == common.base_config("smoke").to_json()
    tmp_path = request.getfixturevalue("smoke_run")
    results = json.loads((tmp_path / "results.json").read_text())
  elif name in ("star", "pepnet", "m2m"):   # also their models' tests' and test_parallel's runs
    tmp_path, results = request.getfixturevalue("experiment_runs")(name)
  else:
    results = runs.run(_load(name), str(tmp_path))
  for f in ("config.json", "results.json"):
    assert (tmp_path / f).exists(), f
  # A day-by-day experiment keeps each day's run in a subfolder.
  run_dirs = [p.parent for p in tmp_path.rglob("metrics.jsonl")]
  assert run_dirs
  for run in run_dirs:
    for f in ("config.json", "feature_schema.json", "results.json", "run.json"):
      assert (run / f).exists(), f
    assert list((run / "tensorboard").iterdir())
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert {x["phase"] for x in lines} >= set(_load(name).schedule.order)
  on_disk = json.loads((tmp_path / "results.json").read_text())
  assert on_disk.keys() == results.keys()
  for scene in ("scene0", "scene1", "all"):
    for task in ("ctr", "cvr", "ctcvr"):
      for metric in ("auc", "mae", "logloss", "calibration"):
        assert f"test/{scene}/{task}/{metric}" in results


def test_cli_rejects_unknown_override(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "mtms_jax.main", "--config", "experiments/quickstart.py:smoke",
       "--workdir", str(tmp_path), "--config.model.no_such_key=1"],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0
  assert "no_such_key" in proc.stderr


def test_keep_scenes_renumbers_and_keeps_names(tiny_data):
  one = registry.keep_scenes(tiny_data, [1])
  assert one.schema.scenes == ("scene1",)
  assert set(one.columns["scene"].tolist()) == {0}
  assert len(one) == int((tiny_data.columns["scene"] == 1).sum())
  with pytest.raises(ValueError, match="distinct indices"):
    registry.keep_scenes(tiny_data, [2])


@pytest.mark.parametrize("regime", [None] + sorted(regimes_experiment.REGIMES))
def test_every_regime_passes_the_config_checks(regime):
  config = regimes_experiment.get_config(",".join(filter(None, ["smoke", regime])))
  config_checks.check(config)
  compare.check(config)
  data = registry.load_data(config.data)
  assert set(np.unique(data.columns["day"])) == set(config.train_days) | {config.test_day}


def test_one_regime_smoke_compares_the_models(tmp_path):
  # Its shapes are table2's smoke shapes, compiled once for the session; the map's smoke run
  # is tests/runs/test_regime_map.py's.
  config = regimes_experiment.get_config("smoke,similar")
  config.compare.seeds = 1
  config.compare.order = ("mtms", "esmm")      # MMoE at smoke size: tests/runs/test_compare.py
  summary = compare.run(config, str(tmp_path))
  assert "Regime similar" in (tmp_path / "table.md").read_text()
  for name in config.compare.order:
    assert 0 < summary[f"{name}/test/all/cvr/auc_mean"] < 1
