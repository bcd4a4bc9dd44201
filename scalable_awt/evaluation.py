"""Natural and robust accuracy of any `apply_fn` on a labelled array dataset.

`evaluate` runs each requested attack on every example (in fixed-size batches
with one jitted function, compiled once per call) and reports plain Python
numbers, ready for JSON:

    {
      "num_examples": N, "epsilon": ε, "norm": "linf",
      "natural_accuracy": 0.98,
      "robust_accuracy": 0.91,          # per-example worst case over attacks
      "robust_accuracy_per_attack": {"pgd100": 0.91, "apgd_ce": 0.915},
      "per_class_accuracy": {"natural": [...], "pgd100": [...],
                             "apgd_ce": [...], "worst": [...]},
    }

Attack names: "pgd" (reported as f"pgd{pgd_steps}", CE loss, `pgd_restarts`
random restarts kept by `attacks.worst_case`), "cw" (PGD on the CW margin,
reported as f"cw{pgd_steps}"), "apgd_ce" (`apgd_steps` steps), "fgsm". The
headline "robust_accuracy" counts an example as robust only if it survives
every attack (an AutoAttack-style ensemble); with one attack it equals that
attack's number. With `epsilon = 0` no attack is run and every robust
accuracy equals the natural accuracy. Per-class lists hold None for classes
absent from the data.

Evaluation is in whatever mode `apply_fn` implements: pass the inference-mode
function from `models.make_apply_fn` (with the masked parameters).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from scalable_awt import attacks as attacks_lib

ATTACKS = ("pgd", "cw", "apgd_ce", "fgsm")


def attack_name(attack: str, *, pgd_steps: int) -> str:
  """The key under which an attack's result is reported."""
  if attack == "pgd":
    return f"pgd{pgd_steps}"
  if attack == "cw":
    return f"cw{pgd_steps}"
  return attack


def _make_attack(attack: str, *, epsilon, pgd_steps, pgd_restarts, step_size,
                 norm, domain, apgd_steps):
  """Returns `fn(apply_fn, params, x, y, key) -> x_adv` for one named attack."""
  if attack in ("pgd", "cw"):
    loss = "ce" if attack == "pgd" else "margin"

    def run(apply_fn, params, x, y, key):
      return attacks_lib.worst_case(
          attacks_lib.pgd, apply_fn, params, x, y, key=key,
          num_restarts=pgd_restarts, epsilon=epsilon, step_size=step_size,
          num_steps=pgd_steps, norm=norm, random_start=True, loss=loss,
          domain=domain)
    return run
  if attack == "apgd_ce":
    def run(apply_fn, params, x, y, key):
      return attacks_lib.worst_case(
          attacks_lib.apgd_ce, apply_fn, params, x, y, key=key,
          num_restarts=pgd_restarts, epsilon=epsilon, num_steps=apgd_steps,
          norm=norm, domain=domain)
    return run
  if attack == "fgsm":
    def run(apply_fn, params, x, y, key):
      return attacks_lib.fgsm(apply_fn, params, x, y, epsilon=epsilon,
                              norm=norm, domain=domain, key=key)
    return run
  raise ValueError(f"Unknown attack {attack!r}; use any of {ATTACKS}.")


def evaluate(apply_fn, params, images, labels, *, key: jax.Array,
             epsilon: float, attacks: Sequence[str] = ("pgd",),
             pgd_steps: int = 100, pgd_restarts: int = 1,
             step_size: float | None = None, norm: str = "linf",
             domain=(0.0, 1.0), batch_size: int = 256,
             num_classes: int | None = None, apgd_steps: int = 100) -> dict:
  """Natural and robust accuracy of `apply_fn(params, ·)` on `(images, labels)`.

  Args:
    apply_fn: `apply_fn(params, x) -> logits (B, C)` in inference mode.
    images: `(N, ...)` array in `domain`; labels: `(N,)` integers.
    key: PRNG key; batch `b` uses `fold_in(key, b)` (results depend on
      `batch_size` only through the random starts).
    epsilon: attack radius (0 skips all attacks).
    attacks: names from `ATTACKS`; each is reported separately.
    pgd_steps / pgd_restarts: PGD iterations and random restarts ("pgd",
      "cw"); restarts also apply to "apgd_ce".
    step_size: PGD step; default `2.5 · ε / pgd_steps` (Madry et al.).
    norm: "linf" or "l2". domain: input box or None.
    batch_size: examples per jitted call; the last batch is padded (padding is
      not counted), so every batch has one shape and compiles once.
    num_classes: number of classes for the per-class lists; default the
      model's output width.
    apgd_steps: iterations of APGD-CE.

  Returns:
    A dict of Python floats/ints/lists (see the module docstring).
  """
  attacks = tuple(attacks)
  for a in attacks:
    if a not in ATTACKS:
      raise ValueError(f"Unknown attack {a!r}; use any of {ATTACKS}.")
  if len(set(attacks)) != len(attacks):
    raise ValueError(f"attacks={attacks} lists an attack twice.")
  attacks_lib.check_norm(norm)
  domain = attacks_lib.check_domain(domain)
  epsilon = float(epsilon)
  if not np.isfinite(epsilon) or epsilon < 0:
    raise ValueError(f"epsilon={epsilon} must be a finite number >= 0.")
  if batch_size < 1:
    raise ValueError(f"batch_size={batch_size} must be >= 1.")
  if pgd_steps < 1 or pgd_restarts < 1 or apgd_steps < 1:
    raise ValueError("pgd_steps, pgd_restarts and apgd_steps must be >= 1.")
  if step_size is None:
    step_size = 2.5 * epsilon / pgd_steps
  images = np.asarray(images, np.float32)
  labels = np.asarray(labels).astype(np.int32)
  n = images.shape[0]
  if n == 0 or labels.shape != (n,):
    raise ValueError(
        f"Need N > 0 images and labels of shape (N,); got {images.shape} and "
        f"{labels.shape}.")

  if num_classes is None:
    out = jax.eval_shape(apply_fn, params,
                         jax.ShapeDtypeStruct((1,) + images.shape[1:],
                                              jnp.float32))
    num_classes = int(out.shape[-1])
  if labels.min() < 0 or labels.max() >= num_classes:
    raise ValueError(f"labels must lie in [0, {num_classes}).")

  run_attacks = attacks if epsilon > 0 else ()
  names = [attack_name(a, pgd_steps=pgd_steps) for a in attacks]
  fns = [_make_attack(a, epsilon=epsilon, pgd_steps=pgd_steps,
                      pgd_restarts=pgd_restarts, step_size=step_size,
                      norm=norm, domain=domain, apgd_steps=apgd_steps)
         for a in run_attacks]

  @jax.jit
  def batch_correct(params, x, y, key):
    """`(1 + len(run_attacks), B)` booleans: natural, then each attack."""
    rows = [jnp.argmax(apply_fn(params, x), -1) == y]
    for i, fn in enumerate(fns):
      x_adv = fn(apply_fn, params, x, y, jax.random.fold_in(key, i))
      rows.append(jnp.argmax(apply_fn(params, x_adv), -1) == y)
    return jnp.stack(rows)

  bs = min(batch_size, n)
  chunks = []
  for b, start in enumerate(range(0, n, bs)):
    x = images[start:start + bs]
    y = labels[start:start + bs]
    pad = bs - x.shape[0]
    if pad:
      x = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)])
      y = np.concatenate([y, np.repeat(y[-1:], pad, axis=0)])
    correct = batch_correct(params, x, y, jax.random.fold_in(key, b))
    chunks.append(np.asarray(correct)[:, :bs - pad])
  correct = np.concatenate(chunks, axis=1)  # (1 + attacks, N)

  natural = correct[0]
  per_attack = {name: correct[1 + i] if run_attacks else natural
                for i, name in enumerate(names)}
  worst = np.all(correct, axis=0)  # Natural errors count as non-robust.

  def per_class(c):
    out = []
    for k in range(num_classes):
      sel = labels == k
      out.append(float(c[sel].mean()) if sel.any() else None)
    return out

  return {
      "num_examples": int(n),
      "epsilon": epsilon,
      "norm": norm,
      "natural_accuracy": float(natural.mean()),
      "robust_accuracy": float(worst.mean()),
      "robust_accuracy_per_attack": {k: float(v.mean())
                                     for k, v in per_attack.items()},
      "per_class_accuracy": {
          "natural": per_class(natural),
          **{k: per_class(v) for k, v in per_attack.items()},
          "worst": per_class(worst),
      },
  }


def flatten_metrics(result: dict) -> dict[str, float]:
  """Scalars of an `evaluate` result as flat names, for metric writers.

  E.g. {"natural_accuracy": .., "robust_accuracy": ..,
  "robust_accuracy/pgd100": .., "natural_accuracy/class_3": ..}.
  """
  flat = {"natural_accuracy": result["natural_accuracy"],
          "robust_accuracy": result["robust_accuracy"]}
  for name, value in result["robust_accuracy_per_attack"].items():
    flat[f"robust_accuracy/{name}"] = value
  for name, values in result["per_class_accuracy"].items():
    prefix = "natural_accuracy" if name == "natural" else f"robust_accuracy/{name}"
    for k, v in enumerate(values):
      if v is not None:
        flat[f"{prefix}/class_{k}"] = v
  return flat
