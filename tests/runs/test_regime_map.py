"""The regime map (mtms_jax/runs/regime_map.py): per cell, the subject against the best other
row, and the map's files from a smoke run of experiments/regimes.py."""

import csv
import json
import math

import ml_collections
import pytest

from experiments import regimes as regimes_experiment
from mtms_jax import config_checks, runs
from mtms_jax.errors import UserError
from mtms_jax.runs import regime_map


def _compare_section(order=("mtms", "esmm", "mmoe")):
  return ml_collections.ConfigDict({"order": order, "baseline": "mtms", "scene": "all",
                                    "rows": {n: {"label": n.upper()} for n in order}})


def test_cell_summary_takes_the_best_other_row_and_its_tests_against_the_subject():
  key = "test/all/cvr/auc"
  summary = {f"mtms/{key}_mean": 0.70, f"mtms/{key}_std": 0.01,
             f"esmm/{key}_mean": 0.72, f"esmm/{key}_std": 0.02,
             f"esmm/{key}_p": 0.003, f"esmm/{key}_p_seeds": 0.04,
             f"mmoe/{key}_mean": 0.71, f"mmoe/{key}_std": 0.02,
             f"mmoe/{key}_p": 0.5, f"mmoe/{key}_p_seeds": 0.6,
             "mtms/train_seconds_mean": 30.0, "esmm/train_seconds_mean": 10.0,
             "mmoe/train_seconds_mean": 12.0}
  cell = regime_map.cell_summary(_compare_section(), summary, "cvr", "auc")
  assert cell["best_other"] == "esmm"
  assert cell["difference"] == pytest.approx(-0.02)
  assert (cell["p"], cell["p_seeds"]) == (0.003, 0.04)
  assert (cell["subject_train_seconds"], cell["best_other_train_seconds"]) == (30.0, 10.0)
  # MAE: lower is better, so the best other row is the one of the lowest mean.
  mae = regime_map.cell_summary(
      _compare_section(), {k.replace("auc", "mae"): v for k, v in summary.items()}, "cvr", "mae")
  assert mae["best_other"] == "mmoe"
  assert mae["difference"] == pytest.approx(-0.01)


def test_markers_say_which_test_is_significant():
  assert regime_map.marker(0.001, 0.01) == "**"
  assert regime_map.marker(0.001, 0.2) == "*"
  assert regime_map.marker(0.2, 0.2) == ""
  assert regime_map.marker(math.nan, math.nan) == ""


def test_nearest_cell_measures_each_statistic_in_units_of_its_spread():
  stats = {"a": (0.0, 0.0), "b": (1.0, 0.1), "reference": (0.9, 0.0)}
  out = {f"{name}/stat/{k}": v for name, values in stats.items()
         for k, v in zip(regime_map.PLACING, values)}
  # Raw distances would pick 'b' (0.1 and 0.1 away); in units of the cells' spreads (1.0
  # and 0.1) 'b' is 0.1 and 1.0 away, 'a' 0.9 and 0.
  assert regime_map.nearest_cell(out, ("a", "b")) == "a"
  out["reference/stat/item_ctr_correlation"] = 1.0
  out["reference/stat/all_conversions_per_click"] = 0.05
  assert regime_map.nearest_cell(out, ("a", "b")) == "b"


def test_map_config_has_the_grid_and_passes_the_checks():
  config = regimes_experiment.get_config()
  cells = config.regime_map.cells
  assert len(config.regime_map.order) == 3 * 2 * 2 + 1
  assert {c.kwargs.num_scenes for c in cells.values()} == {2, 10, 100}
  assert {c.kwargs.scene_similarity for c in cells.values()} == {0.0, 0.5, 1.0}
  assert len(config.compare.order) == 8 and config.compare.seeds >= 3
  config_checks.check(config)
  config.regime_map.order = ("no_such_cell",)
  with pytest.raises(UserError, match="config.regime_map.order"):
    config_checks.check(config)


def test_smoke_map_writes_the_map_and_reuses_its_runs(tmp_path, monkeypatch):
  config = regimes_experiment.get_config("smoke")
  out = runs.run(config, str(tmp_path))
  order = config.regime_map.order
  for name in order:
    for task in ("ctr", "cvr", "ctcvr"):
      assert out[f"{name}/{task}/best_other"] == "esmm"
      assert out[f"{name}/{task}/difference"] == pytest.approx(
          out[f"{name}/{task}/subject_mean"] - out[f"{name}/{task}/best_other_mean"])
      # The cell's own table has the same numbers (its baseline is the subject).
      table = json.loads((tmp_path / name / "results.json").read_text())
      assert out[f"{name}/{task}/p"] == pytest.approx(table[f"esmm/test/all/{task}/auc_p"],
                                                       nan_ok=True)
    assert 0 <= out[f"{name}/stat/all_conversions_per_click"] <= 1
  for f in ("regime_map.md", "regime_map.csv", "results.json",
            *(f"regime_map_{t}.png" for t in ("ctr", "cvr", "ctcvr"))):
    assert (tmp_path / f).stat().st_size > 0, f
  with open(tmp_path / "regime_map.csv") as f:
    assert len(list(csv.DictReader(f))) == len(order) * 3
  text = (tmp_path / "regime_map.md").read_text()
  assert all(name in text for name in order)
  if config.regime_map.reference:
    assert "nearest cell" in text
  # A rerun trains nothing: every (cell, row, seed) is read back.
  def no_training(*args, **kwargs):
    raise AssertionError("a finished run was trained again")
  monkeypatch.setattr(runs, "run_one", no_training)
  again = runs.run(config, str(tmp_path))

  def reproducible(results):      # NaN p's (no conversions in a tiny test day) compare equal
    return json.dumps({k: v for k, v in results.items() if "seconds" not in k}, sort_keys=True)
  assert reproducible(again) == reproducible(out)


@pytest.mark.parametrize("arg", ["", "distinct"])
def test_the_dev_day_is_the_last_training_day_and_never_reads_the_test_day(arg):
  test = regimes_experiment.get_config(arg or None)
  dev = regimes_experiment.get_config(",".join(filter(None, [arg, "dev"])))
  assert dev.test_day == test.train_days[-1] == test.test_day - 1
  assert dev.train_days == test.train_days[:-1]
  history = dev.compare.rows.mtms.schedule.history_days
  assert history == test.compare.rows.mtms.schedule.history_days
  assert history < len(dev.train_days)       # MTMS still trains its window's days


def test_a_cell_sets_its_rows_model_settings_and_only_those():
  config = regimes_experiment.get_config()
  cell = regime_map.cell_config(config, "rich_100scenes_sim05")
  assert cell.compare.rows.mtms.model.ranking_scenes == regimes_experiment.LARGEST_SCENES
  assert cell.compare.rows.mtms.model.sharing == config.compare.rows.mtms.model.sharing
  assert cell.compare.rows.esmm.model == config.compare.rows.esmm.model
  other = regime_map.cell_config(config, "rich_10scenes_sim05")
  assert other.compare.rows.mtms.model.ranking_scenes == ()
  config.regime_map.cells.rich_100scenes_sim05.rows = {"nope": {"model": {}}}
  with pytest.raises(UserError, match="cells.rich_100scenes_sim05.rows"):
    regime_map.check(config)


def test_the_many_scenes_regime_reads_the_map_cells_ranking_sources():
  config = regimes_experiment.get_config("many_scenes")
  assert config.compare.rows.mtms.model.ranking_scenes == regimes_experiment.LARGEST_SCENES
  assert regimes_experiment.get_config("distinct").compare.rows.mtms.model.ranking_scenes == ()
