r"""MTMS against ESMM and MMoE on one regime of the regime generator (mtms_jax/data/regimes.py).

  make experiment NAME=regimes ARG=distinct RUN=distinct   # checkpoints/regimes/distinct; or:
  .venv/bin/python -m mtms_jax.main --config experiments/regimes.py:distinct \
      --workdir checkpoints/regimes_distinct

Regimes (config args, one at most; none: the generator's defaults, scene similarity 0.5):
  similar         the scenes' label effects identical (scene_similarity 1)
  distinct        unrelated label effects, ids popular differently per scene, half the ids
                  seen in one scene only (scene_similarity 0, id_shift 1, id_overlap 0.5)
  many_scenes     100 scenes, Zipf sizes (exponent 1)
  rich_cvr        40% of clicks convert, a strong conversion signal (cvr_strength 2)
  sparse_cvr      2% of clicks convert, a weak conversion signal (cvr_strength 0.5)
  hot_start       6 history days before the 4-day window: MTMS pre-trains its embeddings on
                  them (schedule.history_days), then trains on the window's first 3 days in
                  order (day T starts from day T-1's state) and tests on its last
  movielens_like  the statistics of MovieLens-100K with age scenes (docs/REGIMES.md)
Add 'smoke' for a seconds-long run. 2 scenes of 4 days x 100k rows otherwise, 3 seeds, every
model at its defaults; reports all scenes together, with DeLong's and the seeds test against
ESMM. A run of one regime takes about 3 models x 3 seeds x a few minutes on the 2-core CPU.
"""

from experiments import common, quality

REGIMES = {
    "similar": {"scene_similarity": 1.0},
    "distinct": {"scene_similarity": 0.0, "id_shift": 1.0, "id_overlap": 0.5},
    "many_scenes": {"num_scenes": 100, "scene_size_exponent": 1.0},
    "rich_cvr": {"conversion_rate": 0.4, "cvr_strength": 2.0},
    "sparse_cvr": {"conversion_rate": 0.02, "cvr_strength": 0.5},
    "hot_start": {"history_days": 6},
    # Measured against MovieLens-100K's statistics (docs/REGIMES.md): 3 scenes of near equal
    # size, most items in every scene, ratings > 3 as clicks (55%), > 4 of those as likes.
    "movielens_like": {"num_scenes": 3, "num_users": 943, "num_ads": 1682,
                       "scene_size_exponent": 0.3, "scene_similarity": 0.9, "id_shift": 0.05,
                       "id_overlap": 0.8, "popularity_skew": 1.3, "click_rate": 0.55,
                       "conversion_rate": 0.38, "cvr_strength": 2.0},
}


def rows(focus):
  """make quality's rows (every row on every scene, at defaults), MTMS, ESMM and MMoE."""
  return {name: row for name, row in quality.rows(focus).items()
          if name in ("mtms", "esmm", "mmoe")}


def get_config(arg=None):
  flags = common.parse_arg(arg, known=("smoke",) + tuple(REGIMES))
  picked = sorted(flags & set(REGIMES))
  if len(picked) > 1:
    raise ValueError(f"config args name regimes {picked}; pick one")
  regime = picked[0] if picked else "defaults"
  config = common.compare_config(
      "smoke" if "smoke" in flags else None, rows, baseline="esmm",
      tasks=("ctr", "cvr", "ctcvr"), metrics=("auc", "mae"), layout="columns", seeds=3,
      scene="all", title=f"Regime {regime}: MTMS, ESMM, MMoE on all scenes")
  kwargs = {"rows_per_day": 100_000, "num_days": 4, "embedding_dim": 16, "seed": 0,
            **REGIMES.get(regime, {})}
  if "smoke" in flags:
    kwargs.update(rows_per_day=2000, num_users=50, num_ads=20)
  config.data = common.synthetic_data()
  config.data.name = "regimes"
  config.data.kwargs = kwargs
  # Days are numbered from the first history day: the window is the last num_days days.
  history = kwargs.get("history_days", 0)
  last = history + kwargs["num_days"] - 1
  config.train_days = tuple(range(last))
  config.test_day = last
  # The paper's protocol (Sec. IV): MTMS pre-trains its embeddings on the history days, then
  # alternates embedding and ranking phases on the window's days in order. The joint models
  # have one phase: they train on every day alike.
  config.compare.rows.mtms.schedule.history_days = history
  config.compare.rows.mtms.schedule.history_order = ("embedding",) if history else ()
  return config
