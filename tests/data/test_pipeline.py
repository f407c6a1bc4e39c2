import numpy as np
import pytest

from mtms_jax.data import pipeline


def _columns(n=10):
  return {"scene": np.zeros(n, np.int32), "x": np.arange(n)}


def test_each_epoch_is_a_seeded_permutation():
  it = pipeline.train_iterator(_columns(), batch_size=3, num_batches=9, seed=7)
  batches = [next(it)["x"] for _ in range(9)]
  epochs = [np.concatenate(batches[i:i + 3]) for i in (0, 3, 6)]    # 3 full batches per epoch
  for e in epochs:
    assert len(set(e.tolist())) == 9                                # no row twice in an epoch
  assert not np.array_equal(epochs[0], epochs[1])                   # reshuffled each epoch
  again = pipeline.train_iterator(_columns(), batch_size=3, num_batches=9, seed=7)
  np.testing.assert_array_equal(next(again)["x"], batches[0])


def test_iterator_state_restores_exactly():
  it = pipeline.train_iterator(_columns(), batch_size=3, num_batches=9, seed=1)
  for _ in range(4):
    next(it)
  state = it.get_state()
  rest = [next(it)["x"] for _ in range(5)]
  resumed = pipeline.train_iterator(_columns(), batch_size=3, num_batches=9, seed=1)
  resumed.set_state(state)
  for expected in rest:
    np.testing.assert_array_equal(next(resumed)["x"], expected)


def test_eval_batches_cover_rows_once_with_padding():
  seen = []
  for batch, n in pipeline.eval_batches(_columns(10), batch_size=4):
    assert batch["x"].shape == (4,)
    seen.extend(batch["x"][:n].tolist())
  assert seen == list(range(10))


def test_too_few_rows_is_a_clear_error():
  with pytest.raises(ValueError, match="fewer than one batch"):
    pipeline.train_iterator(_columns(5), batch_size=8, num_batches=1, seed=0, name="day 3")


def test_an_iterator_can_start_at_any_batch_of_the_sequence(tiny_data):
  whole = pipeline.train_iterator(tiny_data.columns, 64, 300, seed=5)
  batches = [next(whole)["ids"] for _ in range(300)]
  later = pipeline.train_iterator(tiny_data.columns, 64, 20, seed=5, first_batch=270)
  for expected in batches[270:290]:                  # across an epoch's end (187 batches)
    np.testing.assert_array_equal(next(later)["ids"], expected)
