"""Comparison runs: table1 and table2 end to end on their smoke shrink, reuse, and the numbers."""

import csv
import json

import numpy as np
import pytest
from scipy import stats

from experiments import quality as quality_experiment
from experiments import table1, table2
from mtms_jax import rundir
from mtms_jax.eval import significance
from mtms_jax.runs import compare, quality
from mtms_jax.train import trainer


@pytest.fixture(scope="module")
def table1_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("table1")
  config = table1.get_config("smoke")
  return config, workdir, compare.run(config, str(workdir))


def test_table1_writes_the_table_files(table1_run):
  config, workdir, summary = table1_run
  for f in ("table.md", "table.csv", "table.png", "results.json", "config.json"):
    assert (workdir / f).exists(), f
  assert json.loads((workdir / "results.json").read_text()).keys() == summary.keys()
  text = (workdir / "table.md").read_text()
  labels = [config.compare.rows[n].label for n in config.compare.order]
  assert [text.index(label) for label in labels] == sorted(text.index(x) for x in labels)
  with open(workdir / "table.csv") as f:
    lines = list(csv.DictReader(f))
  assert [(x["row"], x["metric"]) for x in lines] == [
      (n, m) for n in config.compare.order for m in ("mae", "auc")]
  baseline = "ctr_cvr/test/scene0/cvr/auc"
  assert f"{baseline}_p" not in summary and "mtms_loss/test/scene0/cvr/auc_p" in summary


def test_summary_matches_the_runs_on_disk(table1_run):
  config, workdir, summary = table1_run
  key = "test/scene0/cvr/auc"
  preds, values, labels = {}, {}, None
  for name in ("ctr_cvr", "mtms_loss"):
    per_seed = [json.loads((workdir / name / f"seed{k}" / "results.json").read_text())
                for k in range(2)]
    values[name] = [r[key] for r in per_seed]
    assert summary[f"{name}/{key}_mean"] == pytest.approx(np.mean([r[key] for r in per_seed]))
    assert summary[f"{name}/{key}_std"] == pytest.approx(
        np.std([r[key] for r in per_seed], ddof=1))
    runs = [np.load(workdir / name / f"seed{k}" / rundir.PREDICTIONS) for k in range(2)]
    clicked = runs[0]["click"] > 0.5                           # one scene: every test row
    labels = runs[0]["conversion"][clicked]
    preds[name] = np.mean([r["cvr"][clicked] for r in runs], axis=0)
  test = significance.delong(labels, preds["mtms_loss"], preds["ctr_cvr"])
  assert summary[f"mtms_loss/{key}_p"] == pytest.approx(test.p)
  assert summary[f"mtms_loss/{key}_delta"] == pytest.approx(
      summary[f"mtms_loss/{key}_mean"] / summary[f"ctr_cvr/{key}_mean"] - 1)
  lo, hi = summary[f"mtms_loss/{key}_p_seed_min"], summary[f"mtms_loss/{key}_p_seed_max"]
  assert 0 <= lo <= hi <= 1
  assert summary[f"mtms_loss/{key}_p_seeds"] == pytest.approx(stats.ttest_ind(
      values["mtms_loss"], values["ctr_cvr"], equal_var=False).pvalue)


def test_rerun_reuses_runs_and_rejects_a_changed_config(table1_run, monkeypatch):
  config, workdir, summary = table1_run

  def no_training(*args, **kwargs):
    raise AssertionError("a complete run was trained again")

  monkeypatch.setattr(trainer, "train_and_evaluate", no_training)
  again = compare.run(config, str(workdir))
  assert {k: v for k, v in again.items() if k != "wall_seconds"} == pytest.approx(
      {k: v for k, v in summary.items() if k != "wall_seconds"}, nan_ok=True)
  changed = table1.get_config("smoke")
  changed.compare.rows.ctr_cvr.phases.ranking.optimizer.learning_rate = 0.5
  with pytest.raises(ValueError, match="different config"):
    compare.run(changed, str(workdir))


def test_table2_runs_every_model_and_predicts_probabilities(tmp_path):
  config = table2.get_config("smoke")
  config.compare.seeds = 1            # table1's test covers seeds; here every model once
  summary = compare.run(config, str(tmp_path))
  assert "Table II" in (tmp_path / "table.md").read_text()
  for name in config.compare.order:
    for k in range(config.compare.seeds):
      saved = np.load(tmp_path / name / f"seed{k}" / rundir.PREDICTIONS)
      num_scenes = 1 if config.compare.rows[name].scenes else 2
      assert set(np.unique(saved["scene"])) <= set(range(num_scenes))
      for task in ("ctr", "cvr"):
        assert saved[task].shape == saved["click"].shape, (name, task)
        assert ((saved[task] > 0) & (saved[task] < 1)).all(), (name, task)
    for task in ("cvr", "ctcvr"):
      assert f"{name}/test/scene0/{task}/auc_mean" in summary
  # The multi-scene rows test on scene0's rows of the full test day, the one-scene rows on
  # the same rows: the paired tests ran, so their labels lined up.
  assert "mmoe/test/scene0/ctcvr/auc_p" in summary


def test_bad_compare_config_names_the_field():
  config = table1.get_config("smoke")
  config.compare.order = ("ctr_cvr", "nope")
  with pytest.raises(ValueError, match="config.compare.order"):
    compare.check(config)
  config = table1.get_config("smoke")
  config.compare.order = ("mtms_loss",)
  with pytest.raises(ValueError, match="config.compare.baseline"):
    compare.check(config)


def test_quality_runs_defaults_curves_and_references(tmp_path):
  config = quality_experiment.get_config("smoke")
  out = quality.run(config, str(tmp_path))
  for f in ("quality.md", "quality.json", "table.md"):
    assert (tmp_path / f).exists(), f
  for name in ("mtms", "esmm"):
    default = json.loads((tmp_path / name / "seed0" / "results.json").read_text())
    curve = json.loads((tmp_path / "epochs" / name / "1" / "results.json").read_text())
    # Early stopping off and one epoch: a different run from the default one.
    assert json.loads((tmp_path / "epochs" / name / "1" / "config.json").read_text())[
        "phases"][config.compare.rows[name].schedule.order[0]]["early_stopping"][
        "patience"] == 0
    expected = max(curve[f"test/all/{t}/auc"] - default[f"test/all/{t}/auc"]
                   for t in ("ctr", "cvr", "ctcvr"))
    assert out[f"{name}/below_best_epoch"] == pytest.approx(expected)
  assert 0.5 < out["logreg/ctr/auc"] <= 1
  assert "known-fields logistic regression" in (tmp_path / "quality.md").read_text()
