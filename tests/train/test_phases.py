"""The alternating update: each phase trains its subtree only and keeps its own moments."""

import jax
import numpy as np
import optax
import pytest

from experiments import common
from mtms_jax import models, optim
from mtms_jax.data import pipeline
from mtms_jax.train import step as step_lib
from mtms_jax.train import train_state


@pytest.fixture(scope="module")
def setup(tiny_data):
  config = common.base_config("smoke")
  model = models.get_model(tiny_data.schema, config.model)
  params = model.init(jax.random.key(0))
  txs = optim.make_phase_txs(config, model, params)
  # Updates donate their state, so every test starts from its own copy of these params.
  params = jax.tree.map(np.array, params)
  update_fns = {p: step_lib.make_update_fn(model, tx, p, config.phases[p]) for p, tx in txs.items()}
  batches = pipeline.train_iterator(tiny_data.columns, 64, 100, seed=0)
  return model, params, txs, update_fns, batches


def _copy(tree):
  return jax.tree.map(np.array, tree)


def _num_elements(tree):
  return sum(np.size(x) for x in jax.tree.leaves(tree))


def test_each_phase_freezes_the_other_subtree_bitwise(setup):
  _, params, txs, update_fns, batches = setup
  state = train_state.init_state(jax.tree.map(jax.numpy.array, params), txs)
  for phase, frozen in (("ranking", "embedding"), ("embedding", "ranking"),
                        ("ranking", "embedding")):
    before = _copy(state["params"])
    for _ in range(3):
      state, _ = update_fns[phase](state, next(batches))
    after = _copy(state["params"])
    jax.tree.map(np.testing.assert_array_equal, before[frozen], after[frozen])
    changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), before[phase],
                           after[phase])
    assert all(jax.tree.leaves(changed)), f"{phase} phase left some of its params unchanged"
  # Alternating did not recompile: one executable per phase.
  assert all(fn._cache_size() == 1 for fn in update_fns.values())


def test_frozen_subtree_has_no_optimizer_moments(setup):
  _, params, txs, _, _ = setup
  state = train_state.init_state(jax.tree.map(jax.numpy.array, params), txs)
  tables = params["embedding"]["tables"]
  # The smoke config trains tables with lazy Adam (row-wise) and the rest with optax Adam.
  for phase, dense_trained, table_state in (
      ("embedding", params["embedding"]["towers"], 2 * _num_elements(tables)
       + sum(t.shape[0] + 1 for t in tables.values())),     # mu, nu, owner slots, count
      ("ranking", params["ranking"], 0)):
    opt_state = state["opt"][phase]
    # Adam keeps mu and nu for the dense-trained params, plus scalar counts; nothing else.
    assert _num_elements(opt_state["dense"]) == 2 * _num_elements(dense_trained) + 1
    assert _num_elements(opt_state["tables"]) == table_state
    masked = [x for x in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(
        x, optax.MaskedNode)) if isinstance(x, optax.MaskedNode)]
    assert masked, "the frozen subtree should appear as MaskedNode in the optimizer state"


def test_moments_persist_across_alternation(setup):
  _, params, txs, update_fns, batches = setup
  state = train_state.init_state(jax.tree.map(jax.numpy.array, params), txs)
  state, _ = update_fns["embedding"](state, next(batches))
  moments = _copy(state["opt"]["embedding"])
  state, _ = update_fns["ranking"](state, next(batches))
  jax.tree.map(np.testing.assert_array_equal, moments, _copy(state["opt"]["embedding"]))


@pytest.mark.parametrize("sharing, ranking_scenes, head", [
    ("none", (), "scene"), ("none", (1,), "scene"), ("tasks", (), "scene"),
    ("all", (), "scene"), ("none", (), "shared"), ("none", (1,), "shared")])
def test_residual_ranking_starts_at_the_embedding_towers(tiny_data, sharing, ranking_scenes,
                                                         head):
  config = common.base_config("smoke")
  config.model.update(sharing=sharing, ranking_scenes=ranking_scenes, ranking_residual=True,
                      ranking_head=head)
  model = models.get_model(tiny_data.schema, config.model)
  params = model.init(jax.random.key(0))
  batch = next(pipeline.train_iterator(tiny_data.columns, 64, 1, seed=0))
  towers = models.forward(model, params, batch, "embedding")
  ranking = models.forward(model, params, batch, "ranking")
  for key in ("ctr_logit", "cvr_logit"):
    np.testing.assert_array_equal(ranking[key], towers[key])
  # Once the head moves off 0, the ranking network's own logits count.
  params["ranking"]["head"] = jax.tree.map(lambda w: w + 0.1, params["ranking"]["head"])
  moved = models.forward(model, params, batch, "ranking")
  assert (np.asarray(moved["ctr_logit"]) != np.asarray(towers["ctr_logit"])).any()


def _hidden_widths(tower: dict) -> list[int]:
  """The output widths of a tower's layers but its last (the logit)."""
  kernels = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(tower)
             if "kernel" in jax.tree_util.keystr(path)]
  return sorted(k.shape[-1] for k in kernels)[::-1][:-1]


@pytest.mark.parametrize("cvr_hidden, expected", [(None, [16, 8]), ((4,), [4]), ((), [])])
def test_the_cvr_towers_have_their_own_widths(tiny_data, cvr_hidden, expected):
  config = common.base_config("smoke")
  config.model.update(tower_hidden=(16, 8), cvr_tower_hidden=cvr_hidden)
  model = models.get_model(tiny_data.schema, config.model)
  towers = model.init(jax.random.key(0))["embedding"]["towers"]
  assert _hidden_widths(towers["ctr"]) == [16, 8]
  assert _hidden_widths(towers["cvr"]) == expected
  batch = next(pipeline.train_iterator(tiny_data.columns, 64, 1, seed=0))
  for phase in ("embedding", "ranking"):
    logits = models.forward(model, model.init(jax.random.key(0)), batch, phase)
    assert logits["cvr_logit"].shape == (64,)
