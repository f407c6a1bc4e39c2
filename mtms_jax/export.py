"""`python -m mtms_jax.export --workdir W --out DIR`: a trained run's serving artifact.

The command users type; the code is `mtms_jax.serving.export`.
"""

from absl import app

from mtms_jax.serving import export

if __name__ == "__main__":
  app.run(export.main)
