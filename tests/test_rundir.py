"""The run folder: atomic writes and the one "finished" rule."""

import json

import ml_collections
import pytest

from mtms_jax import rundir
from mtms_jax.data import fingerprint
from mtms_jax.errors import UserError
from mtms_jax.report import markdown


def test_a_failed_write_leaves_the_old_file(tmp_path):
  target = tmp_path / "sub" / "results.json"
  rundir.write_atomically(str(target), "old")
  with pytest.raises(RuntimeError):
    with rundir.replacing(str(target)) as f:
      f.write("half")
      raise RuntimeError("killed")
  assert target.read_text() == "old"
  assert [p.name for p in target.parent.iterdir()] == ["results.json"]   # no temporary left


def test_finished_means_results_and_the_needed_files(tmp_path):
  data = {"name": "synthetic", "kwargs": {"rows_per_day": 100, "num_days": 2}}
  config = ml_collections.ConfigDict({"seed": 0, "data": data})
  workdir = str(tmp_path)
  assert rundir.finished_results(workdir, config) is None            # an empty folder
  rundir.write_config(workdir, config)
  assert rundir.finished_results(workdir, config) is None            # started, not finished
  rundir.write_json(workdir, rundir.DATA_FINGERPRINT, fingerprint.of_config(config.data))
  rundir.write_json(workdir, rundir.RESULTS, {"test/all/ctr/auc": 0.5})
  assert rundir.finished_results(workdir, config) == {"test/all/ctr/auc": 0.5}
  assert rundir.finished_results(workdir, config, needs=(rundir.PREDICTIONS,)) is None
  assert json.loads((tmp_path / rundir.CONFIG).read_text()) == config.to_dict()
  other = ml_collections.ConfigDict({"seed": 1, "data": data})
  with pytest.raises(UserError, match="holds a run of a different config"):
    rundir.finished_results(workdir, other)


def test_markdown_table_and_a_short_row():
  assert markdown.table(["a", "b", "c"], [["1", "2", "3"], ["x"]]) == (
      "| a | b | c |\n|---|---|---|\n| 1 | 2 | 3 |\n| x |||")
