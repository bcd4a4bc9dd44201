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
