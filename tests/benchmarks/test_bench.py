"""The benchmark's workload and its plumbing; timings are printed, never asserted."""

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks import bench
from mtms_jax.data import zipf

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
  w = zipf.scene_weights(100)
  assert np.all(np.diff(w) < 0) and w[-1] / w.sum() > 5e-4


SCENE_LAYERS = {"mtms_embedding": {"ctr", "cvr"}, "mtms_ranking": {"head"},
                "star": {"bottom", "ctr", "cvr"}}


@pytest.mark.parametrize("name", list(bench.BENCH_MODELS))
def test_every_model_runs(name):
  result = bench.run_model(name, bench.parse_args(TINY))
  for key in ("steps_examples_per_s", "e2e_examples_per_s", "compile_s", "peak_rss_gib"):
    assert np.isfinite(result[key]) and result[key] > 0, key
  assert np.isfinite(result["loss_after_e2e"])
  # Every per-scene layer says which route it took: MTMS's towers (embedding phase) or
  # head (ranking phase), STAR's star bottom and towers; the other joint models have none.
  layers = {k.split(":")[0] for k in result["routes"]}
  assert layers == SCENE_LAYERS.get(name, set())
  assert set(result["routes"].values()) <= set(bench.layers.ROUTES) - {"auto", "xla"}


def test_mtms_options_reach_the_mtms_model_only():
  args = bench.parse_args(TINY + ["--ranking_scenes", "0,1", "--tower_hidden", ""])
  config = bench.model_config(bench.BENCH_MODELS["mtms_ranking"], args)
  assert config.ranking_scenes == (0, 1) and config.tower_hidden == ()
  esmm = bench.model_config(bench.BENCH_MODELS["esmm"], args)
  assert "ranking_scenes" not in esmm and esmm.tower_hidden == (16, 8)
  default = bench.parse_args(TINY)
  assert bench.model_config(bench.BENCH_MODELS["mtms_embedding"], default).tower_hidden == (16, 8)


def test_repeats_report_the_median_and_range():
  runs = [{"model": "m", "steps_examples_per_s": v, "e2e_examples_per_s": 2 * v,
           "compile_s": c, "peak_rss_gib": rss, "load_avg": [load, 0, 0]}
          for v, c, rss, load in [(300, 1.0, 0.5, 1.0), (100, 3.0, 0.7, 0.2), (200, 2.0, 0.6, 0.5)]]
  result = bench.median_of_repeats(runs)
  assert result["steps_examples_per_s"] == 200 and result["steps_examples_range"] == (100, 300)
  assert result["e2e_examples_per_s"] == 400 and result["e2e_examples_range"] == (200, 600)
  assert result["e2e_over_steps"] == 2.0
  assert result["compile_s"] == 2.0 and result["peak_rss_gib"] == 0.7 and result["load_avg"] == 1.0
  assert bench.median_of_repeats([runs[0], {"model": "m", "failed": "exit status 1"}]) == {
      "model": "m", "failed": "exit status 1"}


def test_main_writes_json_and_table(tmp_path, capsys):
  out = tmp_path / "bench.json"
  bench.main(TINY + ["--models", "esmm", "--repeats", "2", "--out", str(out)])
  report = json.loads(out.read_text())
  assert [r["model"] for r in report["results"]] == ["esmm"]
  assert len(report["results"][0]["repeats"]) == 2
  assert "steps_examples_per_s" in report["results"][0]
  printed = capsys.readouterr().out
  assert "| esmm | joint |" in printed
  info = report["machine"]
  assert {"cpu_model", "vector_extensions", "caches", "jax", "jaxlib", "xla_commit"} <= set(info)
  assert printed.startswith(info["cpu_model"]) and f"jaxlib {info['jaxlib']}" in printed


def test_a_forced_route_reaches_mtms_only_and_the_table_names_each_layers_route():
  args = bench.parse_args(TINY + ["--scene_route", "grouped"])
  assert bench.model_config(bench.BENCH_MODELS["mtms_embedding"], args).scene_route == "grouped"
  assert "scene_route" not in bench.model_config(bench.BENCH_MODELS["esmm"], args)
  taken = {"ctr: 2 scenes x [320, 16, 8, 1], batch 2048": "kernel",
           "cvr: 2 scenes x [320, 16, 8, 1], batch 2048": "all"}
  assert bench.routes_cell(taken) == "ctr kernel, cvr all" and bench.routes_cell({}) == "-"


def test_makefile_sets_the_bench_malloc_tunables():
  makefile = (Path(__file__).parents[2] / "Makefile").read_text()
  assert f"MALLOC_TUNABLES := {bench.MALLOC_TUNABLES}\n" in makefile


def test_a_multi_scene_target_is_half_of_esmm_in_the_same_run():
  def result(name, steps, of_esmm):
    spec = bench.BENCH_MODELS[name]
    return {"model": name, "phase": "joint", "steps_examples_per_s": steps,
            "e2e_examples_per_s": steps, "steps_examples_range": (steps, steps),
            "e2e_examples_range": (steps, steps), "e2e_over_steps": 1.0, "compile_s": 1.0,
            "peak_rss_gib": 1.0, "load_avg": 1.0, "routes": {},
            "target_examples_per_s": spec.target, "target_of_esmm": of_esmm}
  assert bench.BENCH_MODELS["m2m"].of_esmm == 0.5 and bench.BENCH_MODELS["mmoe"].of_esmm == 0
  alone = [result("m2m", 110_000, 0.5)]
  bench.set_relative_targets(alone)            # no ESMM measured: the fixed fallback
  assert alone[0]["target_examples_per_s"] == 100_000
  results = [result("esmm", 240_000, 0.0), result("m2m", 110_000, 0.5),
             result("mmoe", 110_000, 0.0)]
  bench.set_relative_targets(results)
  assert results[1]["target_examples_per_s"] == 120_000
  assert bench.table_row(results[1])[7] == "120.0k = 0.5x esmm missed"
  assert bench.table_row(results[2])[7] == "120.0k missed"       # a fixed target stays
