"""PGD adversarial training (Madry et al. 2018) with optional fixed pruning masks.

The step minimises the mean cross-entropy on PGD examples,
`min_θ E_(x,y) max_{‖δ‖≤ε} CE(f(m ⊙ θ, x + δ), y)`, with the inner maximum
approximated by `num_steps` of PGD (last iterate, random start). `epsilon = 0`
skips the attack: plain natural training (the NTT baseline).

Masks (`masks.py`): a sparse network's pruned weights stay *exactly* zero.
The gradient is multiplied by the mask before the optimizer (so the optimizer
state of a pruned entry, e.g. Adam's moments or SGD's momentum, stays exactly
zero) and the mask is applied again after the update (so weight decay or any
other drift can never revive a pruned weight).

Inference mode for the attack: the attack runs the model with `train=False`.
In training mode batch norm normalises with the statistics of the current
batch, so perturbing one example would move the normalisation of all the
others (the attack would then maximise a coupled, batch-dependent objective),
and every attack forward pass would update the running statistics. The
inference-mode model is the one that is evaluated and deployed, so that is the
one attacked. The training forward pass on the adversarial batch then uses
`train=True` (batch statistics, running averages updated).

All functions are pure and `jax.jit`-compatible; the step uses means over the
batch only, so `jit` with the batch sharded over a mesh computes the same
global-batch step as one device.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from scalable_awt import attacks
from scalable_awt.masks import apply_mask

PyTree = Any
TrainStep = Callable[["TrainState", dict, jax.Array], tuple["TrainState", dict]]

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "cosine", "piecewise")


class TrainState(struct.PyTreeNode):
  """Everything that changes during training; a pytree (checkpointable, jittable).

  Attributes:
    step: scalar int32 counter of completed updates.
    params: the model's parameters (already multiplied by `mask`).
    model_state: the non-parameter collections, e.g. `{"batch_stats": ...}`,
      or `{}` for models without state.
    opt_state: the optax state.
    mask: a pytree like `params` of 0/1 floats, or None for a dense network.
  """
  step: jax.Array
  params: PyTree
  model_state: PyTree
  opt_state: PyTree
  mask: PyTree = None


def _global_norm(tree: PyTree) -> jax.Array:
  """‖tree‖₂ over all leaves (written out: optax renamed its helper)."""
  return jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(tree)))


def make_schedule(*, learning_rate: float, schedule: str = "constant",
                  total_steps: int, warmup_steps: int = 0) -> optax.Schedule:
  """Learning-rate schedule with optional linear warm-up from 0.

  "constant": `learning_rate`. "cosine": cosine decay to 0 at `total_steps`.
  "piecewise": ×0.1 at 50% and again at 75% of `total_steps` (the usual
  schedule for PGD training, e.g. Madry et al./HYDRA). Warm-up steps count
  towards `total_steps`.
  """
  if schedule not in SCHEDULES:
    raise ValueError(f"Unknown schedule {schedule!r}; use one of {SCHEDULES}.")
  if learning_rate <= 0:
    raise ValueError(f"learning_rate={learning_rate} must be > 0.")
  if total_steps < 1:
    raise ValueError(f"total_steps={total_steps} must be >= 1.")
  if not 0 <= warmup_steps <= total_steps:
    raise ValueError(
        f"warmup_steps={warmup_steps} must be in [0, total_steps={total_steps}].")
  decay_steps = max(total_steps - warmup_steps, 1)
  if schedule == "constant":
    main = optax.constant_schedule(learning_rate)
  elif schedule == "cosine":
    main = optax.cosine_decay_schedule(learning_rate, decay_steps)
  else:
    main = optax.piecewise_constant_schedule(
        learning_rate, {int(0.5 * decay_steps): 0.1, int(0.75 * decay_steps): 0.1})
  if warmup_steps == 0:
    return main
  warmup = optax.linear_schedule(0.0, learning_rate, warmup_steps)
  return optax.join_schedules([warmup, main], [warmup_steps])


def make_optimizer(*, name: str = "adam", learning_rate: float,
                   schedule: str = "constant", total_steps: int,
                   warmup_steps: int = 0, weight_decay: float = 0.0,
                   momentum: float = 0.9) -> optax.GradientTransformation:
  """Builds the optimizer from optax blocks.

  * "adam": Adam (b1=0.9, b2=0.999, eps=1e-8); `weight_decay > 0` adds
    *decoupled* decay (AdamW: `θ ← θ − lr·(adam_update + wd·θ)`).
  * "sgd": SGD with heavy-ball `momentum` (0 for none); `weight_decay` is
    *coupled* L2 (`g ← g + wd·θ` before momentum), as PyTorch's SGD does.

  Decay applies to every parameter. With a mask, pruned weights are zero and
  their gradients are masked, so neither form of decay touches them.
  """
  if name not in OPTIMIZERS:
    raise ValueError(f"Unknown optimizer {name!r}; use one of {OPTIMIZERS}.")
  if weight_decay < 0:
    raise ValueError(f"weight_decay={weight_decay} must be >= 0.")
  if not 0.0 <= momentum < 1.0:
    raise ValueError(f"momentum={momentum} must be in [0, 1).")
  lr = make_schedule(learning_rate=learning_rate, schedule=schedule,
                     total_steps=total_steps, warmup_steps=warmup_steps)
  if name == "adam":
    parts = [optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8)]
    if weight_decay > 0:
      parts.append(optax.add_decayed_weights(weight_decay))
  else:
    parts = []
    if weight_decay > 0:
      parts.append(optax.add_decayed_weights(weight_decay))
    if momentum > 0:
      parts.append(optax.trace(decay=momentum, nesterov=False))
  parts.append(optax.scale_by_learning_rate(lr))
  return optax.chain(*parts)


def create_train_state(params: PyTree, model_state: PyTree | None,
                       tx: optax.GradientTransformation,
                       mask: PyTree | None = None) -> TrainState:
  """A fresh state at step 0; `params` are multiplied by `mask` here."""
  if mask is not None:
    if jax.tree.structure(mask) != jax.tree.structure(params):
      raise ValueError("mask must have the same pytree structure as params.")
    for p, m in zip(jax.tree.leaves(params), jax.tree.leaves(mask)):
      if p.shape != m.shape:
        raise ValueError(
            f"mask leaf of shape {m.shape} does not match param {p.shape}.")
  params = apply_mask(params, mask)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    model_state=dict(model_state or {}),
                    opt_state=tx.init(params), mask=mask)


def make_train_step(model: nn.Module, tx: optax.GradientTransformation, *,
                    epsilon: float, step_size: float, num_steps: int,
                    norm: str = "linf", domain=(0.0, 1.0),
                    random_start: bool = True,
                    epsilon_warmup_steps: int = 0) -> TrainStep:
  """Returns `train_step(state, batch, key) -> (state, metrics)`.

  `batch = {"image": float32 (B, ...) in domain, "label": int32 (B,)}`;
  `key` drives the PGD random start (pass a fresh one per step, e.g.
  `jax.random.fold_in(key, state.step)`).

  Metrics (scalar float32 arrays, batch means):
    "loss": the training cross-entropy (on adversarial inputs when ε > 0),
    "adv_accuracy": accuracy of the training forward pass (train mode) on the
      training inputs (equals the natural train-mode accuracy when ε = 0),
    "clean_accuracy": inference-mode accuracy on the clean batch (one extra
      forward pass, cheap next to PGD),
    "grad_norm": global L2 norm of the (masked) gradient.

  `epsilon_warmup_steps` > 0 ramps the attack linearly from ε/W at step 0
  to ε at step W − 1 (step size scaled alike): large-ε PGD training from
  scratch (MNIST at ε = 0.3, sparse networks above all) otherwise often
  collapses to a constant prediction.

  The model must accept `train: bool`. Models with state (any non-empty
  `model_state`, e.g. batch norm) are applied with
  `mutable=list(model_state)` in training mode and the new state is stored.
  """
  attacks.check_norm(norm)
  domain = attacks.check_domain(domain)
  if epsilon < 0:
    raise ValueError(f"epsilon={epsilon} must be >= 0.")
  adversarial = epsilon > 0
  if int(epsilon_warmup_steps) < 0:
    raise ValueError(f"epsilon_warmup_steps={epsilon_warmup_steps} must be >= 0.")
  if adversarial:
    if step_size <= 0:
      raise ValueError(f"step_size={step_size} must be > 0 when epsilon > 0.")
    if int(num_steps) < 1:
      raise ValueError(f"num_steps={num_steps} must be >= 1 when epsilon > 0.")

  def train_step(state: TrainState, batch: dict, key: jax.Array):
    images = jnp.asarray(batch["image"], jnp.float32)
    labels = jnp.asarray(batch["label"], jnp.int32)
    mask = state.mask
    params = apply_mask(state.params, mask)
    model_state = state.model_state
    has_state = bool(jax.tree.leaves(model_state))

    def infer_fn(p, x):
      return model.apply({"params": p, **model_state}, x, train=False)

    if adversarial:
      scale = 1.0
      if epsilon_warmup_steps:
        scale = jnp.minimum(1.0, (state.step + 1) / int(epsilon_warmup_steps))
      inputs = attacks.pgd_last_iterate(
          infer_fn, params, images, labels, key=key, epsilon=epsilon * scale,
          step_size=step_size * scale, num_steps=int(num_steps), norm=norm,
          random_start=random_start, loss="ce", domain=domain)
      inputs = jax.lax.stop_gradient(inputs)
    else:
      inputs = images

    def loss_fn(p):
      variables = {"params": p, **model_state}
      if has_state:
        logits, new_state = model.apply(variables, inputs, train=True,
                                        mutable=list(model_state))
        new_state = dict(new_state)
      else:
        logits = model.apply(variables, inputs, train=True)
        new_state = model_state
      loss = jnp.mean(
          optax.softmax_cross_entropy_with_integer_labels(logits, labels))
      return loss, (logits, new_state)

    (loss, (logits, new_model_state)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(params)
    grads = apply_mask(grads, mask)
    updates, new_opt_state = tx.update(grads, state.opt_state, params)
    new_params = apply_mask(optax.apply_updates(params, updates), mask)

    clean_logits = infer_fn(params, images)
    metrics = {
        "loss": loss,
        "adv_accuracy": jnp.mean(jnp.argmax(logits, -1) == labels),
        "clean_accuracy": jnp.mean(jnp.argmax(clean_logits, -1) == labels),
        "grad_norm": _global_norm(grads),
    }
    new_state = state.replace(step=state.step + 1, params=new_params,
                              model_state=new_model_state,
                              opt_state=new_opt_state)
    return new_state, metrics

  return train_step
