"""Auction replay: the paper's online measures (Table II: CVR, CTCVR, t_charge) on synthetic
data whose true click and conversion probabilities are known.

A comparison (`compare.run`: every model, every seed) is trained first; then, for each model
and seed, its test-day predictions of the reported scene run an auction replay:

  requests     the scene's test rows grouped by user (the field `replay.user_field`), K =
               `replay.candidates` rows a request: the candidate ads of one user's visit
  bids         one per candidate, lognormal(0, `replay.bid_sigma`), mean 1 (a unit of
               money): what the advertiser pays per conversion (oCPC-style charging)
  ranking      each model shows the candidate of highest eCPM = bid x pCTR x pCVR
  outcomes     click ~ Bernoulli(true p(click)) of the shown ad, conversion ~ Bernoulli(true
               p(conversion | click)) after a click, drawn `replay.draws` times a request
  measures     CVR = conversions / clicks; CTCVR = conversions / impressions; t_charge =
               1000 x sum(bid x conversion) / impressions, the charge per 1000 impressions:
               the paper's "bid_price x conversion_rate", averaged over what was shown

Every model of one seed sees the same requests, bids and uniform draws (common random
numbers: an ad shown by two models gets the same outcome), so their differences come from
the ranking alone. The seed is the training seed, so the spread over seeds covers both the
training and the draws; each measure is reported as its mean over seeds with a 95%
t-interval, and as a change against the baseline with a paired 95% t-interval. Two rows need
no model: 'oracle' ranks by the true probabilities (the ceiling), 'random' picks a candidate
at random (the floor).

Writes replay.md and replay.json to the workdir, beside the comparison's files.
"""

from __future__ import annotations

import os

import ml_collections
import numpy as np
from scipy import stats

from mtms_jax import errors, rundir
from mtms_jax.data import registry
from mtms_jax.errors import UserError
from mtms_jax.report import markdown
from mtms_jax.runs import compare

MEASURES = ("cvr", "ctcvr", "t_charge")


def make_requests(users: np.ndarray, candidates: int, rng: np.random.Generator) -> np.ndarray:
  """(R, candidates) row indices: each user's rows, shuffled, cut into requests of
  `candidates`; a user's leftover rows (fewer than a request) are not used."""
  order = rng.permutation(len(users))
  order = order[np.argsort(users[order], kind="stable")]         # by user, shuffled within
  requests = []
  for rows in np.split(order, np.flatnonzero(np.diff(users[order])) + 1):
    usable = len(rows) - len(rows) % candidates
    requests.append(rows[:usable].reshape(-1, candidates))
  return np.concatenate(requests) if requests else np.zeros((0, candidates), np.int64)


def auction(ecpm, bids, true_ctr, true_cvr, u_click, u_conversion) -> dict:
  """Sums of one replay. ecpm (the ranking score), bids, true_*: (R, K) per candidate; u_*:
  (D, R) uniform draws (D replays of each request). Shows each request's argmax of ecpm.

  Returns {'impressions', 'clicks', 'conversions', 'charge'} (charge = sum of the shown
  ads' bids over conversions).
  """
  shown = np.argmax(ecpm, axis=1)
  pick = lambda a: np.take_along_axis(a, shown[:, None], axis=1)[:, 0]  # noqa: E731
  click = u_click < pick(true_ctr)
  conversion = click & (u_conversion < pick(true_cvr))
  return {"impressions": click.size, "clicks": int(click.sum()),
          "conversions": int(conversion.sum()),
          "charge": float((conversion * pick(bids)).sum())}


def measures(sums: dict) -> dict[str, float]:
  """CVR, CTCVR and t_charge (per 1000 impressions) of an `auction`'s sums."""
  return {"cvr": sums["conversions"] / max(sums["clicks"], 1),
          "ctcvr": sums["conversions"] / sums["impressions"],
          "t_charge": 1000.0 * sums["charge"] / sums["impressions"]}


def interval(values) -> tuple[float, float]:
  """(mean, half-width of the 95% t-interval) over seeds; the half-width is nan for one."""
  values = np.asarray(values, np.float64)
  if values.size < 2:
    return float(values.mean()), float("nan")
  return (float(values.mean()),
          float(stats.t.ppf(0.975, values.size - 1) * values.std(ddof=1) / np.sqrt(values.size)))


def check(config: ml_collections.ConfigDict) -> None:
  """Raises UserError naming the `replay` field that is wrong (its user_field is checked
  against the data's fields in `scene_test_rows`)."""
  r = config.replay
  errors.expect(r.candidates >= 2, "config.replay.candidates", r.candidates, ">= 2")
  errors.expect(r.draws >= 1, "config.replay.draws", r.draws, ">= 1")
  errors.expect(r.bid_sigma >= 0, "config.replay.bid_sigma", r.bid_sigma, ">= 0")


def scene_test_rows(config: ml_collections.ConfigDict):
  """(columns, truth) of the reported scene's test-day rows, in the data's order, with
  columns['user'] the `replay.user_field` id of each row."""
  check(config)
  data = registry.load_data(config.data).days([config.test_day])
  if data.truth is None:
    raise UserError(f"config.data.name={config.data.name!r} has no true probabilities; the "
                     "replay needs synthetic data")
  scene = list(data.schema.scenes).index(config.compare.scene)
  rows = data.select(data.columns["scene"] == scene)
  fields = [f.name for f in data.schema.sparse]
  if config.replay.user_field not in fields:
    raise UserError(f"config.replay.user_field={config.replay.user_field!r}: expected one of "
                     f"the sparse fields {fields}")
  user = rows.columns["ids"][:, fields.index(config.replay.user_field)]
  return {**rows.columns, "user": user}, rows.truth


def replay_seed(config, seed: int, columns, truth, predictions: dict[str, dict]) -> dict:
  """{model: measures} for one seed: the trained models' `predictions` ({model: {'ctr',
  'cvr'}} on the scene's test rows), the oracle and random, on one set of draws."""
  r = config.replay
  rng = np.random.default_rng(seed)
  requests = make_requests(columns["user"], r.candidates, rng)
  bids = rng.lognormal(-r.bid_sigma ** 2 / 2, r.bid_sigma, requests.shape)
  u_click, u_conversion = rng.random((2, r.draws, len(requests)))
  true_ctr, true_cvr = truth["ctr"][requests], truth["cvr"][requests]
  ecpm = {**{name: bids * p["ctr"][requests] * p["cvr"][requests]
             for name, p in predictions.items()},
          "oracle": bids * true_ctr * true_cvr,
          "random": rng.random(requests.shape)}
  return {name: measures(auction(e, bids, true_ctr, true_cvr, u_click, u_conversion))
          for name, e in ecpm.items()}


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains or reuses the comparison, replays every (model, seed), writes the table."""
  columns, truth = scene_test_rows(config)        # its errors before any training
  # Without the replay section, so that changing it replays the same trained runs.
  trained = config.to_dict()
  del trained["replay"]
  compare.run(ml_collections.ConfigDict(trained), workdir)
  c = config.compare
  per_seed = []
  for k in range(c.seeds):
    predictions = {}
    for name in c.order:
      saved = compare.scene_predictions(os.path.join(workdir, name, f"seed{k}"), c.scene)
      if not np.array_equal(saved["click"], columns["click"]):
        raise UserError(f"{name} seed {k}: its test predictions are not of the rows "
                        f"{config.data.name} generates now; rerun it in a new workdir")
      predictions[name] = saved
    per_seed.append(replay_seed(config, config.seed + k, columns, truth, predictions))
  summary = summarize(per_seed, c.baseline)
  rundir.write_json(workdir, rundir.REPLAY_JSON, summary)
  table = replay_md(summary, list(c.order) + ["oracle", "random"], c, config.replay)
  rundir.write_text(workdir, rundir.REPLAY_MD, table + "\n")
  print("\n" + table)
  return summary


def summarize(per_seed: list[dict], baseline: str) -> dict[str, float]:
  """'<model>/<measure>_mean', '_ci95' over seeds; '_delta' (relative to the baseline's
  mean) and '_delta_ci95' (paired by seed)."""
  out = {}
  for name in per_seed[0]:
    for m in MEASURES:
      values = [s[name][m] for s in per_seed]
      base = [s[baseline][m] for s in per_seed]
      out[f"{name}/{m}_mean"], out[f"{name}/{m}_ci95"] = interval(values)
      for k, v in enumerate(values):
        out[f"{name}/{m}_seed{k}"] = v
      if name != baseline:
        diff_mean, diff_ci = interval(np.subtract(values, base))
        out[f"{name}/{m}_delta"] = diff_mean / np.mean(base)
        out[f"{name}/{m}_delta_ci95"] = diff_ci / np.mean(base)
  return out


def replay_md(summary: dict, names: list[str], c, r) -> str:
  """Markdown: measures as rows, models as columns (the paper's Table II layout)."""
  scale = {"cvr": (100, "%"), "ctcvr": (1000, "‰"), "t_charge": (1, "")}
  header = ["Measure"] + [c.rows[n].label if n in c.rows else n for n in names]
  rows = []
  for m in MEASURES:
    factor, unit = scale[m]
    cells = [m if m != "t_charge" else "t_charge (per 1000 impressions)"]
    for n in names:
      cell = (f"{factor * summary[f'{n}/{m}_mean']:.3f} ± "
              f"{factor * summary[f'{n}/{m}_ci95']:.3f}{unit}")
      if f"{n}/{m}_delta" in summary:
        cell += (f" ({100 * summary[f'{n}/{m}_delta']:+.2f}% ± "
                 f"{100 * summary[f'{n}/{m}_delta_ci95']:.2f})")
      cells.append(cell)
    rows.append(cells)
  return (f"**Auction replay, {c.scene}: {c.seeds} seeds, {r.candidates} candidates a request, "
          f"{r.draws} draws** (mean ± 95% CI over seeds; change against {c.baseline}, paired "
          f"95% CI)\n\n" + markdown.table(header, rows))
