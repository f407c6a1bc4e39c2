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


def _tensorboard_scalars(folder) -> list[tuple[int, str, float]]:
  """(step, tag, value) of every scalar in the event files of `folder`, read as TensorBoard
  reads them: TFRecords (length, its CRC, an Event proto, its CRC)."""
  import struct

  from tensorboardX.proto.event_pb2 import Event
  found = []
  for events in sorted(folder.iterdir()):
    data = events.read_bytes()
    at = 0
    while at < len(data):
      (length,) = struct.unpack("<Q", data[at:at + 8])
      event = Event.FromString(data[at + 12:at + 12 + length])
      at += 12 + length + 4
      found += [(event.step, v.tag, v.simple_value) for v in event.summary.value]
  return found


def test_run_writer_logs_each_finite_scalar_to_tensorboard(tmp_path):
  with rundir.RunWriter(str(tmp_path), 0) as writer:
    writer.write(3, {"train/loss": 0.5, "val/all/ctr/auc": 0.75, "bad": float("nan")},
                 phase="embedding")
    writer.write(7, {"train/loss": 0.25}, phase="embedding")
  assert sorted(_tensorboard_scalars(tmp_path / rundir.TENSORBOARD)) == [
      (3, "train/loss", 0.5), (3, "val/all/ctr/auc", 0.75), (7, "train/loss", 0.25)]
  lines = [json.loads(x) for x in (tmp_path / rundir.METRICS).read_text().splitlines()]
  assert [x["step"] for x in lines] == [3, 7] and lines[0]["phase"] == "embedding"
