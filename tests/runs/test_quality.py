"""make quality on any data and any curve_epochs (issue 20, case 8): CTR-only logs (no
oracle, no known fields, the task ctr alone) and no epoch curves both write quality.md."""

from experiments import quality as quality_experiment
from mtms_jax import rundir
from mtms_jax.runs import quality
from tests.data.logs.test_logs import SCHEMA, schema_config, write_logs


def test_quality_on_ctr_only_logs_with_and_without_epoch_curves(tmp_path):
  path = write_logs(tmp_path, rows=(300, 300, 200, 200))
  path.write_text(SCHEMA.replace(", conversion: buy", ""))
  config = quality_experiment.get_config("smoke")
  config.compare.order = ("esmm",)                   # the baseline alone: one training
  config = schema_config(config, path)
  workdir = tmp_path / "quality"
  out = quality.run(config, str(workdir))
  assert {k.split("/")[-2] for k in out if "/epochs1/" in k} == {"ctr"}
  text = (workdir / rundir.QUALITY_MD).read_text()
  assert "| ESMM |" in text and "1 ep. (CTR)" in text and "CVR" not in text
  assert "oracle" not in text and "logistic regression" not in text

  config.quality.curve_epochs = ()
  workdir = tmp_path / "no_curves"    # the runs' config.json holds curve_epochs: not reused
  out = quality.run(config, str(workdir))
  assert not any("epochs" in k or "below_best_epoch" in k for k in out)
  text = (workdir / rundir.QUALITY_MD).read_text()
  assert "| ESMM |" in text and "ep." not in text
