"""Pieces shared by experiment files: the base config and the `smoke` shrink.

`get_config(arg)` in an experiment file receives what follows ':' in
`--config experiments/NAME.py:ARG`; `smoke` shrinks data and steps to a seconds-long run
(the tests run every experiment this way).
"""

import ml_collections

from mtms_jax import parallel


def parse_arg(arg, known=("smoke",)):
  """'smoke' or None (or other `known` flags, ','-joined) -> set of flags."""
  flags = set(filter(None, (arg or "").split(",")))
  unknown = flags - set(known)
  if unknown:
    raise ValueError(f"unknown config args {sorted(unknown)}; known: {sorted(known)}")
  return flags


def synthetic_data(**overrides):
  kwargs = {"num_scenes": 2, "num_days": 4, "rows_per_day": 1_000_000, "num_users": 1000,
            "num_ads": 300, "embedding_dim": 16, "seed": 0}
  kwargs.update(overrides)
  # scenes: indices of the scenes to keep (empty keeps all), e.g. (0,) for a one-scene model.
  # schema: a schema file of one's own logs (README, Your own logs); set, it replaces the
  # data set and sets train_days, test_day and validation.day (mtms_jax/data/logs/).
  return ml_collections.ConfigDict({"name": "synthetic", "kwargs": kwargs, "scenes": (),
                                    "schema": ""})


# The row-wise table optimizer equal to each optax optimizer on the rows a batch touches
# (mtms_jax/optim.py); the others update whole tables ('dense').
ROWWISE_EQUIVALENT = {"adam": "lazy_adam", "sgd": "sgd"}


def phase(loss="ctr+cvr+ctcvr", epochs=1.0, learning_rate=3e-3, optimizer="adam",
          min_steps=200):
  return ml_collections.ConfigDict({
      "loss": loss,
      "loss_weights": {},
      "epochs": epochs,            # at most this many epochs of each day's rows ...
      "min_steps": min_steps,      # ... and at least this many steps
      "steps": 0,                  # > 0 overrides both
      # The share (start, stop) of each training day's rows the phase reads, e.g. (0.0, 0.8)
      # for the embedding phase and (0.8, 1.0) for the ranking phase: then the ranking
      # network learns on rows the embeddings it reads were not trained on. Measured on the
      # validation rows of five regimes (README, When does MTMS win?), that split did not
      # help MTMS (worse in 8 of 9 cells with per-component stopping), so both read all.
      "rows": (0.0, 1.0),
      # Scored on the validation rows `evals_per_epoch` times an epoch (at least
      # `min_eval_steps` steps apart); the phase stops after `patience` scores in a row
      # without improving on its best by `min_delta` (0: never), and goes back to its best
      # parameters (restore_best: a copy of what it trains).
      # MTMS's embedding phase adds per_component (base_config).
      "early_stopping": {"metric": "loss",     # its loss, or a metric: 'val/all/ctr/auc'
                         "mode": "auto",       # min for loss/logloss/mae, max for auc
                         "patience": 2, "min_delta": 0.0, "evals_per_epoch": 4,
                         "min_eval_steps": 20, "restore_best": True},
      "dropout": 0.0,              # share of the networks' inputs dropped in training
      "optimizer": {"name": optimizer, "learning_rate": learning_rate, "clip_norm": 0.0,
                    "weight_decay": 0.0,            # decoupled, of the networks' kernels
                    # Learning rate: linear warmup from 0 over warmup_steps, then constant,
                    # or a linear/cosine decay to final_factor x at the phase's last step.
                    "warmup_steps": 0, "decay": "constant", "final_factor": 0.0,
                    # dense | sgd | rowwise_adagrad | lazy_adam: how tables are updated
                    "embedding": ROWWISE_EQUIVALENT.get(optimizer, "dense"),
                    "embedding_learning_rate": 0.0,   # 0: learning_rate
                    "embedding_weight_decay": 0.0},   # L2 on the rows a step touches
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
      # The embedding phase's towers, per (scene, task): CTR's (128, 64), CVR's (32, 16) (CVR
      # towers learn from clicked rows only). Picked on the regime map's dev days (10 cells at
      # 2 and 10 scenes, 3 seeds; README, When does MTMS win?): against (32, 16) for both, CTR
      # AUC higher in all 10 (+0.012 to +0.056), CTCVR in all 10, CVR -0.013 to +0.033;
      # (128, 64) for both lowered CVR at sparse conversions (down to -0.023).
      "tower_hidden": (128, 64),
      "cvr_tower_hidden": (32, 16),  # None: tower_hidden's
      "ranking_hidden": (128, 64),
      "aggregation": "concat",       # concat | mean
      # Ranking phase sources: () every component; (s1, ...) own scene's + scenes s1, ...
      "ranking_scenes": (),
      # The ranking network adds to the embedding-phase towers' logits, from a head that
      # starts at 0: the phase starts at the towers and, with early stopping, ends no worse.
      "ranking_residual": True,
      # One ranking head for every scene, not one per scene: on the validation rows of the
      # regime map's rich 10-scene (similarity 0.5, 1) and 100-scene cells, 3 seeds, every
      # task's AUC higher (CVR +0.002, +0.025, +0.008): a small scene's own head learns from
      # its few rows only; the scene still enters as the first layer's bias.
      "ranking_head": "shared",
      "embedding_init_stddev": 0.05,
      # How examples meet their scene's tower weights (models/layers.py SceneMLP): auto
      # (the fastest on this machine, measured once and cached; xla on several devices) |
      # xla | kernel | ragged | all | gather | grouped.
      "scene_route": "auto",
  })
  config.schedule = ml_collections.ConfigDict({
      "order": ("embedding", "ranking"),
      "rounds_per_day": 1,
      # Hot start (paper Sec. IV): the first history_days of train_days run history_order's
      # phases only, e.g. ("embedding",) to pre-train the embeddings; () runs `order`.
      "history_days": 0,
      "history_order": (),
  })
  config.phases = ml_collections.ConfigDict({
      "embedding": phase(epochs=3.0, learning_rate=5e-3),
      # 5e-3 and 3 epochs, not 1e-3 and 2: on the validation rows of the 5 regime-map cells
      # tried (3 seeds) CVR AUC +0.001 to +0.042, CTR and CTCVR within -0.004 where lower
      # (README, When does MTMS win?); the residual network starts at the towers, so early
      # stopping bounds it.
      "ranking": phase(epochs=3.0, learning_rate=5e-3),
  })
  # Each (scene, task) component scored on its own scene's validation rows and task (metric
  # 'loss': its task's log loss; 'val/<scene>/<task>/<m>' reads as its own scene's and
  # task's <m>), keeps its own best and stops on its own (train/early_stopping.py): the
  # paper's independent components. With sharing 'all' the one component is scored on
  # every row and task.
  config.phases.embedding.early_stopping.per_component = True
  # ... but the components with fewer than min_rows validation rows of their task (CVR's:
  # clicked rows) are scored together, their rows pooled, and stop together: picked on the
  # regime map's dev days (3 seeds a cell; README, When does MTMS win?): at 100 scenes CVR
  # AUC 0.663 against each on its own 0.642 (seeds p 0.023; both reading the 4 largest
  # scenes), at 10 scenes within the seeds' spread in the 5 cells tried (mean CVR +0.005,
  # CTR -0.005).
  config.phases.embedding.early_stopping.min_rows = 1000
  config.batch_size = 1024
  config.eval_batch_size = 8192
  config.log_every = 100
  config.init_from = ""              # warm start from this workdir or checkpoint, if no own one
  config.init_load = ("embedding",)  # params subtrees it loads; add "ranking" for the network
  # Resume or warm start on data other than the run's (data_fingerprint.json): an error
  # unless True (e.g. logs cleaned after a run started, or a warm start on new days' logs).
  config.allow_other_data = False
  # The rows that stop phases early and rank checkpoints (mtms_jax/eval/validation.py); never
  # the test day. day >= 0: that day; -1: the data's own validation split if it has one,
  # else the last `fraction` of every training day's rows, held out of training.
  config.validation = ml_collections.ConfigDict({"day": -1, "fraction": 0.1,
                                                 "max_rows": 100_000})
  config.checkpoint = ml_collections.ConfigDict({
      "every_steps": 1000,           # and at the end of training, and on SIGTERM/SIGINT
      "keep": 2,                     # the last `keep` checkpoints, plus the best one by:
      "best_metric": "val/all/ctcvr/auc",     # validation metric at each save; '' tracks none
      "best_mode": "max",
  })
  config.sweep = ml_collections.ConfigDict({"metric": "test/all/ctcvr/auc", "mode": "max"})
  # Devices and processes (mtms_jax/parallel.py, docs/SCALING.md): mode none | pmap | mesh,
  # table_sharding replicated | rows, and for several processes coordinator, num_processes,
  # process_id (num_processes 0: one process unless a SLURM/MPI job has several tasks;
  # -1: what jax detects, e.g. on a TPU pod).
  config.parallel = ml_collections.ConfigDict(parallel.DEFAULTS)
  if "smoke" in parse_arg(arg):
    shrink(config)
  return config


def shrink(config):
  """Seconds-long: tiny data, a few steps per phase."""
  if config.data.name == "synthetic":
    config.data.kwargs.update(rows_per_day=2000, num_users=50, num_ads=20)
  if config.model.name == "mtms":   # the default (128, 64) costs a smoke run 20% more time
    config.model.tower_hidden = (32, 16)
  for name in config.phases:
    config.phases[name].steps = 3
  config.checkpoint.every_steps = 4
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
    # PEPNet's gates are its size: 16-wide Gate NUs put its network at about 42k weights on
    # the bench's 20 fields of dim 16 (MMoE 47k, Shared-Bottom 40k, PLE 28k); 32-wide ones
    # would make it 74k, half again MMoE's.
    "pepnet": {"gate_hidden": 16, "tower_hidden": (16, 8)},
    # M2M: 4 experts [16], Scenario-Wise-Rec's M2M default (its benchmark is the one the
    # field compares M2M in), MMoE's towers. Its meta attention and meta towers pass over
    # (B, E, H) arrays per task, so at MMoE's 8 experts its update cost 2.3x ESMM's (bench
    # 0.43x ESMM, README Performance). The meta unit's generators run on the S scene
    # representations, not on the batch; scene_dim 8 keeps them small.
    "m2m": {"num_experts": 4, "expert_hidden": (16,), "scene_dim": 8, "tower_layers": 1,
            "tower_hidden": (8,)},
    # STAR's star bottom [48] costs an example one 48-wide layer (its scene's weights), about
    # PLE's three 16-wide experts; its shared plus per-scene weights, (1 + S) x 48 per input,
    # are at 2 scenes MMoE's 8 x 16 + gates. Towers [8] and an auxiliary network [8] as the
    # others' towers. Moving statistics as flax's BatchNorm (momentum 0.99). Route 'xla'
    # (for a few scenes on the CPU: 'all'), not the native kernel: on make bench's workload
    # (200k rows, load 7-11) 124k and 76k examples/s against 46k and 56k with the kernel,
    # and 107k against 117-138k on a quiet AVX-512 Xeon (2026-12-03).
    "star": {"star_hidden": (48,), "tower_hidden": (8,), "aux_hidden": (8,),
             "statistics_momentum": 0.99, "norm_epsilon": 1e-5, "scene_route": "xla"},
}


# How tables name each model; a model missing here is named by its JOINT_MODELS key.
JOINT_LABELS = {"esmm": "ESMM", "mmoe": "MMoE", "ple": "PLE", "shared_bottom": "Shared-Bottom",
                "star": "STAR", "pepnet": "PEPNet", "m2m": "M2M"}


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


# ----------------------------------------------------------------------------------------
# Comparisons (mtms_jax/runs/compare.py): experiments/table1.py, table2.py
# ----------------------------------------------------------------------------------------
MOVIELENS_PATH = "../shared/data/movielens/ml-100k_recbole_wheel"
CENSUS_PATH = "../shared/data/census_income_kdd/keras_mmoe_full_test/census-income.test.gz"


def dataset(name):
  """Shared sections of a comparison on data set `name`, and the scene its table reports.

  synthetic: 2 scenes, 4 days of 300k rows; trains on days 0-2, tests on day 3; reports
    scene0 (60% of rows), as the paper reports its main scene, the news feed.
  movielens: MovieLens-100K, scenes = 3 age groups, cut by time into 5 slots of 20k
    ratings; trains on slots 0-3 in order, tests on slot 4 (a split in time, like the
    paper's next-day test: most test-slot users are new); reports age_ge35, the largest
    scene of the test slot.
  zipf: the benchmark's workload with true probabilities (mtms_jax/data/zipf.py): 1M rows,
    2 scenes that behave alike, 20 Zipf fields of 100k ids, clicks 4%, conversions 5% of
    clicks, labels as predictable as the oracle AUCs the quality issue quotes
    (label_scale 1.12); the last 10% of rows are the test day (1); reports 'all'.
  census: Census-Income (KDD), the UCI test file (the train file is not here), one scene
    'all', a random 50/25/25 split: trains on day 0, validates on day 1, tests on day 2.
    click = never
    married; --config.data.kwargs.click_label=income puts income there instead (see
    mtms_jax/data/census.py).

  Returns:
    ({data, train_days, test_day, batch_size}, reported scene index, its name).
  """
  if name == "synthetic":
    return ({"data": synthetic_data(rows_per_day=300_000), "train_days": (0, 1, 2),
             "test_day": 3, "batch_size": 1024}, 0, "scene0")
  if name == "movielens":
    data = ml_collections.ConfigDict({"name": "movielens", "scenes": (), "schema": "",
                                      "kwargs": {"path": MOVIELENS_PATH, "num_days": 5}})
    return ({"data": data, "train_days": (0, 1, 2, 3), "test_day": 4, "batch_size": 256},
            2, "age_ge35")
  if name == "zipf":
    data = ml_collections.ConfigDict({"name": "zipf", "scenes": (), "schema": "", "kwargs": {
        "num_rows": 1_000_000, "label_scale": 1.12, "seed": 1}})
    return ({"data": data, "train_days": (0,), "test_day": 1, "batch_size": 1024}, 0, "all")
  if name == "census":
    data = ml_collections.ConfigDict({"name": "census", "scenes": (), "schema": "", "kwargs": {
        "path": CENSUS_PATH, "click_label": "never_married"}})
    validation = ml_collections.ConfigDict({"day": 1, "fraction": 0.1, "max_rows": 100_000})
    return ({"data": data, "train_days": (0,), "test_day": 2, "batch_size": 256,
             "validation": validation}, 0, "all")
  raise ValueError(f"unknown data set {name!r} for a comparison; known: {DATASETS}")


DATASETS = ("synthetic", "movielens", "census", "zipf")


def mtms_row(label, sharing, loss, ranking_loss, scenes):
  """A row of the MTMS model, alternating embedding and ranking phases (paper Sec. III-C)."""
  config = base_config()
  config.model.sharing = sharing
  config.phases.embedding.loss = loss
  config.phases.ranking.loss = ranking_loss
  return ml_collections.ConfigDict({"label": label, "model": config.model,
                                    "schedule": config.schedule, "phases": config.phases,
                                    "scenes": tuple(scenes)})


def joint_row(label, name, scenes=()):
  """A row of a field-standard model (`joint_sections`), one joint phase."""
  return ml_collections.ConfigDict({"label": label, **joint_sections(name),
                                    "scenes": tuple(scenes)})


def joint_rows():
  """{name: row} of every model of JOINT_MODELS, on every scene: a model added there is a
  row of every comparison that takes the joint models (table2, quality)."""
  return {name: joint_row(JOINT_LABELS.get(name, name), name) for name in JOINT_MODELS}


def compare_config(arg, make_rows, **compare) -> ml_collections.ConfigDict:
  """A comparison config: shared data and batch settings, rows, and `compare` fields.

  Args:
    arg: 'movielens' or 'census' picks that data set (synthetic otherwise); 'smoke'
      shrinks data, steps and seeds (2) to a seconds-long run; ','-joined.
    make_rows: focus scene index -> {row name: row}, the index being that of the scene
      the table reports (one-scene rows train on it alone).
    **compare: the other `compare` fields (baseline, tasks, metrics, layout, title).
  """
  flags = parse_arg(arg, known=("smoke",) + DATASETS)
  chosen = [name for name in DATASETS if name in flags]
  if len(chosen) > 1:
    raise ValueError(f"config args name data sets {chosen}; pick one")
  sections, focus, scene = dataset(chosen[0] if chosen else "synthetic")
  config = ml_collections.ConfigDict(sections)
  config.seed = 0
  config.eval_batch_size = 8192
  config.log_every = 100
  # Every (row, seed) run is an ordinary run: checkpointed and resumable like any other.
  base = base_config()
  for key in ("init_from", "init_load", "validation", "checkpoint", "sweep"):
    if key not in config:
      config[key] = base[key]
  rows = make_rows(focus)
  # ConfigDict sorts its keys, so the table's row order is kept apart.
  config.compare = ml_collections.ConfigDict({"rows": rows, "order": tuple(rows), "seeds": 5,
                                              "scene": scene, **compare})
  if "smoke" in flags:
    if config.data.name == "synthetic":
      config.data.kwargs.update(rows_per_day=2000, num_users=50, num_ads=20)
    if config.data.name == "zipf":
      config.data.kwargs.update(num_rows=4000, vocab=200, num_fields=5)
    for row in config.compare.rows.values():
      for phase_config in row.phases.values():
        phase_config.steps = 3
    config.compare.seeds = 2
    # Saved (and validated) mid-run once and at the end: a smoke table has many runs, and
    # each save costs more than its three steps.
    config.checkpoint.every_steps = 9
    config.batch_size = 64
    config.eval_batch_size = 512
    config.log_every = 1
  return config
