"""Natural and robust accuracy of any `apply_fn` on a labelled array dataset.

`evaluate` runs each requested attack on every example (in fixed-size batches
with one jitted function, compiled once per call) and reports plain Python
numbers, ready for JSON:

    {
      "num_examples": N, "epsilon": ε, "norm": "linf",
      "natural_accuracy": 0.98,
      "robust_accuracy": 0.90,          # per-example worst case over attacks
      "robust_accuracy_all_attacks": 0.90,          # the same number
      "robust_accuracy_per_attack": {"pgd100": 0.91, "apgd_ce": 0.915,
                                     "apgd_t": 0.905, "square": 0.93},
      "per_class_accuracy": {"natural": [...], "pgd100": [...], ...,
                             "worst": [...]},
      "threat_model": {"norm": "linf", "epsilon": ε, "units": "pixels",
                       "attacks": [{"name": "pgd", "key": "pgd100",
                                    "steps": 100, "restarts": 5, ...}, ...]},
    }

Attack names (`ATTACKS`):
  "pgd"     PGD on the cross-entropy, `pgd_steps` steps of `step_size`,
            `pgd_restarts` random starts (per-example worst case over them,
            `attacks.worst_case`); reported as f"pgd{pgd_steps}".
  "cw"      the same PGD on the CW margin; reported as f"cw{pgd_steps}".
  "apgd_ce" APGD on the cross-entropy, `apgd_steps` steps, `pgd_restarts`
            random starts.
  "apgd_t"  targeted APGD on the DLR loss (AutoAttack's APGD-T): `apgd_steps`
            steps towards each of the `apgd_t_targets` most likely wrong
            classes (capped at C − 1); one start per target.
  "square"  Square attack, black box, `square_queries` queries per example
            (L∞ only: with norm="l2" it raises ValueError).
  "fgsm"    one signed-gradient step of size ε.
An example counts as robust against an attack only if it is classified
correctly both clean and at the attack's point (as in AutoAttack, which only
attacks correctly classified points), so every per-attack accuracy is at most
the natural accuracy. "robust_accuracy_all_attacks" counts an example as
robust only if no attack in the suite fooled it, so it is at most every
per-attack number; "robust_accuracy" is the same number (the headline, kept
under its old name). With `epsilon = 0` no attack is run and every robust
accuracy equals the natural accuracy. Per-class lists hold None for classes
absent from the data.

"threat_model" states what was run: the norm, ε in the units of the inputs
("pixels" when `domain` is (0, 1), "input units" otherwise) and per attack its
name, result key, loss, steps (or queries), restarts and step size.

Evaluation is in whatever mode `apply_fn` implements: pass the inference-mode
function from `models.make_apply_fn` (with the masked parameters).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from scalable_awt import attacks as attacks_lib

ATTACKS = ("pgd", "cw", "apgd_ce", "apgd_t", "square", "fgsm")
_SQUARE_P_INIT = 0.8  # The paper's initial fraction of pixels per query.


def attack_name(attack: str, *, pgd_steps: int) -> str:
  """The key under which an attack's result is reported."""
  if attack == "pgd":
    return f"pgd{pgd_steps}"
  if attack == "cw":
    return f"cw{pgd_steps}"
  return attack


def attack_spec(attack: str, *, epsilon, pgd_steps, pgd_restarts, step_size,
                apgd_steps, apgd_t_targets, square_queries,
                num_classes=None) -> dict:
  """The threat-model entry of one named attack: what `_make_attack` runs."""
  # Plain Python numbers: the entry goes to JSON as is.
  epsilon, step_size = float(epsilon), float(step_size)
  pgd_steps, pgd_restarts, apgd_steps, apgd_t_targets, square_queries = map(
      int, (pgd_steps, pgd_restarts, apgd_steps, apgd_t_targets,
            square_queries))
  spec = {"name": attack, "key": attack_name(attack, pgd_steps=pgd_steps)}
  if attack in ("pgd", "cw"):
    spec.update(loss="ce" if attack == "pgd" else "margin", steps=pgd_steps,
                restarts=pgd_restarts, step_size=step_size)
  elif attack == "apgd_ce":
    spec.update(loss="ce", steps=apgd_steps, restarts=pgd_restarts,
                initial_step_size=2.0 * epsilon)
  elif attack == "apgd_t":
    targets = (apgd_t_targets if num_classes is None
               else min(apgd_t_targets, num_classes - 1))
    spec.update(loss="dlr_targeted", steps=apgd_steps, restarts=1,
                targets=targets, initial_step_size=2.0 * epsilon)
  elif attack == "square":
    # One model query per step; "steps" is kept so that readers that expect
    # it for every attack (results tables) work.
    spec.update(loss="margin", queries=square_queries, steps=square_queries,
                restarts=1, p_init=_SQUARE_P_INIT)
  elif attack == "fgsm":
    spec.update(loss="ce", steps=1, restarts=1, step_size=epsilon)
  else:
    raise ValueError(f"Unknown attack {attack!r}; use any of {ATTACKS}.")
  return spec


def _make_attack(attack: str, *, epsilon, pgd_steps, pgd_restarts, step_size,
                 norm, domain, apgd_steps, apgd_t_targets=9,
                 square_queries=5000):
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
  if attack == "apgd_t":
    def run(apply_fn, params, x, y, key):
      return attacks_lib.apgd_t(apply_fn, params, x, y, key=key,
                                epsilon=epsilon, num_steps=apgd_steps,
                                num_targets=apgd_t_targets, norm=norm,
                                domain=domain)
    return run
  if attack == "square":
    def run(apply_fn, params, x, y, key):
      return attacks_lib.square(apply_fn, params, x, y, key=key,
                                epsilon=epsilon, num_queries=square_queries,
                                norm=norm, p_init=_SQUARE_P_INIT,
                                domain=domain)
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
             num_classes: int | None = None, apgd_steps: int = 100,
             apgd_t_targets: int = 9, square_queries: int = 5000) -> dict:
  """Natural and robust accuracy of `apply_fn(params, ·)` on `(images, labels)`.

  Args:
    apply_fn: `apply_fn(params, x) -> logits (B, C)` in inference mode.
    images: `(N, ...)` array in `domain`; labels: `(N,)` integers.
    key: PRNG key; batch `b` uses `fold_in(key, b)` (results depend on
      `batch_size` only through the random starts).
    epsilon: attack radius (0 skips all attacks).
    attacks: names from `ATTACKS`; each is reported separately.
    pgd_steps / pgd_restarts: PGD iterations and random restarts ("pgd",
      "cw"); restarts also apply to "apgd_ce" (per-example worst case).
    step_size: PGD step; default `2.5 · ε / pgd_steps` (Madry et al.).
    norm: "linf" or "l2" ("square" is L∞ only). domain: input box or None.
    batch_size: examples per jitted call; the last batch is padded (padding is
      not counted), so every batch has one shape and compiles once.
    num_classes: number of classes for the per-class lists; default the
      model's output width.
    apgd_steps: iterations of APGD-CE and of APGD-T (per target).
    apgd_t_targets: target classes of APGD-T (capped at C − 1).
    square_queries: model queries per example of the Square attack.

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
  if "square" in attacks and norm != "linf":
    raise ValueError("The Square attack is implemented for norm='linf' only; "
                     "drop 'square' from attacks for L2.")
  domain = attacks_lib.check_domain(domain)
  epsilon = float(epsilon)
  if not np.isfinite(epsilon) or epsilon < 0:
    raise ValueError(f"epsilon={epsilon} must be a finite number >= 0.")
  if batch_size < 1:
    raise ValueError(f"batch_size={batch_size} must be >= 1.")
  counts = dict(pgd_steps=pgd_steps, pgd_restarts=pgd_restarts,
                apgd_steps=apgd_steps, apgd_t_targets=apgd_t_targets,
                square_queries=square_queries)
  for name, value in counts.items():
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
      raise ValueError(f"{name}={value!r} must be an int.")
    if value < 1:
      raise ValueError(f"{name}={value} must be >= 1.")
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
  settings = dict(epsilon=epsilon, pgd_steps=pgd_steps,
                  pgd_restarts=pgd_restarts, step_size=step_size,
                  apgd_steps=apgd_steps, apgd_t_targets=apgd_t_targets,
                  square_queries=square_queries)
  fns = [_make_attack(a, norm=norm, domain=domain, **settings)
         for a in run_attacks]

  @jax.jit
  def batch_correct(params, x, y, key):
    """`(1 + len(run_attacks), B)` booleans: natural, then each attack."""
    natural = jnp.argmax(apply_fn(params, x), -1) == y
    rows = [natural]
    for i, fn in enumerate(fns):
      x_adv = fn(apply_fn, params, x, y, jax.random.fold_in(key, i))
      # Robust = right on the clean input and at the attack's point.
      rows.append(natural & (jnp.argmax(apply_fn(params, x_adv), -1) == y))
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
  # Per example: robust only if natural and every attack got it right.
  worst = np.all(correct, axis=0)

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
      "robust_accuracy_all_attacks": float(worst.mean()),
      "robust_accuracy_per_attack": {k: float(v.mean())
                                     for k, v in per_attack.items()},
      "per_class_accuracy": {
          "natural": per_class(natural),
          **{k: per_class(v) for k, v in per_attack.items()},
          "worst": per_class(worst),
      },
      "threat_model": {
          "norm": norm,
          "epsilon": epsilon,
          "units": "pixels" if domain == (0.0, 1.0) else "input units",
          "domain": None if domain is None else list(domain),
          "attacks": [attack_spec(a, num_classes=num_classes, **settings)
                      for a in attacks],
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
