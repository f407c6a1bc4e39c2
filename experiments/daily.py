r"""The paper's daily protocol: for each test day T, train on days [T-3, T-1] starting from
day T-1's embeddings, then test on day T (Sec. IV, "Training and Testing").

  make experiment NAME=daily

Synthetic data over 8 days of 200k rows (ad biases drift from day to day); test days 3 to 7,
window 3. Day T trains in checkpoints/daily/day<T>/ with init_from = day T-1's run: its
embeddings are loaded and its ranking network starts fresh (config.init_load); day 3 starts
fresh (or from config.init_from, e.g. a model pre-trained on older days). train_days and
test_day are set per day from config.daily. results.json holds 'day<T>/test/<scene>/<task>/
<metric>' for every day plus the last day's keys without the prefix; metrics_over_days.png
plots the test AUC of each task per day beside the oracle's. A rerun skips finished days and
resumes the unfinished one from its checkpoint.
"""

import ml_collections

from experiments import common


def get_config(arg=None):
  config = common.base_config(arg)
  config.daily = ml_collections.ConfigDict({"first_test_day": 3, "last_test_day": 7,
                                            "window": 3})
  config.data.kwargs.update(num_days=8, rows_per_day=200_000)
  if "smoke" in common.parse_arg(arg):
    config.data.kwargs.update(num_days=4, rows_per_day=2000)
    config.daily.update(first_test_day=2, last_test_day=3, window=2)
  return config
