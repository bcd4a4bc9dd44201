import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from scalable_awt import estimators, masks, models
from scalable_awt import ticket_search as ts
from scalable_awt.kernels import exact_mtk


def _problem(seed=0, batch=32):
  model = models.MLP(features=(16,), num_classes=4)
  params, state = models.init_model(model, jax.random.key(seed), (1, 12))
  apply_fn = models.make_apply_fn(model, state)
  rng = np.random.default_rng(seed)
  images = rng.uniform(size=(8, batch, 12)).astype(np.float32)
  labels = rng.integers(0, 4, size=(8, batch)).astype(np.int32)
  batches = [{"image": jnp.asarray(i), "label": jnp.asarray(l)} for i, l in zip(images, labels)]
  return apply_fn, params, batches


def _run(apply_fn, params, batches, settings, steps, lr=1e-2):
  tx = optax.adam(lr)
  state = ts.init_search_state(params, tx, settings)
  step = jax.jit(ts.make_search_step(apply_fn, tx, settings))
  for i in range(steps):
    state, metrics = step(state, batches[i % len(batches)], jax.random.key(i))
  return state, metrics


def _exact_distance(apply_fn, params, state, batch, settings):
  x = batch["image"][: settings.kernel_batch]
  return float(estimators.kernel_distance(
      "exact", apply_fn, params, state.student_params, state.mask, x, x, x,
      key=jax.random.key(0)))


# output_probes in chunks of 4 probes: the search passes the option through.
@pytest.mark.parametrize("estimator,chunk_size", [
    ("exact", 0), ("output_probes", 4), ("random_projection", 0)])
def test_search_reduces_the_kernel_distance(estimator, chunk_size):
  apply_fn, params, batches = _problem()
  settings = ts.SearchSettings(density=0.2, estimator=estimator, num_samples=16,
                               estimator_chunk_size=chunk_size,
                               kernel_weight=1.0, l2_weight=0.0, kernel_batch=8,
                               mask_update_period=1000, total_steps=40, epsilon=0.0)
  initial = ts.init_search_state(params, optax.adam(1e-2), settings)
  before = _exact_distance(apply_fn, params, initial, batches[0], settings)
  state, _ = _run(apply_fn, params, batches, settings, steps=40)
  after = _exact_distance(apply_fn, params, state, batches[0], settings)
  assert after < 0.7 * before, (before, after)


def test_epsilon_zero_is_neural_tangent_transfer():
  """With ε = 0 one search step equals one Adam step on the NTT loss, written out here."""
  apply_fn, params, batches = _problem()
  settings = ts.SearchSettings(density=0.3, estimator="exact", kernel_weight=1e-3,
                               l2_weight=1e-4, kernel_batch=8, epsilon=0.0)
  tx = optax.adam(5e-4)
  state = ts.init_search_state(params, tx, settings)
  new_state, metrics = jax.jit(ts.make_search_step(apply_fn, tx, settings))(
      state, batches[0], jax.random.key(0))

  x = batches[0]["image"]
  mask = masks.magnitude_mask(params, 0.3)
  teacher_kernel = exact_mtk(apply_fn, params, x[:8], x[:8])

  def ntt_loss(student):
    sparse = lambda p, inputs: apply_fn(masks.apply_mask(p, mask), inputs)
    target = jnp.mean((apply_fn(params, x) - sparse(student, x)) ** 2)
    kernel = jnp.mean((teacher_kernel - exact_mtk(sparse, student, x[:8], x[:8])) ** 2)
    kept = masks.apply_mask(student, mask)
    l2 = sum(jnp.sum(kept[name]["kernel"] ** 2) for name in kept)
    return target + 1e-3 * kernel + 1e-4 / 0.3 * l2

  grads = jax.grad(ntt_loss)(params)
  updates, _ = tx.update(grads, tx.init(params), params)
  expected = optax.apply_updates(params, updates)
  for a, b in zip(jax.tree.leaves(new_state.student_params), jax.tree.leaves(expected)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  assert float(metrics["loss"]) == pytest.approx(float(ntt_loss(params)), rel=1e-5)


def test_mask_updates_keep_the_density_and_follow_the_schedule():
  apply_fn, params, batches = _problem()
  settings = ts.SearchSettings(density=0.1, estimator="diagonal", kernel_batch=8,
                               mask_update_period=2, density_schedule="cubic",
                               prune_until_fraction=0.5, total_steps=8, epsilon=0.05,
                               attack_step_size=0.02, attack_steps=2)
  assert float(ts.density_at(0, settings)) == pytest.approx(1.0)
  assert float(ts.density_at(4, settings)) == pytest.approx(0.1)
  assert float(ts.density_at(2, settings)) == pytest.approx(0.1 + 0.9 * 0.125)
  state, _ = _run(apply_fn, params, batches, settings, steps=8)
  report = masks.density_report(state.mask)
  total = report["total_prunable"]
  per_layer_counts = [round(0.1 * p.size) for p, f in zip(
      jax.tree.leaves(params), jax.tree.leaves(masks.prunable_tree(params))) if f]
  assert report["kept_prunable"] == sum(per_layer_counts) and total > 0
  final = ts.final_mask(state, settings)
  assert masks.density_report(final)["kept_prunable"] == sum(per_layer_counts)


def test_pruned_weights_keep_their_values_and_may_return():
  """The student's pruned weights are not zeroed: the mask is recomputed from all weights."""
  apply_fn, params, batches = _problem()
  settings = ts.SearchSettings(density=0.2, estimator="exact", kernel_weight=1.0,
                               kernel_batch=8, mask_update_period=5, total_steps=20)
  state, _ = _run(apply_fn, params, batches, settings, steps=20, lr=5e-2)
  pruned_nonzero = [jnp.any((m == 0) & (p != 0))
                    for p, m in zip(jax.tree.leaves(state.student_params),
                                    jax.tree.leaves(state.mask))]
  assert any(bool(v) for v in pruned_nonzero)
  initial_mask = masks.magnitude_mask(params, 0.2)
  assert any(bool(jnp.any(a != b)) for a, b in zip(jax.tree.leaves(initial_mask),
                                                   jax.tree.leaves(state.mask)))


def test_bad_settings_are_rejected():
  with pytest.raises(ValueError, match="search.estimator='fast'"):
    ts.SearchSettings(density=0.1, estimator="fast")
  with pytest.raises(ValueError, match="density=1.5"):
    ts.SearchSettings(density=1.5)
  with pytest.raises(ValueError, match="attack.epsilon=-0.1"):
    ts.SearchSettings(density=0.1, epsilon=-0.1)
  with pytest.raises(ValueError, match="estimator_chunk_size=2 applies to"):
    ts.SearchSettings(density=0.1, estimator="exact", estimator_chunk_size=2)


# --- cost levers: kernel_period, teacher cache ------------------------------

def _indexed(batches):
  """The batches with "index": batch i holds examples i*B .. (i+1)*B - 1."""
  size = batches[0]["label"].shape[0]
  return [dict(b, index=jnp.arange(i * size, (i + 1) * size, dtype=jnp.int32))
          for i, b in enumerate(batches)]


def _assert_trees_close(a, b, rtol=1e-5, atol=1e-7):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def test_kernel_period_computes_the_kernel_term_on_every_nth_step_only():
  """Period 3: steps 0 and 3 are the period-1 update, steps 1, 2, 4 the update without it."""
  apply_fn, params, batches = _problem()
  common = dict(density=0.2, estimator="exact", kernel_batch=8, l2_weight=1e-4,
                mask_update_period=1000, epsilon=0.05, attack_step_size=0.02,
                attack_steps=2)
  tx = optax.adam(1e-2)
  every = ts.SearchSettings(kernel_weight=1.0, **common)
  periodic = ts.SearchSettings(kernel_weight=1.0, kernel_period=3, **common)
  without = ts.SearchSettings(kernel_weight=0.0, **common)
  steps = {name: jax.jit(ts.make_search_step(apply_fn, tx, s))
           for name, s in (("every", every), ("periodic", periodic), ("without", without))}
  state = ts.init_search_state(params, tx, every)
  # A student away from θ₀, so that the kernel term has a gradient.
  state, _ = steps["every"](state, batches[1], jax.random.key(9))
  for s in range(5):
    at = state.replace(step=jnp.asarray(s, jnp.int32))
    key = jax.random.key(100 + s)
    new, metrics = steps["periodic"](at, batches[0], key)
    if s % 3 == 0:
      expected, expected_metrics = steps["every"](at, batches[0], key)
      assert float(metrics["kernel_computed"]) == 1.0
      assert float(metrics["kernel_distance"]) > 0
    else:
      expected, expected_metrics = steps["without"](at, batches[0], key)
      assert float(metrics["kernel_computed"]) == 0.0
      assert float(metrics["kernel_distance"]) == 0.0
    np.testing.assert_allclose(metrics["loss"], expected_metrics["loss"], rtol=1e-6)
    _assert_trees_close(new.student_params, expected.student_params)
  # The two references differ, so the comparison above can tell them apart.
  on, _ = steps["every"](state, batches[0], jax.random.key(0))
  off, _ = steps["without"](state, batches[0], jax.random.key(0))
  assert any(not np.allclose(a, b, rtol=1e-5, atol=1e-7) for a, b in zip(
      jax.tree.leaves(on.student_params), jax.tree.leaves(off.student_params)))


def test_cached_step_equals_the_uncached_step_with_a_deterministic_teacher():
  """float32 cache: the same states as `make_search_step`; the third step hits the cache."""
  from scalable_awt import teacher_cache
  apply_fn, params, batches = _problem()
  batches = _indexed(batches)
  settings = ts.SearchSettings(density=0.2, estimator="output_probes", num_samples=4,
                               kernel_weight=1.0, kernel_batch=8, kernel_period=2,
                               epsilon=0.1, attack_step_size=0.03, attack_steps=3,
                               teacher_cache=True)
  tx = optax.adam(1e-2)
  uncached = jax.jit(ts.make_search_step(apply_fn, tx, settings))
  cached = teacher_cache.make_cached_search_step(
      apply_fn, tx, settings, num_examples=8 * 32, cache_dtype="float32")
  state_a = state_b = ts.init_search_state(params, tx, settings)
  hits = []
  for i, batch in enumerate([batches[0], batches[1], batches[0]]):
    key = jax.random.key(i)
    state_a, _ = uncached(state_a, batch, key)
    state_b, metrics = cached(state_b, batch, key)
    hits.append(float(metrics["teacher_cache_hits"]))
  assert hits == [0.0, 0.0, 1.0]
  assert cached.cache.size == 64
  _assert_trees_close(state_a.student_params, state_b.student_params, rtol=1e-5, atol=1e-6)
  for a, b in zip(jax.tree.leaves(state_a.mask), jax.tree.leaves(state_b.mask)):
    np.testing.assert_array_equal(a, b)


def test_deterministic_teacher_ignores_the_key():
  apply_fn, params, batches = _problem()
  settings = ts.SearchSettings(density=0.2, epsilon=0.1, attack_step_size=0.03,
                               attack_steps=3, teacher_cache=True)
  teacher_fn = jax.jit(ts.make_teacher_fn(apply_fn, settings))
  x, y = batches[0]["image"], batches[0]["label"]
  a = teacher_fn(params, x, y, jax.random.key(0))
  b = teacher_fn(params, x, y, jax.random.key(1))
  np.testing.assert_array_equal(a["x_adv"], b["x_adv"])
  assert float(jnp.max(jnp.abs(a["x_adv"] - x))) > 0  # It did attack.
  random_start = jax.jit(ts.make_teacher_fn(apply_fn, dataclasses.replace(
      settings, teacher_cache=False)))
  c = random_start(params, x, y, jax.random.key(0))
  d = random_start(params, x, y, jax.random.key(1))
  assert not np.array_equal(c["x_adv"], d["x_adv"])


def test_cache_respects_its_byte_bound_and_recomputes_the_rest():
  from scalable_awt import teacher_cache
  apply_fn, params, batches = _problem()
  batches = _indexed(batches)
  # 12 inputs + 4 outputs in float16: 32 bytes an example; room for 40 of 64.
  per_example = (12 + 4) * 2
  settings = ts.SearchSettings(density=0.2, estimator="exact", kernel_batch=8,
                               epsilon=0.1, attack_step_size=0.03, attack_steps=3,
                               teacher_cache=True,
                               teacher_cache_gb=(40 * per_example + 31) / teacher_cache.GIB)
  tx = optax.adam(1e-3)
  step = teacher_cache.make_cached_search_step(apply_fn, tx, settings, num_examples=8 * 32)
  state = ts.init_search_state(params, tx, settings)
  hits = []
  for batch in [batches[0], batches[1], batches[0], batches[1]]:
    state, metrics = step(state, batch, jax.random.key(0))
    hits.append(float(metrics["teacher_cache_hits"]))
  cache = step.cache
  assert cache.capacity == 40 and cache.size == 40
  assert cache.nbytes == 40 * per_example <= settings.teacher_cache_gb * teacher_cache.GIB
  assert hits == [0.0, 0.0, 1.0, 8 / 32]
  # float16 storage: within half an ulp of the float32 teacher (2^-11 relative).
  x, y, index = batches[0]["image"], batches[0]["label"], batches[0]["index"]
  exact = jax.jit(ts.make_teacher_fn(apply_fn, settings))(params, x, y, jax.random.key(0))
  hit, x_adv, outputs = cache.lookup(np.asarray(index))
  assert hit.all()
  np.testing.assert_allclose(x_adv, exact["x_adv"], rtol=2.0**-11, atol=1e-7)
  np.testing.assert_allclose(outputs, exact["outputs"], rtol=2.0**-11, atol=1e-7)
  with pytest.raises(IndexError):
    cache.lookup(np.array([8 * 32]))


def test_cached_step_needs_the_deterministic_teacher():
  from scalable_awt import teacher_cache
  apply_fn, params, _ = _problem()
  with pytest.raises(ValueError, match="teacher_cache=True"):
    teacher_cache.make_cached_search_step(apply_fn, optax.adam(1e-3),
                                          ts.SearchSettings(density=0.2), num_examples=10)


def test_new_settings_are_validated():
  with pytest.raises(ValueError, match="kernel_period=0"):
    ts.SearchSettings(density=0.1, kernel_period=0)
  with pytest.raises(ValueError, match="precision='float16'"):
    ts.SearchSettings(density=0.1, precision="float16")
  with pytest.raises(ValueError, match="teacher_cache_gb=-1"):
    ts.SearchSettings(density=0.1, teacher_cache_gb=-1)
