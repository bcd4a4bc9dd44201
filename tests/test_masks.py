import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scalable_awt import config_schema, masks, models, train


def _params():
  model = models.CNN(conv_features=(4, 8), kernel_size=(3, 3), dense_features=16)
  params, _ = models.init_model(model, jax.random.key(0), (1, 8, 8, 1))
  return params


def _kept(mask):
  return {"/".join(str(getattr(k, "key", k)) for k in path): int(np.asarray(leaf).sum())
          for path, leaf in jax.tree_util.tree_flatten_with_path(mask)[0]}


@pytest.mark.parametrize("density", [0.5, 0.087, 0.01])
def test_per_layer_topk_keeps_exact_counts(density):
  params = _params()
  mask = masks.magnitude_mask(params, density)
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    kept = int(np.asarray(_leaf_at(mask, path)).sum())
    if path[-1].key == "kernel":
      assert kept == max(1, round(density * leaf.size))
    else:
      assert kept == leaf.size  # Biases are never pruned.


def _leaf_at(tree, path):
  for entry in path:
    tree = tree[entry.key]
  return tree


def test_magnitude_mask_keeps_the_largest_weights():
  params = _params()
  mask = masks.magnitude_mask(params, 0.2)
  for p, m in zip(jax.tree.leaves(params), jax.tree.leaves(mask)):
    if m.min() == 0:
      assert jnp.abs(p)[m == 1].min() >= jnp.abs(p)[m == 0].max()


def test_global_topk_keeps_exact_total():
  params = _params()
  mask = masks.topk_mask(jax.tree.map(jnp.abs, params), 0.1, distribution="global")
  report = masks.density_report(mask)
  assert report["kept_prunable"] == round(0.1 * report["total_prunable"])
  # One threshold: every kept weight is at least as large as every pruned one.
  kept, pruned = [], []
  for p, m, flag in zip(jax.tree.leaves(params), jax.tree.leaves(mask),
                        jax.tree.leaves(masks.prunable_tree(params))):
    if flag:
      kept.append(jnp.abs(p)[m == 1])
      pruned.append(jnp.abs(p)[m == 0])
  assert jnp.concatenate(kept).min() >= jnp.concatenate(pruned).max()


def test_erk_densities_reach_the_overall_density():
  params = _params()
  densities = masks.erk_densities(params, 0.1)
  prunable = masks.prunable_tree(params)
  kept = sum(d * p.size for d, p, f in zip(jax.tree.leaves(densities), jax.tree.leaves(params),
                                           jax.tree.leaves(prunable)) if f)
  total = sum(p.size for p, f in zip(jax.tree.leaves(params), jax.tree.leaves(prunable)) if f)
  assert kept / total == pytest.approx(0.1, rel=1e-6)
  # Small layers are kept denser than large ones.
  assert densities["Conv_0"]["kernel"] > densities["Dense_0"]["kernel"]
  mask = masks.topk_mask(jax.tree.map(jnp.abs, params), 0.1, distribution="erk")
  assert masks.density_report(mask)["density_prunable"] == pytest.approx(0.1, abs=0.01)


def _lenet_300_100_shapes():
  # Shapes only (the densities do not look at values), in a scrambled key order.
  return {"Dense_2": {"kernel": jnp.zeros((100, 10)), "bias": jnp.zeros((10,))},
          "Dense_0": {"kernel": jnp.zeros((784, 300)), "bias": jnp.zeros((300,))},
          "Dense_1": {"kernel": jnp.zeros((300, 100)), "bias": jnp.zeros((100,))}}


@pytest.mark.parametrize("rounds", [3, 8, 11, 15, 18])
def test_lth_densities_are_lottery_ticket_rounds(rounds):
  # After n rounds of 20% (output layer 10%) the hidden layers keep 0.8^n and
  # the output layer 0.9^n; given that overall density, the rounds come back.
  params = _lenet_300_100_shapes()
  hidden, output = 0.8 ** rounds, 0.9 ** rounds
  density = (hidden * (784 * 300 + 300 * 100) + output * 100 * 10) / 266_200
  densities = masks.lth_densities(params, density)
  assert densities["Dense_0"]["kernel"] == pytest.approx(hidden, rel=1e-9)
  assert densities["Dense_1"]["kernel"] == pytest.approx(hidden, rel=1e-9)
  assert densities["Dense_2"]["kernel"] == pytest.approx(output, rel=1e-9)
  assert densities["Dense_0"]["bias"] == 1.0
  # The paper's Table 1 densities are these rounds to 0.1% (Frankle & Carbin
  # print 1.9% for n = 18 as here; the paper prints 1.8%).
  assert round(100 * density, 1) == {3: 51.3, 8: 16.9, 11: 8.7, 15: 3.6, 18: 1.9}[rounds]


def test_lth_masks_reach_the_density_with_a_denser_output_layer():
  params = _params()
  mask = masks.topk_mask(jax.tree.map(jnp.abs, params), 0.05, distribution="lth")
  report = masks.density_report(mask)
  assert report["density_prunable"] == pytest.approx(0.05, abs=0.002)
  per_layer = report["per_layer"]
  assert per_layer["Dense_1/kernel"] > per_layer["Dense_0/kernel"]
  assert per_layer["Conv_0/kernel"] == pytest.approx(per_layer["Dense_0/kernel"], abs=0.02)


def test_output_layer_is_last_in_natural_order():
  params = {f"Dense_{i}": {"kernel": jnp.zeros((2, 2)), "bias": jnp.zeros((2,))}
            for i in (0, 2, 10, 9)}
  assert masks.output_layer(params) == "Dense_10/kernel"  # Not "Dense_9".
  assert masks.output_layer(_params()) == "Dense_1/kernel"  # After the convs.
  with pytest.raises(ValueError, match="no prunable leaves"):
    masks.output_layer({"bias": jnp.zeros(3)})
  with pytest.raises(ValueError, match="prune_rate=1.5"):
    masks.lth_densities(_params(), 0.1, prune_rate=1.5)


def test_random_mask_has_same_counts_and_differs_by_key():
  params = _params()
  magnitude = masks.magnitude_mask(params, 0.3)
  first = masks.random_mask(jax.random.key(1), params, 0.3)
  second = masks.random_mask(jax.random.key(2), params, 0.3)
  assert _kept(first) == _kept(magnitude) == _kept(second)
  assert any(bool(jnp.any(a != b)) for a, b in zip(jax.tree.leaves(first),
                                                   jax.tree.leaves(second)))


@pytest.mark.parametrize("distribution", ["uniform", "erk", "global", "lth"])
def test_random_and_magnitude_masks_follow_the_distribution(distribution):
  params = _params()
  magnitude = masks.magnitude_mask(params, 0.1, distribution=distribution)
  expected = masks.topk_mask(jax.tree.map(jnp.abs, params), 0.1, distribution=distribution)
  assert all(bool(jnp.all(a == b)) for a, b in zip(jax.tree.leaves(magnitude),
                                                   jax.tree.leaves(expected)))
  random = masks.random_mask(jax.random.key(3), params, 0.1, distribution=distribution)
  if distribution == "global":  # One count overall; layers vary with the draw.
    assert masks.density_report(random)["density_prunable"] == pytest.approx(
        masks.density_report(magnitude)["density_prunable"])
  else:  # Exactly the magnitude mask's count in every layer.
    assert _kept(random) == _kept(magnitude)
  if distribution == "erk":  # ERK keeps the small first conv denser than uniform.
    uniform = masks.random_mask(jax.random.key(3), params, 0.1)
    assert (masks.density_report(random)["per_layer"]["Conv_0/kernel"] >
            masks.density_report(uniform)["per_layer"]["Conv_0/kernel"])
  # The runner's baselines read the distribution from the config.
  config = config_schema.get_config()
  config.search.density = 0.1
  config.search.mask_distribution = distribution
  for method, want in (("random", random), ("magnitude", magnitude)):
    got = train.MASK_FNS[method](config, params, jax.random.key(3), context=None)
    assert all(bool(jnp.all(a == b)) for a, b in zip(jax.tree.leaves(got),
                                                     jax.tree.leaves(want)))


def test_density_report_over_prunable_and_all():
  params = {"dense": {"kernel": jnp.ones((10, 10)), "bias": jnp.ones((10,))}}
  mask = masks.magnitude_mask(params, 0.25)
  report = masks.density_report(mask)
  assert report["density_prunable"] == 0.25
  assert report["density_all"] == pytest.approx((25 + 10) / 110)
  assert report["per_layer"] == {"dense/kernel": 0.25}


@pytest.mark.parametrize("density", [0.0, -0.1, 1.5])
def test_density_outside_unit_interval_is_rejected(density):
  with pytest.raises(ValueError, match=f"density={float(density)} is outside"):
    masks.magnitude_mask(_params(), density)


def test_snip_scores_and_apply_mask():
  params = {"w": jnp.array([1.0, -2.0, 0.5])}
  x = jnp.array([3.0, 1.0, -4.0])
  scores = masks.snip_scores(lambda p: jnp.sum(p["w"] * x), params)
  np.testing.assert_allclose(scores["w"], jnp.abs(params["w"] * x))
  mask = {"w": jnp.array([1.0, 0.0, 1.0])}
  np.testing.assert_allclose(masks.apply_mask(params, mask)["w"], [1.0, 0.0, 0.5])
  assert masks.apply_mask(params, None) is params
