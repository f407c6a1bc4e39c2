"""Pieces shared by experiment files: the base config and the `smoke` shrink.

`get_config(arg)` in an experiment file receives what follows ':' in
`--config experiments/NAME.py:ARG`; `smoke` shrinks data and steps to a seconds-long run
(the tests run every experiment this way).
"""

import ml_collections


def parse_arg(arg):
  """'smoke' or None -> set of flags."""
  flags = set(filter(None, (arg or "").split(",")))
  unknown = flags - {"smoke"}
  if unknown:
    raise ValueError(f"unknown config args {sorted(unknown)}; known: ['smoke']")
  return flags


def synthetic_data(**overrides):
  kwargs = {"num_scenes": 2, "num_days": 4, "rows_per_day": 1_000_000, "num_users": 1000,
            "num_ads": 300, "embedding_dim": 16, "seed": 0}
  kwargs.update(overrides)
  # scenes: indices of the scenes to keep (empty keeps all), e.g. (0,) for a one-scene model.
  return ml_collections.ConfigDict({"name": "synthetic", "kwargs": kwargs, "scenes": ()})


# The row-wise table optimizer equal to each optax optimizer on the rows a batch touches
# (mtms_jax/step.py); the others update whole tables ('dense').
ROWWISE_EQUIVALENT = {"adam": "lazy_adam", "sgd": "sgd"}


def phase(loss="ctr+cvr+ctcvr", epochs=1.0, learning_rate=3e-3, optimizer="adam"):
  return ml_collections.ConfigDict({
      "loss": loss,
      "loss_weights": {},
      "epochs": epochs,
      "steps": 0,                  # > 0 overrides epochs
      "optimizer": {"name": optimizer, "learning_rate": learning_rate, "clip_norm": 0.0,
                    # dense | sgd | rowwise_adagrad | lazy_adam: how tables are updated
                    "embedding": ROWWISE_EQUIVALENT.get(optimizer, "dense"),
                    "embedding_learning_rate": 0.0},    # 0: learning_rate
  })


def base_config(arg=None) -> ml_collections.ConfigDict:
  """MTMS, non-shared embeddings, alternating embedding/ranking phases on synthetic data."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.data = synthetic_data()
  config.train_days = (0, 1, 2)      # trained in order: day T starts from day T-1's state
  config.test_day = 3
  config.model = ml_collections.ConfigDict({
      "name": "mtms",
      "sharing": "none",             # none | tasks | all
      "tower_hidden": (32, 16),
      "ranking_hidden": (128, 64),
      "aggregation": "concat",       # concat | mean
      # Ranking phase sources: () every component; (s1, ...) own scene's + scenes s1, ...
      "ranking_scenes": (),
  })
  config.schedule = ml_collections.ConfigDict({
      "order": ("embedding", "ranking"),
      "rounds_per_day": 1,
  })
  config.phases = ml_collections.ConfigDict({
      "embedding": phase(epochs=3.0, learning_rate=5e-3),
      "ranking": phase(epochs=1.0, learning_rate=1e-3),
  })
  config.batch_size = 1024
  config.eval_batch_size = 8192
  config.log_every = 100
  if "smoke" in parse_arg(arg):
    shrink(config)
  return config


def shrink(config):
  """Seconds-long: tiny data, a few steps per phase."""
  if config.data.name == "synthetic":
    config.data.kwargs.update(rows_per_day=2000, num_users=50, num_ads=20)
  for name in config.phases:
    config.phases[name].steps = 3
  config.batch_size = 64
  config.eval_batch_size = 512
  config.log_every = 1


# The field's standard multi-task models (mtms_jax/models/joint.py) at their reference
# sizes (embedding dim 16 comes from the data schema).
JOINT_MODELS = {
    "esmm": {"tower_hidden": (16, 8)},
    "mmoe": {"num_experts": 8, "expert_hidden": (16,), "tower_hidden": (8,)},
    "ple": {"num_levels": 1, "task_experts": 2, "shared_experts": 1, "expert_hidden": (16,),
            "tower_hidden": (8,)},
    "shared_bottom": {"bottom_hidden": (117,), "tower_hidden": (8,)},
}


def joint_sections(name):
  """model, schedule and phases of a field-standard model trained in one joint phase.

  ESMM keeps its own loss, ctr+ctcvr (paper Eq. 1); the others get the MTMS loss
  ctr+cvr+ctcvr, so that a comparison with MTMS differs in architecture and procedure only.
  """
  if name not in JOINT_MODELS:
    raise ValueError(f"unknown joint model {name!r}; known: {sorted(JOINT_MODELS)}")
  loss = "ctr+ctcvr" if name == "esmm" else "ctr+cvr+ctcvr"
  return {
      "model": ml_collections.ConfigDict({"name": name, **JOINT_MODELS[name]}),
      "schedule": ml_collections.ConfigDict({"order": ("joint",), "rounds_per_day": 1}),
      "phases": ml_collections.ConfigDict({"joint": phase(loss, epochs=3.0,
                                                          learning_rate=5e-3)}),
  }


def joint_config(name, arg=None) -> ml_collections.ConfigDict:
  """base_config with the model, schedule and phases of `joint_sections(name)`."""
  config = base_config()
  for key, section in joint_sections(name).items():
    config[key] = section
  if "smoke" in parse_arg(arg):
    shrink(config)
  return config
