"""make bench-gpu's plan, its table and its stop without a GPU; timings never asserted."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from benchmarks import bench_gpu
from tests.benchmarks.test_bench import TINY

REPO = Path(__file__).parents[2]


def test_the_plan_covers_every_batch_model_and_route():
  argvs = bench_gpu.plan(bench_gpu.BATCHES, bench_gpu.RUNS[0][0], [])
  runs = {(a[a.index("--batch") + 1], a[a.index("--models") + 1], a[a.index("--scene_route") + 1])
          for a in argvs}
  models = {"esmm": ["ragged"], "mmoe": ["ragged"], "mtms_embedding": ["ragged", "xla"],
            "mtms_ranking": ["ragged", "xla"]}
  assert runs == {(str(b), m, r) for b in (2048, 16384, 65536) for m, rs in models.items()
                  for r in rs} and len(argvs) == len(runs)
  assert all(int(a[a.index("--rows") + 1]) >= 8 * 65536 for a in argvs)


def test_a_tiny_plan_runs_on_the_cpu_and_writes_json_and_table(tmp_path):
  out, table = tmp_path / "bench_gpu.json", tmp_path / "bench_gpu.md"
  bench_gpu.main(["--cpu", "--batches", "128", "--models", "esmm", "--bench_args",
                  " ".join(TINY[:6]), "--out", str(out), "--table", str(table)])
  report = json.loads(out.read_text())
  (run,), = [report["runs"]]
  assert run["results"][0]["steps_examples_per_s"] > 0 and report["machine"]["jax"]
  assert "| esmm | - | " in table.read_text() and "M (" in table.read_text()


def test_the_table_marks_runs_past_the_budget_and_failures():
  reports = [{"argv": argv, "not_run": "time budget of 1 s spent"} for argv in
             bench_gpu.plan([2048], "mtms_embedding", [])]
  reports[0] = {"argv": reports[0]["argv"],
                "results": [{"model": "mtms_embedding", "failed": "timed out after 60 s"}]}
  lines = bench_gpu.table(reports).splitlines()
  assert lines[2] == "| mtms_embedding | ragged | timed out after 60 s |"
  assert lines[3] == "| mtms_embedding | xla | not run |"


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="an NVIDIA GPU's tools here")
def test_make_bench_gpu_stops_at_once_without_a_gpu():
  done = subprocess.run(["bash", "benchmarks/bench_gpu.sh"], cwd=REPO, capture_output=True,
                        text=True, timeout=30, env={**os.environ, "PATH": "/usr/bin:/bin"})
  assert done.returncode == 2 and done.stdout == ""
  assert done.stderr.strip().splitlines() == [
      "make bench-gpu: no NVIDIA GPU here (nvidia-smi finds none); nothing run"]


@pytest.mark.parametrize("cuda", ["cuda12", "cuda13"])
def test_the_cuda_lock_pins_the_plugins_of_requirements_locks_jax(cuda):
  def pins(path):
    lines = (line.split("#")[0].strip() for line in (REPO / path).read_text().splitlines())
    return dict(line.split("==") for line in lines if line)
  jax_version = pins("requirements.lock")["jax"]
  cuda_pins = pins(f"benchmarks/requirements-{cuda}.lock")
  assert cuda_pins[f"jax-{cuda}-plugin"] == cuda_pins[f"jax-{cuda}-pjrt"] == jax_version
  assert not set(cuda_pins) & set(pins("requirements.lock"))   # one pin per package
  assert "-r benchmarks/requirements-$cuda.lock" in (REPO / "benchmarks/bench_gpu.sh").read_text()
