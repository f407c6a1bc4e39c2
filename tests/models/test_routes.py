"""scene_route 'auto': the fastest route measured once, cached, and a fixed route wins."""

import json

import jax
import numpy as np
import pytest

from mtms_jax.models import kernels, layers, routes, star

BATCH = routes.MIN_MEASURED_BATCH
WIDTHS = (40, 32, 1)     # too wide for 'gather': 3 candidates to compile, not 4


@pytest.fixture
def cache(tmp_path, monkeypatch):
  """An empty cache of this test's own, and no choice remembered from earlier tests."""
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
  monkeypatch.setattr(routes, "_CHOSEN", {})
  return tmp_path / "mtms_jax" / "scene_routes.json"


def _apply(route="auto", batch=BATCH):
  """The layer traced and run as the train loop runs its step: inputs on the device, host
  to device transfers refused (train/loop.py), which the measurement must not trip."""
  mlp = layers.SceneMLP(2, WIDTHS[1:], route=route)
  x = np.ones((batch, WIDTHS[0]), np.float32)
  scene = np.arange(batch, dtype=np.int32) % 2
  params = mlp.init(jax.random.key(0), x[:1], scene[:1])
  x, scene = jax.device_put((x, scene))
  with jax.transfer_guard("disallow"):
    return jax.jit(mlp.apply)(params, x, scene)


def _taken():
  return {k: v for k, v in routes.TAKEN.items() if f"x {list(WIDTHS)}, batch" in k}


def _no_measuring(monkeypatch):
  def fail(programs):
    raise AssertionError(f"measured {list(programs)}")
  monkeypatch.setattr(routes, "time_candidates", fail)


def test_auto_measures_once_then_reads_the_cache(cache, monkeypatch):
  routes.TAKEN.clear()
  _apply()
  entries = json.loads(cache.read_text())
  (key, entry), = entries.items()
  layer, = _taken()
  candidates = key.rsplit(" | ", 1)[1].split(",")
  assert key == routes.cache_key(layer.split(": ", 1)[1], candidates)
  assert sorted(candidates) == sorted(entry["ms"]) and len(candidates) > 1
  rule = "kernel" if kernels.available() else "all"
  assert entry["route"] == routes.pick(entry["ms"], rule)
  assert set(_taken().values()) == {entry["route"]}
  # Another process (no choice remembered) reads the file, whatever it says, and measures
  # nothing.
  other = next(r for r in entry["ms"] if r != entry["route"])
  cache.write_text(json.dumps({key: {"route": other}}))
  monkeypatch.setattr(routes, "_CHOSEN", {})
  _no_measuring(monkeypatch)
  _apply()
  assert set(_taken().values()) == {other}


def test_a_corrupt_cache_is_measured_again_and_replaced(cache):
  cache.parent.mkdir(parents=True)
  cache.write_text('{"truncated": ')
  _apply()
  assert [e["route"] for e in json.loads(cache.read_text()).values()] == list(
      set(_taken().values()))


def test_a_fixed_route_and_small_batches_measure_nothing(cache, monkeypatch):
  _no_measuring(monkeypatch)
  routes.TAKEN.clear()
  _apply(route="grouped")
  assert set(_taken().values()) == {"grouped"}
  routes.TAKEN.clear()
  _apply(batch=BATCH // 2)
  assert set(_taken().values()) <= {"kernel", "all"}      # the rule of thumb, unmeasured
  assert not cache.exists()


def test_the_cache_lives_under_xdg_cache_home(monkeypatch, tmp_path):
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
  assert routes.cache_path() == tmp_path / "mtms_jax" / "scene_routes.json"
  monkeypatch.delenv("XDG_CACHE_HOME")
  assert str(routes.cache_path()).endswith(".cache/mtms_jax/scene_routes.json")


def test_a_lead_within_the_margin_keeps_the_rule_of_thumbs_route():
  assert routes.pick({"kernel": 1.0, "all": 0.95, "grouped": 0.99}, "kernel") == "kernel"
  assert routes.pick({"kernel": 1.0, "all": 0.8, "grouped": 0.85}, "kernel") == "all"
  assert routes.pick({"kernel": 0.5, "all": 1.0}, "all") == "kernel"


def test_the_cache_key_tells_xla_flags_apart(monkeypatch):
  # --xla_cpu_max_isa=AVX2 makes XLA compile as for an AVX2-only CPU: a choice measured
  # without it must not be read back with it.
  monkeypatch.setenv("XLA_FLAGS", "")
  plain = routes.cache_key("2 scenes x [40, 32, 1], batch 1024", ("all", "grouped"))
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_max_isa=AVX2")
  assert routes.cache_key("2 scenes x [40, 32, 1], batch 1024", ("all", "grouped")) != plain


def test_auto_measures_a_subclass_with_parameters_of_its_own(cache):
  """STAR's layers (shared kernel (I, H) times the scene's (S, I, H)) are timed with their
  own parameters, not SceneMLP's."""
  routes.TAKEN.clear()
  mlp = star.StarMLP(2, WIDTHS[1:], route="auto")
  x = np.ones((BATCH, WIDTHS[0]), np.float32)
  scene = np.arange(BATCH, dtype=np.int32) % 2
  params = mlp.init(jax.random.key(0), x[:1], scene[:1])
  jax.jit(mlp.apply)(params, x, scene)
  (key, entry), = json.loads(cache.read_text()).items()
  assert len(entry["ms"]) > 1 and set(_taken().values()) == {entry["route"]}
