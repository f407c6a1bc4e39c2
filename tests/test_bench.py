"""The benchmark's workload and its plumbing; timings are printed, never asserted."""

import json

import numpy as np
import pytest

from mtms_jax import bench

TINY = ["--rows", "8192", "--fields", "4", "--vocab", "1000", "--batch", "256", "--warmup",
        "1", "--windows", "2", "--window_steps", "2", "--staged", "2"]


def test_workload_matches_the_issue_shape():
  data = bench.make_workload(num_rows=200_000, num_fields=20, vocab=100_000)
  c = data.columns
  assert c["ids"].shape == (200_000, 20) and c["ids"].max() < 100_000
  assert abs(c["click"].mean() - 0.04) < 0.005
  assert abs(c["conversion"].sum() / c["click"].sum() - 0.05) < 0.01
  assert abs((c["scene"] == 0).mean() - 0.6) < 0.01
  batch = c["ids"][:2048] + 100_000 * np.arange(20)        # rows of the stacked table
  assert 15_000 < np.unique(batch).size < 19_500           # "about 17k distinct rows"


def test_scene_weights_keep_a_tail_for_many_scenes():
  w = bench.scene_weights(100)
  assert np.all(np.diff(w) < 0) and w[-1] / w.sum() > 5e-4


@pytest.mark.parametrize("name", list(bench.BENCH_MODELS))
def test_every_model_runs(name):
  result = bench.run_model(name, bench.parse_args(TINY))
  for key in ("steps_examples_per_s", "e2e_examples_per_s", "compile_s", "peak_rss_gib"):
    assert np.isfinite(result[key]) and result[key] > 0, key
  assert np.isfinite(result["loss_after_e2e"])


def test_ranking_scenes_reach_the_mtms_model():
  args = bench.parse_args(TINY + ["--ranking_scenes", "0,1"])
  assert bench.model_config(bench.BENCH_MODELS["mtms_ranking"], args).ranking_scenes == (0, 1)
  assert "ranking_scenes" not in bench.model_config(bench.BENCH_MODELS["esmm"], args)


def test_main_writes_json_and_table(tmp_path, capsys):
  out = tmp_path / "bench.json"
  bench.main(TINY + ["--models", "esmm", "--out", str(out)])
  report = json.loads(out.read_text())
  assert [r["model"] for r in report["results"]] == ["esmm"]
  assert "steps_examples_per_s" in report["results"][0]
  assert "| esmm | joint |" in capsys.readouterr().out
