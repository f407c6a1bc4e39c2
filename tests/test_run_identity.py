"""Run identity includes the data (issue 20, case 2): a run resumes, or warm-starts from
another, only on the data it was trained on, unless config.allow_other_data."""

import json
import shutil

import numpy as np
import pytest

from experiments import common
from mtms_jax import digests, errors, rundir
from mtms_jax.data import fingerprint, registry, synthetic
from mtms_jax.data.logs import prepare, schema_file
from mtms_jax.errors import UserError
from mtms_jax.train import trainer

CSV_SCHEMA = """files: {train: train.csv, test: test.csv}
format: csv
scene: {column: channel}
labels: {click: clk, conversion: buy}
sparse:
  - {name: user, vocab: 10}
dense:
  - {name: price, transform: log1p}
"""
CSV = "clk,buy,user,price,channel\n" + "".join(
    f"{i % 2},0,{i % 10},{i / 7:.3f},{'feed' if i % 3 else 'search'}\n" for i in range(40))


@pytest.fixture
def flipped_clicks(monkeypatch):
  """The synthetic data with the clicks of its first 50 rows flipped: the same config on
  other data (as an edited log file would be)."""
  load = synthetic.load

  def load_flipped(**kwargs):
    data = load(**kwargs)
    click = data.columns["click"].copy()
    click[:50] = 1 - click[:50]
    data.columns["click"] = click
    data.columns["conversion"] = np.where(click > 0, data.columns["conversion"], 0)
    return data
  monkeypatch.setattr(synthetic, "load", load_flipped)


def _resumable_copy(smoke_run, tmp_path):
  run = tmp_path / "run"
  shutil.copytree(smoke_run, run)
  (run / rundir.RESULTS).unlink()
  return run


def test_resuming_on_other_data_is_an_error_naming_the_column(smoke_run, tmp_path,
                                                               flipped_clicks):
  run = _resumable_copy(smoke_run, tmp_path)
  with pytest.raises(UserError, match=r"different data \(columns\.click\.sha256: '[0-9a-f]+' "
                                      r"-> '[0-9a-f]+'.*allow_other_data=True"):
    trainer.train_and_evaluate(common.base_config("smoke"), str(run))
  config = common.base_config("smoke")
  config.allow_other_data = True                  # the explicit override: resumes
  trainer.train_and_evaluate(config, str(run))
  assert json.loads((run / rundir.RUN_INFO).read_text())["resumed_from_step"] == 18
  assert json.loads((run / rundir.DATA_FINGERPRINT).read_text())["columns"]["click"] != \
      json.loads((smoke_run / rundir.DATA_FINGERPRINT).read_text())["columns"]["click"]


def test_warm_starting_from_a_run_on_other_data_is_an_error(smoke_run, tmp_path,
                                                             flipped_clicks):
  config = common.base_config("smoke")
  config.init_from = str(smoke_run)
  with pytest.raises(UserError, match=r"Warm starting from needs the same data"):
    trainer.train_and_evaluate(config, str(tmp_path / "warm"))


def test_a_run_written_before_fingerprints_resumes_with_a_warning(smoke_run, tmp_path):
  run = _resumable_copy(smoke_run, tmp_path)
  (run / rundir.DATA_FINGERPRINT).unlink()
  with pytest.warns(errors.Notice, match=r"resuming a run without a data_fingerprint.json"):
    trainer.train_and_evaluate(common.base_config("smoke"), str(run))
  assert (run / rundir.DATA_FINGERPRINT).read_text() == \
      (smoke_run / rundir.DATA_FINGERPRINT).read_text()


def _logs_fingerprint(path):
  config = common.base_config("smoke").data
  config.schema = str(path)
  prepare.prepare(schema_file.load(path))
  return fingerprint.of(registry.load_source(config), config)


def test_a_schema_files_fingerprint_has_its_options_and_its_files_contents(tmp_path):
  (tmp_path / "train.csv").write_text(CSV)
  (tmp_path / "test.csv").write_text(CSV)
  path = tmp_path / "s.yaml"
  path.write_text(CSV_SCHEMA)
  first = _logs_fingerprint(path)
  assert set(first["schema_file"]["sources"]) == {"train.csv", "test.csv"}
  path.write_text(CSV_SCHEMA.replace("transform: log1p", "transform: none"))
  other_transform = _logs_fingerprint(path)
  assert other_transform["columns"]["dense"] != first["columns"]["dense"]
  assert other_transform["schema_file"]["digest"] != first["schema_file"]["digest"]
  path.write_text(CSV_SCHEMA)
  (tmp_path / "train.csv").write_text(CSV.replace("\n1,0,1,", "\n0,0,1,"))    # clicks flipped
  flipped = _logs_fingerprint(path)
  assert flipped["columns"]["click"] != first["columns"]["click"]
  assert flipped["columns"]["dense"] == first["columns"]["dense"]


def test_a_data_sets_fingerprint_is_computed_once_until_its_files_change(tmp_path,
                                                                         monkeypatch):
  (tmp_path / "train.csv").write_text(CSV)
  (tmp_path / "test.csv").write_text(CSV)
  path = tmp_path / "s.yaml"
  path.write_text(CSV_SCHEMA)
  hashed = []
  array_digest = digests.array_digest
  monkeypatch.setattr(digests, "array_digest", lambda a: hashed.append(a) or array_digest(a))
  first = _logs_fingerprint(path)
  columns = len(hashed)
  config = common.base_config("smoke").data
  config.update(schema=str(path), scenes=(1,))       # a comparison's one-scene row
  assert fingerprint.of_config(config) == first and len(hashed) == columns
  (tmp_path / "train.csv").write_text(CSV + CSV.split("\n", 1)[1])   # its rows twice
  assert _logs_fingerprint(path)["rows"] == 120 and len(hashed) == 2 * columns
