r"""Where MTMS wins: the regime map, or MTMS against the other models on one regime
(mtms_jax/data/regimes.py; docs/REGIMES.md).

  make experiment NAME=regimes                    # the map: checkpoints/regimes/
  make experiment NAME=regimes ARG=distinct RUN=distinct   # one regime: checkpoints/regimes/distinct

The map (no regime arg; mtms_jax/runs/regime_map.py): scene similarity {0, 0.5, 1} x
conversions {sparse, rich} x {2, 10} scenes, plus 100 scenes of long-tailed (Zipf) sizes,
each cell MTMS against ESMM, MMoE, PLE, Shared-Bottom, STAR, PEPNet and M2M (every model at
its defaults, 3 seeds), on the paper's protocol: a hot start (the embeddings pre-trained on
HISTORY_DAYS history days), then the last 3 days trained in order, the next day tested.
Writes regime_map.md / .csv / regime_map_<task>.png (MTMS minus the best other model, with
DeLong's and the seeds test) and places MovieLens-100K (age scenes) beside the cells by its
measured statistics. 28 min on an idle 2-core AMD EPYC (README, When does MTMS win?).

What a cell's knobs are:
  similarity s   the scenes' label effects correlate by s (scene_similarity), and their ids
                 are distributed differently as they differ (id_shift 1 - s, a share
                 0.5 + 0.5 s of the ids seen in every scene): s = 1 is one scene's data split
                 in parts; s = 0 the paper's scenes of differently distributed features.
  sparse, rich   2% of clicks convert and the ids say little about conversion
                 (cvr_strength 0.5), or 40% convert, strongly id-driven (cvr_strength 2):
                 the paper's sparse and rich conversion data (Sec. III-B).

One regime (a config arg, one at most), 2 scenes of 4 days x 100k rows, 3 seeds, MTMS, ESMM
and MMoE:
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
Add 'smoke' for a seconds-long run (the map's smoke: 2 cells, MTMS and ESMM), and 'dev'
for the dev day: every run one day earlier, testing on the last training day, never on the
test day (`make experiment NAME=regimes ARG=dev RUN=dev`). MTMS's defaults were picked there:
the validation rows are what early stopping picks each phase's (and component's) best on,
so scores on them favour whatever selects the most (README, When does MTMS win?).
"""

import os

import ml_collections

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

# The map's axes (module docstring).
SIMILARITIES = (0.0, 0.5, 1.0)
CONVERSIONS = {"sparse": REGIMES["sparse_cvr"], "rich": REGIMES["rich_cvr"]}
SCENE_COUNTS = (2, 10)
MANY_SCENES = 100
HISTORY_DAYS = 3
LARGEST_SCENES = (0, 1, 2, 3)
# The map's 13 cells x 8 models x 3 seeds took 28 min on 2 idle AMD EPYC (Zen 4) cores,
# 35 min on 2 idle Intel cores, 53-78 min with other jobs beside it.
MAP_DATA = {"rows_per_day": 40_000, "num_days": 4, "history_days": HISTORY_DAYS,
            "embedding_dim": 16, "seed": 0}


def similarity_kwargs(s):
  return {"scene_similarity": s, "id_shift": 1.0 - s, "id_overlap": 0.5 + 0.5 * s}


def map_cells():
  """{name: cell} of the map: the grid, then the 100-scene cell (similarity 0.5, rich).
  Names say the similarity in tenths (sim05: 0.5): config keys hold no dots."""
  cells = {}
  for conversions, conversion_kwargs in CONVERSIONS.items():
    for scenes in SCENE_COUNTS:
      for s in SIMILARITIES:
        cells[f"{conversions}_{scenes}scenes_sim{round(10 * s):02d}"] = {
            "row": f"{conversions}, {scenes} scenes", "column": f"similarity {s:g}",
            "kwargs": {"num_scenes": scenes, **similarity_kwargs(s), **conversion_kwargs}}
  cells[f"rich_{MANY_SCENES}scenes_sim05"] = {
      "row": f"rich, {MANY_SCENES} scenes (Zipf)", "column": "similarity 0.5",
      "kwargs": {"num_scenes": MANY_SCENES, **similarity_kwargs(0.5), **CONVERSIONS["rich"]},
      "rows": {"mtms": {"model": many_scenes_model()}}}
  return cells


def many_scenes_model():
  """MTMS's model settings on 100 scenes, picked on the map's 100-scene dev day (3 seeds;
  README, When does MTMS win?). Its ranking phase reads its own scene's components and those
  of the 4 largest scenes (the generator numbers scenes by size), not all 200: CVR AUC 0.663
  against 0.653 (seeds p 0.044), CTR and CTCVR +0.003 and +0.009, at about a quarter of the
  time. Its CTR towers keep (32, 16): the default (128, 64) was level (CTR / CVR / CTCVR
  0.673 / 0.662 / 0.708 against 0.672 / 0.663 / 0.711) at 1.5x the time."""
  return {"ranking_scenes": LARGEST_SCENES, "tower_hidden": (32, 16)}


def rows(focus):
  """make quality's rows: MTMS and every joint model, on every scene, at defaults."""
  return quality.rows(focus)


def movielens_reference():
  """MovieLens-100K (age scenes) as the map's reference data, if ../shared holds it."""
  data = common.dataset("movielens")[0]["data"]
  if not os.path.exists(data.kwargs.path):
    return {}
  return {"label": "MovieLens-100K (age scenes)", "data": data, "item_field": "item"}


def hot_start(config, history, dev=False):
  """Days numbered from the first history day: the window is the last num_days days, the
  last of them the test day. MTMS pre-trains its embeddings on the history days, then
  alternates its phases on the window's days in order (paper Sec. IV); the joint models have
  one phase and train on every day alike. dev: the same one day earlier, the window's last
  training day its test day, so the test day is never read (where defaults are picked)."""
  last = history + config.data.kwargs["num_days"] - 1 - int(dev)
  config.train_days = tuple(range(last))
  config.test_day = last
  config.compare.rows.mtms.schedule.history_days = history
  config.compare.rows.mtms.schedule.history_order = ("embedding",) if history else ()


def map_config(smoke, dev=False):
  config = common.compare_config(
      "smoke" if smoke else None, rows, baseline="mtms", tasks=("ctr", "cvr", "ctcvr"),
      metrics=("auc",), layout="columns", seeds=3, scene="all",
      title="Regime map: MTMS against the best other model")
  config.data = common.synthetic_data()
  config.data.name = "regimes"
  config.data.kwargs = dict(MAP_DATA)
  cells = map_cells()
  order = tuple(cells)
  if smoke:
    config.data.kwargs.update(rows_per_day=2000, num_users=50, num_ads=20, history_days=1)
    config.compare.order = ("mtms", "esmm")
    order = ("sparse_2scenes_sim00", "rich_2scenes_sim10")
  hot_start(config, config.data.kwargs["history_days"], dev)
  # Each phase reads its epochs of a day's rows, with no floor of steps (min_steps 200 would
  # be 11 epochs of a map day): every model gets the same budget in epochs.
  for row in config.compare.rows.values():
    for phase in row.phases.values():
      phase.min_steps = 0
  config.regime_map = ml_collections.ConfigDict({
      "cells": {name: cells[name] for name in order}, "order": order, "subject": "mtms",
      "metric": "auc", "item_field": "ad", "reference": movielens_reference()})
  return config


def regime_config(regime, smoke, dev=False):
  config = common.compare_config(
      "smoke" if smoke else None, lambda focus: {
          name: row for name, row in rows(focus).items() if name in ("mtms", "esmm", "mmoe")},
      baseline="esmm", tasks=("ctr", "cvr", "ctcvr"), metrics=("auc", "mae"),
      layout="columns", seeds=3, scene="all",
      title=f"Regime {regime}: MTMS, ESMM, MMoE on all scenes")
  kwargs = {"rows_per_day": 100_000, "num_days": 4, "embedding_dim": 16, "seed": 0,
            **REGIMES[regime]}
  if smoke:
    kwargs.update(rows_per_day=2000, num_users=50, num_ads=20)
  config.data = common.synthetic_data()
  config.data.name = "regimes"
  config.data.kwargs = kwargs
  if kwargs.get("num_scenes", 2) >= MANY_SCENES:
    config.compare.rows.mtms.model.update(many_scenes_model())
  hot_start(config, kwargs.get("history_days", 0), dev)
  return config


def get_config(arg=None):
  flags = common.parse_arg(arg, known=("smoke", "dev") + tuple(REGIMES))
  picked = sorted(flags & set(REGIMES))
  if len(picked) > 1:
    raise ValueError(f"config args name regimes {picked}; pick one")
  if picked:
    return regime_config(picked[0], "smoke" in flags, "dev" in flags)
  return map_config("smoke" in flags, "dev" in flags)
