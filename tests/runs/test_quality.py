"""make quality on any data and any curve_epochs (issue 20, case 8): CTR-only logs (no
oracle, no known fields, the task ctr alone) and no epoch curves both write quality.md, and
a rerun with other curve_epochs trains only the new curves."""

from experiments import quality as quality_experiment
from mtms_jax import rundir
from mtms_jax.runs import quality
from mtms_jax.train import trainer
from tests.data.logs.test_logs import SCHEMA, schema_config, write_logs


def test_quality_on_ctr_only_logs_and_reruns_with_other_epoch_curves(tmp_path, monkeypatch):
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

  # Reruns in the same workdir with other curve_epochs (issue 20, case 8) reuse every
  # finished run, the default runs included, and train only the new epoch curves.
  trained = []
  train = trainer.train_and_evaluate
  monkeypatch.setattr(trainer, "train_and_evaluate",
                      lambda config, workdir, **kw: trained.append(workdir) or train(
                          config, workdir, **kw))
  config.quality.curve_epochs = (1, 2)
  out = quality.run(config, str(workdir))
  assert trained == [str(workdir / "epochs" / "esmm" / "2")]
  assert {k.split("/")[1] for k in out if "/epochs" in k} == {"epochs1", "epochs2"}
  config.quality.curve_epochs = ()
  out = quality.run(config, str(workdir))
  assert len(trained) == 1
  assert not any("epochs" in k or "below_best_epoch" in k for k in out)
  text = (workdir / rundir.QUALITY_MD).read_text()
  assert "| ESMM |" in text and "ep." not in text
