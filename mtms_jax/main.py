"""Command line: `python -m mtms_jax.main --config experiments/NAME.py --workdir DIR
[--config.key=value ...]`. The config is locked: overriding a key it lacks is an error.
A config with a `compare` section (experiments/table1.py) runs a multi-model comparison."""

from absl import app, flags
from ml_collections import config_flags

from mtms_jax import compare, train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder: config, metrics, results.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  run = compare.run if "compare" in _CONFIG.value else train.train_and_evaluate
  run(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
