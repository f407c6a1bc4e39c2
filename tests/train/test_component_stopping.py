"""Per-component early stopping of MTMS's embedding phase (early_stopping.per_component):
each (scene, task) component keeps its own best, stops on its own and is kept once stopped."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import common
from mtms_jax import config_checks, models, optim
from mtms_jax.data import pipeline
from mtms_jax.errors import UserError
from mtms_jax.train import early_stopping, freezing, loop, trainer, train_state
from mtms_jax.train import step as step_lib


def _model(tiny_data, sharing="none"):
  config = common.base_config("smoke")
  config.model.sharing = sharing
  config.phases.embedding.early_stopping.update(per_component=True, min_rows=0)
  return config, models.get_model(tiny_data.schema, config.model)


def _slice(model, params, component):
  """The values of `component`'s table rows and tower slices in `params`, flattened."""
  selected = np.arange(model.layout.num_components) == component
  masks = model.component_masks(params["embedding"], selected)
  return np.concatenate([np.asarray(p)[np.broadcast_to(np.asarray(m), p.shape)]
                         for m, p in zip(jax.tree.leaves(masks),
                                         jax.tree.leaves({k: params["embedding"][k]
                                                          for k in masks}))])


def _shifted(params, by):
  return jax.tree.map(lambda x: x + by, params)


def test_component_masks_cover_every_embedding_parameter_once(tiny_data):
  for sharing, expected in (("none", [(0, ("ctr",)), (0, ("cvr",)), (1, ("ctr",)),
                                      (1, ("cvr",))]),
                            ("tasks", [(0, ("ctr", "cvr")), (1, ("ctr", "cvr"))]),
                            ("all", [(None, ("ctr", "cvr"))])):
    _, model = _model(tiny_data, sharing)
    assert model.component_owners() == expected
    params = model.init(jax.random.key(0))
    embedding = params["embedding"]
    counts = jax.tree.map(np.zeros_like, embedding)
    for c in range(len(expected)):
      masks = model.component_masks(embedding, np.arange(len(expected)) == c)
      counts = jax.tree.map(lambda n, m, p: n + np.broadcast_to(np.asarray(m), p.shape),
                            counts, masks, embedding)
    assert all((x == 1).all() for x in jax.tree.leaves(counts))
    for c in range(len(expected)):
      assert _slice(model, params, c).size > 0


def _stopper(model, patience):
  take = jax.jit(functools.partial(freezing.take_components, model))
  es = common.phase().early_stopping
  es.update(patience=patience, per_component=True)
  config = common.phase()
  config.early_stopping = es
  return early_stopping.ComponentStopping.from_config(config, take,
                                                      model.layout.num_components)


def test_each_component_ends_at_its_own_best_evaluation(tiny_data):
  _, model = _model(tiny_data)
  params = model.init(jax.random.key(0))
  # Parameters at evaluation k: every value shifted by k, so each evaluation's differ.
  evals = [_shifted(params, float(k)) for k in range(5)]
  # Component c's loss is lowest at evaluation best[c]; patience 10 stops none of them.
  best = [1, 3, 0, 4]
  stopper = _stopper(model, patience=10)
  state = train_state.init_state(params, {}, model.layout.num_components)
  for k, p in enumerate(evals):
    scores = np.array([abs(k - b) for b in best], float)
    state, stops = stopper.evaluated(scores, 10 * k, {**state, "params": p})
    assert not stops
  np.testing.assert_array_equal(stopper.best_step, [10 * b for b in best])
  ended = stopper.end(state)
  for c, b in enumerate(best):
    np.testing.assert_array_equal(_slice(model, ended["params"], c),
                                  _slice(model, evals[b], c))
  # The ranking network is not a component's: it ends as it was.
  jax.tree.map(np.testing.assert_array_equal, ended["params"]["ranking"],
               evals[-1]["ranking"])
  assert np.asarray(ended["active"]).all()


def test_a_component_that_stops_goes_back_to_its_best_at_once(tiny_data):
  _, model = _model(tiny_data)
  params = model.init(jax.random.key(0))
  stopper = _stopper(model, patience=2)
  state = train_state.init_state(params, {}, model.layout.num_components)
  # Component 1 gets worse after evaluation 0, the others keep improving.
  for k in range(3):
    scores = np.array([-k, k, -k, -k], float)
    state, stops = stopper.evaluated(scores, k, {**state, "params": _shifted(params, k)})
  assert not stops
  np.testing.assert_array_equal(np.asarray(state["active"]), [True, False, True, True])
  np.testing.assert_array_equal(_slice(model, state["params"], 1), _slice(model, params, 1))
  np.testing.assert_array_equal(_slice(model, state["params"], 0),
                                _slice(model, _shifted(params, 2), 0))
  # A stopped component is not scored again: a better score later does not move its best.
  state, _ = stopper.evaluated(np.array([-3, -9, -3, -3], float), 3, state)
  assert stopper.best_step[1] == 0
  saved = json.loads(json.dumps(stopper.to_json()))
  restored = _stopper(model, patience=2)
  restored.load_json(saved)
  for field in ("best_score", "best_step", "bad_evals", "active"):
    np.testing.assert_array_equal(getattr(restored, field), getattr(stopper, field))


# lazy_adam changes the rows a batch reads (and only those are put back), dense all rows.
@pytest.mark.parametrize("table_optimizer", ["lazy_adam", "dense"])
def test_stopped_components_do_not_change_in_later_updates(tiny_data, table_optimizer):
  config, model = _model(tiny_data)
  config.phases.embedding.optimizer.embedding = table_optimizer
  params = model.init(jax.random.key(0))
  txs = optim.make_phase_txs(config, model, params)
  update = step_lib.make_update_fn(model, txs["embedding"], "embedding",
                                   config.phases.embedding)
  state = train_state.init_state(params, txs, model.layout.num_components)
  state["active"] = jnp.array([False, True, True, False])
  before = jax.tree.map(np.array, state["params"])
  batches = pipeline.train_iterator(tiny_data.columns, 64, 5, seed=0)
  for _ in range(5):
    state, _ = update(state, next(batches))
  for c, stopped in enumerate([True, False, False, True]):
    same = np.array_equal(_slice(model, state["params"], c), _slice(model, before, c))
    assert same == stopped, c


def _overfitting_config(min_rows=0):
  """MTMS on one small day, a high learning rate and many embedding epochs: its components
  overfit quickly, each at its own step (min_rows 0: each scored on its own rows)."""
  config = common.base_config("smoke")
  config.data.kwargs.update(rows_per_day=3000)
  config.train_days, config.test_day = (0,), 1
  embedding = config.phases.embedding
  embedding.update(steps=0, epochs=30.0)
  embedding.optimizer.learning_rate = 0.02
  embedding.early_stopping.update(patience=2, evals_per_epoch=4, min_eval_steps=1,
                                  per_component=True, min_rows=min_rows)
  config.checkpoint.every_steps = 7
  config.log_every = 5
  return config


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
  """The run's workdir, results, and each embedding-phase evaluation's component scores."""
  workdir = tmp_path_factory.mktemp("component_stopped_run")
  results = trainer.train_and_evaluate(_overfitting_config(), str(workdir))
  lines = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
  scores = [{k: v for k, v in x.items() if k.endswith("/logloss")} for x in lines
            if x["phase"] == "early_stopping" and "val/embedding/loss" in x]
  return workdir, results, scores


def test_components_stop_at_their_own_steps(stopped_run):
  _, results, scores = stopped_run
  names = sorted(scores[0])
  assert len(names) == 4
  # The last evaluation at which each component was still scored (a stopped one is scored
  # as it stays, at its best): the components did not all stop at the same evaluation.
  last_change = [max(i for i in range(len(scores)) if i == 0
                     or scores[i][n] != scores[i - 1][n]) for n in names]
  assert len(set(last_change)) > 1, last_change
  assert results["train_steps"] < 30 * 2700 / 64 / 3     # planned: 30 epochs


def test_components_with_few_rows_stop_together_per_task(tmp_path):
  # Every component has fewer validation rows than min_rows: the two scenes' CTR components
  # are scored on their rows pooled, so are the CVR ones, and each pair stops together.
  trainer.train_and_evaluate(_overfitting_config(min_rows=10**6), str(tmp_path))
  lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  scores = [x for x in lines if x["phase"] == "early_stopping" and "val/embedding/loss" in x]
  for task in ("ctr", "cvr"):
    pair = [f"val/embedding/scene{s}/{task}/logloss" for s in (0, 1)]
    assert all(x[pair[0]] == x[pair[1]] for x in scores), task


def test_component_stopped_run_resumes_exactly(stopped_run, tmp_path, monkeypatch):
  workdir, _, _ = stopped_run
  monkeypatch.setenv(loop.TEST_SIGNAL_ENV, "50:INT")
  with pytest.raises(loop.Interrupted, match="SIGINT at step 50"):
    trainer.train_and_evaluate(_overfitting_config(), str(tmp_path))
  # Stopped inside the embedding phase, one component stopped and the others not yet.
  progress = json.loads((tmp_path / "checkpoints" / "50" / "progress" / "metadata").read_text())
  assert 0 < sum(progress["early_stopping"]["active"]) < 4
  monkeypatch.delenv(loop.TEST_SIGNAL_ENV)
  trainer.train_and_evaluate(_overfitting_config(), str(tmp_path))
  assert json.loads((tmp_path / "run.json").read_text())["resumed_from_step"] == 50
  for name in ("results.json", "metrics.jsonl"):
    assert (tmp_path / name).read_text() == (workdir / name).read_text(), name


def test_per_component_of_the_ranking_phase_is_refused():
  config = common.base_config()
  config.phases.ranking.early_stopping.per_component = True
  with pytest.raises(UserError, match="phases.ranking.early_stopping.per_component=True: "
                     "phase 'ranking' trains"):
    config_checks.check(config)


def test_with_one_shared_component_it_stops_on_every_row_and_task(tmp_path):
  """sharing 'all' (one component for every scene and task, at the per_component default):
  the component is scored on every validation row, the sum of its tasks' log losses."""
  config = common.base_config("smoke")
  config.model.sharing = "all"
  assert config.phases.embedding.early_stopping.per_component
  config_checks.check(config)
  trainer.train_and_evaluate(config, str(tmp_path))
  lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  scored = [x for x in lines if x["phase"] == "early_stopping" and "val/embedding/loss" in x]
  assert scored
  for x in scored:
    total = x["val/embedding/all/ctr+cvr/logloss"]
    assert np.isfinite(total) and total > 0
    assert not any(k.startswith("val/embedding/scene") for k in x)   # no scene's own score


def test_per_component_of_a_joint_model_is_refused():
  config = common.joint_config("esmm")
  config.phases.joint.early_stopping.per_component = True
  with pytest.raises(UserError, match="model 'esmm' has no per-component parameters"):
    config_checks.check(config)
