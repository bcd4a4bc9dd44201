"""PGD adversarial training: masks stay exactly zero, batch norm trains,
ε = 0 is natural training, sharded jit matches one device, and adversarial
training actually buys robustness on a tiny problem."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from adv_toys import digits_data, train_digits_mlp
from scalable_awt import adversarial_training as at
from scalable_awt import attacks, masks, models


def _batch(n=256, seed=0):
  (x, y), _ = digits_data()
  idx = np.random.RandomState(seed).choice(len(x), n, replace=False)
  return {"image": jnp.asarray(x[idx]), "label": jnp.asarray(y[idx])}


def _mlp():
  model = models.MLP(features=(32,), num_classes=10)
  params, state = models.init_model(model, jax.random.key(0), (1, 64))
  return model, params, state


class _BNNet(nn.Module):
  """Tiny conv + batch norm network on 8x8x1 inputs."""

  @nn.compact
  def __call__(self, x, train=False):
    x = nn.Conv(4, (3, 3), use_bias=False)(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    x = nn.relu(x)
    return nn.Dense(10)(x.reshape((x.shape[0], -1)))


def _zeros_where_pruned(tree, mask):
  return all(bool(jnp.all(jnp.where(m == 0, t, 0.0) == 0.0))
             for t, m in zip(jax.tree.leaves(tree), jax.tree.leaves(mask)))


@pytest.mark.parametrize("opt", [
    dict(name="adam", weight_decay=1e-2),
    dict(name="sgd", weight_decay=5e-4, momentum=0.9),
])
def test_pruned_weights_and_optimizer_state_stay_exactly_zero(opt):
  model, params, state = _mlp()
  mask = masks.random_mask(jax.random.key(1), params, 0.2)
  tx = at.make_optimizer(learning_rate=1e-2, total_steps=30,
                         schedule="cosine", warmup_steps=5, **opt)
  ts = at.create_train_state(params, state, tx, mask=mask)
  assert _zeros_where_pruned(ts.params, mask)
  step = jax.jit(at.make_train_step(model, tx, epsilon=0.1, step_size=0.04,
                                    num_steps=3))
  before = ts.params
  for i in range(30):
    ts, metrics = step(ts, _batch(seed=i), jax.random.key(i))
  assert int(ts.step) == 30
  assert np.isfinite(float(metrics["loss"]))
  assert _zeros_where_pruned(ts.params, mask)
  # Kept weights did move.
  kernel = ts.params["Dense_0"]["kernel"]
  kept = mask["Dense_0"]["kernel"] == 1
  assert float(jnp.abs(kernel - before["Dense_0"]["kernel"])[kept].mean()) > 1e-3
  # Every params-like tree in the optimizer state (Adam's mu and nu, SGD's
  # momentum) is exactly zero at pruned entries.
  like_params = lambda t: (isinstance(t, dict) and
                           jax.tree.structure(t) == jax.tree.structure(mask))
  trees = [t for t in jax.tree.leaves(ts.opt_state, is_leaf=like_params)
           if like_params(t)]
  assert len(trees) == (2 if opt["name"] == "adam" else 1)
  for tree in trees:
    assert _zeros_where_pruned(tree, mask)
  density = masks.density_report(mask)["density_prunable"]
  assert abs(density - 0.2) < 0.01


def test_adam_moments_of_pruned_entries_are_zero():
  model, params, state = _mlp()
  mask = masks.random_mask(jax.random.key(2), params, 0.1)
  tx = at.make_optimizer(name="adam", learning_rate=1e-2, total_steps=20,
                         weight_decay=0.1)
  ts = at.create_train_state(params, state, tx, mask=mask)
  step = jax.jit(at.make_train_step(model, tx, epsilon=0.1, step_size=0.04,
                                    num_steps=2))
  for i in range(20):
    ts, _ = step(ts, _batch(seed=i), jax.random.key(i))
  adam = [s for s in jax.tree.leaves(
      ts.opt_state, is_leaf=lambda s: isinstance(s, optax.ScaleByAdamState))
          if isinstance(s, optax.ScaleByAdamState)]
  assert len(adam) == 1
  assert _zeros_where_pruned(adam[0].mu, mask)
  assert _zeros_where_pruned(adam[0].nu, mask)
  kept = mask["Dense_1"]["kernel"] == 1
  assert float(jnp.abs(adam[0].nu["Dense_1"]["kernel"])[kept].min()) >= 0
  assert float(jnp.abs(adam[0].mu["Dense_1"]["kernel"])[kept].max()) > 0


def test_model_with_batch_stats_trains():
  model = _BNNet()
  params, state = models.init_model(model, jax.random.key(0), (1, 8, 8, 1))
  assert "batch_stats" in state
  tx = at.make_optimizer(name="adam", learning_rate=1e-2, total_steps=30)
  mask = masks.magnitude_mask(params, 0.5)
  ts = at.create_train_state(params, state, tx, mask=mask)
  step = jax.jit(at.make_train_step(model, tx, epsilon=0.1, step_size=0.04,
                                    num_steps=3))
  losses = []
  for i in range(30):
    b = _batch(n=128, seed=i)
    b = {"image": b["image"].reshape((-1, 8, 8, 1)), "label": b["label"]}
    ts, metrics = step(ts, b, jax.random.key(i))
    losses.append(float(metrics["loss"]))
  assert np.all(np.isfinite(losses))
  assert np.mean(losses[-5:]) < np.mean(losses[:5])
  mean = ts.model_state["batch_stats"]["BatchNorm_0"]["mean"]
  assert float(jnp.abs(mean).max()) > 0  # Running averages were updated.
  assert _zeros_where_pruned(ts.params, mask)
  assert set(metrics) >= {"loss", "adv_accuracy", "clean_accuracy",
                          "grad_norm"}


def test_epsilon_zero_is_natural_training():
  model, params, state = _mlp()
  tx = at.make_optimizer(name="adam", learning_rate=1e-2, total_steps=10)
  step = jax.jit(at.make_train_step(model, tx, epsilon=0.0, step_size=0.0,
                                    num_steps=0))
  ts = at.create_train_state(params, state, tx)

  def natural_loss(p, b):
    logits = model.apply({"params": p}, b["image"], train=True)
    return optax.softmax_cross_entropy_with_integer_labels(
        logits, b["label"]).mean()

  p_ref, o_ref = params, tx.init(params)
  for i in range(10):
    b = _batch(seed=i)
    # A different key every step: ε = 0 must not use it.
    ts, metrics = step(ts, b, jax.random.key(100 + i))
    loss, g = jax.value_and_grad(natural_loss)(p_ref, b)
    u, o_ref = tx.update(g, o_ref, p_ref)
    p_ref = optax.apply_updates(p_ref, u)
    np.testing.assert_allclose(float(metrics["loss"]), float(loss), rtol=1e-5)
  for a, b in zip(jax.tree.leaves(ts.params), jax.tree.leaves(p_ref)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
  # Natural training: the train-mode accuracy is the clean accuracy here.
  np.testing.assert_allclose(float(metrics["adv_accuracy"]),
                             float(metrics["clean_accuracy"]))


def test_training_on_pgd_examples_uses_the_attack():
  """The loss is the CE at the (last-iterate) PGD points of the inference model."""
  model, params, state = _mlp()
  tx = at.make_optimizer(name="sgd", learning_rate=0.1, total_steps=1,
                         momentum=0.0)
  ts = at.create_train_state(params, state, tx)
  kw = dict(epsilon=0.1, step_size=0.04, num_steps=3)
  step = jax.jit(at.make_train_step(model, tx, **kw))
  b, key = _batch(), jax.random.key(5)
  new_ts, metrics = step(ts, b, key)
  apply_fn = models.make_apply_fn(model, state)
  x_adv = attacks.pgd_last_iterate(apply_fn, params, b["image"], b["label"],
                                   key=key, **kw)
  loss = optax.softmax_cross_entropy_with_integer_labels(
      apply_fn(params, x_adv), b["label"]).mean()
  np.testing.assert_allclose(float(metrics["loss"]), float(loss), rtol=1e-5)
  clean = optax.softmax_cross_entropy_with_integer_labels(
      apply_fn(params, b["image"]), b["label"]).mean()
  assert float(loss) > float(clean)


def test_sharded_step_matches_single_device():
  devices = jax.devices()
  if len(devices) < 2:
    pytest.skip("needs several (simulated) devices")
  n = 8 if len(devices) >= 8 else 2
  mesh = Mesh(np.array(devices[:n]), ("data",))
  model, params, state = _mlp()
  tx = at.make_optimizer(name="adam", learning_rate=1e-2, total_steps=3)
  mask = masks.random_mask(jax.random.key(1), params, 0.3)
  ts = at.create_train_state(params, state, tx, mask=mask)
  step_fn = at.make_train_step(model, tx, epsilon=0.1, step_size=0.04,
                               num_steps=3)
  ref_ts = ts
  replicated = NamedSharding(mesh, P())
  sh_ts = jax.device_put(ts, replicated)
  data_sharding = NamedSharding(mesh, P("data"))
  single = jax.jit(step_fn)
  sharded = jax.jit(step_fn, in_shardings=(replicated, data_sharding,
                                           replicated),
                    out_shardings=(replicated, replicated))
  for i in range(3):
    b = _batch(n=64, seed=i)
    key = jax.random.key(i)
    ref_ts, ref_m = single(ref_ts, b, key)
    sh_ts, sh_m = sharded(sh_ts, jax.device_put(b, data_sharding), key)
    np.testing.assert_allclose(float(sh_m["loss"]), float(ref_m["loss"]),
                               rtol=1e-5)
  for a, b in zip(jax.tree.leaves(sh_ts.params), jax.tree.leaves(ref_ts.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
  assert _zeros_where_pruned(sh_ts.params, mask)


def test_adversarial_training_buys_robustness():
  _, (x_test, y_test) = digits_data()
  x_test, y_test = jnp.asarray(x_test), jnp.asarray(y_test)
  eps = 0.1
  accs = {}
  for name, train_eps in (("natural", 0.0), ("adversarial", eps)):
    model, ts = train_digits_mlp(epsilon=train_eps, steps=150, pgd_steps=5)
    apply_fn = models.make_apply_fn(model, ts.model_state)
    x_adv = attacks.pgd(apply_fn, ts.params, x_test, y_test,
                        key=jax.random.key(0), epsilon=eps, step_size=0.025,
                        num_steps=20)
    accs[name] = float(jnp.mean(jnp.argmax(apply_fn(ts.params, x_adv), -1)
                                == y_test))
  assert accs["adversarial"] > accs["natural"] + 0.2, accs


def test_schedules():
  lr = at.make_schedule(learning_rate=1.0, schedule="piecewise",
                        total_steps=100)
  np.testing.assert_allclose([lr(0), lr(49), lr(50), lr(74), lr(75), lr(99)],
                             [1, 1, 0.1, 0.1, 0.01, 0.01], rtol=1e-6)
  lr = at.make_schedule(learning_rate=1.0, schedule="cosine", total_steps=110,
                        warmup_steps=10)
  np.testing.assert_allclose([lr(0), lr(5), lr(10), lr(60), lr(110)],
                             [0, 0.5, 1, 0.5, 0], atol=1e-6)
  lr = at.make_schedule(learning_rate=0.3, total_steps=5)
  assert float(lr(4)) == pytest.approx(0.3)


def test_sgd_weight_decay_is_coupled_and_adam_decoupled():
  params = {"w": jnp.array([1.0, -2.0])}
  zero_grad = {"w": jnp.zeros(2)}
  for name, expected in (("sgd", [-0.01, 0.02]), ("adam", [-0.01, 0.02])):
    tx = at.make_optimizer(name=name, learning_rate=0.1, total_steps=1,
                           weight_decay=0.1, momentum=0.0 if name == "sgd"
                           else 0.9)
    u, _ = tx.update(zero_grad, tx.init(params), params)
    np.testing.assert_allclose(np.asarray(u["w"]), expected, rtol=1e-5)


def test_invalid_arguments_raise():
  model, params, state = _mlp()
  with pytest.raises(ValueError):
    at.make_optimizer(name="lamb", learning_rate=0.1, total_steps=10)
  with pytest.raises(ValueError):
    at.make_optimizer(learning_rate=0.1, schedule="linear", total_steps=10)
  with pytest.raises(ValueError):
    at.make_optimizer(learning_rate=0.1, total_steps=10, warmup_steps=20)
  with pytest.raises(ValueError):
    at.make_optimizer(learning_rate=0.1, total_steps=10, weight_decay=-1.0)
  tx = at.make_optimizer(learning_rate=0.1, total_steps=10)
  with pytest.raises(ValueError):
    at.make_train_step(model, tx, epsilon=-0.1, step_size=0.1, num_steps=1)
  with pytest.raises(ValueError):
    at.make_train_step(model, tx, epsilon=0.1, step_size=0.1, num_steps=1,
                       norm="l1")
  with pytest.raises(ValueError):
    at.make_train_step(model, tx, epsilon=0.1, step_size=0.0, num_steps=1)
  bad_mask = {"Dense_0": params["Dense_0"]}
  with pytest.raises(ValueError):
    at.create_train_state(params, state, tx, mask=bad_mask)


def test_epsilon_warmup_ramps_the_attack_linearly():
  """Step s with warm-up W is exactly a plain step at ε·min(1, (s+1)/W)."""
  model, params, state = _mlp()
  tx = at.make_optimizer(name="adam", learning_rate=1e-2, total_steps=10)
  eps, step_size, warmup = 0.2, 0.08, 4
  ramped = jax.jit(at.make_train_step(model, tx, epsilon=eps, step_size=step_size,
                                      num_steps=3, epsilon_warmup_steps=warmup))
  ts = at.create_train_state(params, state, tx)
  for s in range(6):
    scale = min(1.0, (s + 1) / warmup)
    plain = jax.jit(at.make_train_step(model, tx, epsilon=eps * scale,
                                       step_size=step_size * scale, num_steps=3))
    b, key = _batch(seed=s), jax.random.key(s)
    expected, _ = plain(ts, b, key)
    ts, _ = ramped(ts, b, key)
    for got, want in zip(jax.tree.leaves(ts.params), jax.tree.leaves(expected.params)):
      np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
  with pytest.raises(ValueError, match="epsilon_warmup_steps"):
    at.make_train_step(model, tx, epsilon=eps, step_size=step_size, num_steps=3,
                       epsilon_warmup_steps=-1)
