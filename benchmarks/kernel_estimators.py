"""Exact vs. sampled kernel distances: cost, memory and accuracy.

For the MLP (784-300-100-10, 28x28 inputs), the CNN (models.CNN defaults) and
VGG-16 (CIFAR-shaped 32x32x3), with a random mask of density 0.1, student
params = dense params perturbed by 10% noise, and adversarial inputs from a
few PGD steps on each network (so that distances are far from zero):

* cost: time of one distance + gradient evaluation (jit, median after
  compile; teacher preparation included, since the search meets a new batch
  every step; `part="student"` rows time the student's distance + gradient
  alone, with the teacher prepared beforehand), compile time, XLA memory
  (`memory_analysis()` temp + arguments + outputs), XLA's FLOP count
  (`cost_analysis()`, a hardware-independent cost) and the peak RSS of a
  subprocess that runs just that evaluation. Every time and FLOP count is
  also given as a ratio to the yardstick: one PGD-10 adversarial-training step
  (`adversarial_training.make_train_step`) of the same model and batch. XLA
  counts a loop body once, so the yardstick's FLOPs are summed from its parts:
  10 input gradients of the loss (the attack) + 1 parameter gradient.
* accuracy (MLP, CNN at n=64): relative RMS error of the distance over keys
  vs. the exact distance, mean ± standard error (unbiased estimators must
  agree with exact within 3 s.e.), relative Frobenius error of the kernel
  (random projection), and the Spearman correlation of the distances of a set
  of random masks of one density with the exact ones.

    python benchmarks/kernel_estimators.py --quick      # ~10 min on 2 CPU cores
    python benchmarks/kernel_estimators.py              # the full sweep

Writes `--out`/estimators_accuracy[_quick].{json,md,png} (default
benchmarks/results/) and prints Markdown tables. While it runs, its progress
is in `<stem>.<part>.partial.json`; the committed files change only when a
part has finished, and keep what this run did not redo (e.g. `--only cost`
keeps the accuracy tables).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pathlib
import re
import resource
import shutil
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from scalable_awt import adversarial_training, attacks, masks, models
from scalable_awt import estimators as E

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
ESTIMATED = [n for n in E.NAMES if n != "exact"]
UNBIASED = ["random_projection_unbiased", "output_probes", "output_probes_deflated"]

MODELS = {
    # name: (constructor kwargs, example shape, epsilon, step size)
    "mlp": (dict(features=(300, 100)), (28, 28, 1), 0.3, 0.1),
    "cnn": (dict(), (28, 28, 1), 0.3, 0.1),
    "vgg16": (dict(norm="batch"), (32, 32, 3), 8 / 255, 2 / 255),
}
# Exact implementation per model: the dense teacher is structured; the masked
# student has no structured form (see estimators/exact.py), so large models
# build it from kernel-vector products in chunks.
EXACT_OPTIONS = {
    "mlp": dict(implementation="structured", student_implementation="jacobian"),
    "cnn": dict(implementation="structured", student_implementation="ntk_vector_products",
                chunk_size=16),
    "vgg16": dict(implementation="structured", student_implementation="ntk_vector_products",
                  chunk_size=2),
}


def _tree_keys(key, tree):
  leaves, treedef = jax.tree.flatten(tree)
  return jax.tree.unflatten(treedef, list(jax.random.split(key, len(leaves))))


def setup(model_name: str, n: int, *, seed: int = 0, density: float = 0.1,
          mask_seed: int = 1):
  """Model, data, dense/sparse params, mask and both networks' PGD inputs."""
  kwargs, shape, eps, step = MODELS[model_name]
  model = models.create_model(model_name, **kwargs)
  key = jax.random.key(seed)
  k_init, k_x, k_y, k_noise, k_pgd = jax.random.split(key, 5)
  params, state = models.init_model(model, k_init, (1,) + shape)
  apply_fn = models.make_apply_fn(model, state)
  x = jax.random.uniform(k_x, (n,) + shape)
  y = jax.random.randint(k_y, (n,), 0, 10)
  student = jax.tree.map(lambda p, k: p + 0.1 * jnp.std(p) * jax.random.normal(k, p.shape),
                         params, _tree_keys(k_noise, params))
  mask = masks.random_mask(jax.random.key(mask_seed), params, density)
  pgd = jax.jit(functools.partial(attacks.pgd_last_iterate, epsilon=eps, step_size=step,
                                  num_steps=3), static_argnums=0)
  x_adv = pgd(apply_fn, params, x, y, key=k_pgd)
  x_adv_s = pgd(apply_fn, masks.apply_mask(student, mask), x, y, key=k_pgd)
  return dict(model=model, state=state, apply_fn=apply_fn, params=params, student=student,
              mask=mask, x=x, y=y, x_adv=x_adv, x_adv_s=x_adv_s, eps=eps, step=step,
              pgd=pgd)


def _median_time(fn, args, repeats):
  """Median wall time and median process CPU time (all threads) of one call.

  The CPU time is the fairer yardstick on a shared machine: it does not count
  the time spent waiting for cores that other processes hold.
  """
  times, cpu = [], []
  for _ in range(repeats):
    start, start_cpu = time.perf_counter(), time.process_time()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
    cpu.append(time.process_time() - start_cpu)
  return float(np.median(times)), float(np.median(cpu))


def _memory(compiled):
  try:
    m = compiled.memory_analysis()
    return int(m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes)
  except Exception:  # Not every backend reports it.
    return None


def _flops(compiled):
  """XLA's FLOP count of a compiled program; None when it has a loop (XLA
  counts a loop body once, whatever its trip count) or none is reported.
  The random-number generator's loops (threefry rounds) are cheap and allowed."""
  try:
    loops = [line for line in compiled.as_text().splitlines()
             if re.search(r"\bwhile\(", line)
             and not re.search(r"threefry|_uniform|_normal|_bernoulli|_rademacher", line)]
    if loops:
      return None
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    return float(analysis["flops"])
  except Exception:  # Not every backend reports it.
    return None


def time_compiled(fn, args, repeats):
  start = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  compile_s = time.perf_counter() - start
  if repeats > 1:
    jax.block_until_ready(compiled(*args))  # Warm-up (skipped for one-shot VGG runs).
  wall, cpu = _median_time(compiled, args, repeats)
  return dict(time_s=wall, cpu_s=cpu, compile_s=compile_s,
              xla_bytes=_memory(compiled), flops=_flops(compiled))


def yardstick(s, repeats):
  """One PGD-10 adversarial-training step (Adam) of the same model and batch."""
  tx = adversarial_training.make_optimizer(name="adam", learning_rate=1e-3, total_steps=1)
  step = adversarial_training.make_train_step(s["model"], tx, epsilon=s["eps"],
                                              step_size=s["step"], num_steps=10)
  train_state = adversarial_training.create_train_state(s["params"], s["state"], tx)
  batch = {"image": s["x"], "label": s["y"]}
  out = time_compiled(lambda st, b, k: step(st, b, k)[0].params,
                      (train_state, batch, jax.random.key(0)), repeats)
  out["flops"] = _yardstick_flops(s)
  return out


def _yardstick_flops(s):
  """10 input gradients (PGD-10) + 1 parameter gradient of the training loss."""
  apply_fn = s["apply_fn"]

  def loss(params, x, y):
    logits = apply_fn(params, x)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))

  args = (s["params"], s["x"], s["y"])
  attack = _flops(jax.jit(jax.grad(loss, argnums=1)).lower(*args).compile())
  update = _flops(jax.jit(jax.value_and_grad(loss)).lower(*args).compile())
  return None if attack is None or update is None else 10 * attack + update


def distance_and_grad_fn(s, name, k, options):
  """`fn(student, key, arrays)`; the arrays are arguments, not closure constants,
  so that XLA cannot fold the teacher's work into the compiled program."""
  apply_fn = s["apply_fn"]

  def fn(student, key, arrays):
    loss = lambda p: E.kernel_distance(
        name, apply_fn, arrays["params"], p, arrays["mask"], arrays["x"],
        arrays["x_adv"], arrays["x_adv_s"], key=key, num_samples=k, normalize=True,
        **options)
    return jax.value_and_grad(loss)(student)
  return fn


def distance_arrays(s):
  return {name: s[name] for name in ("params", "mask", "x", "x_adv", "x_adv_s")}


def student_grad_fn(s, name, options):
  """`fn(student, teacher, arrays)`: the student's distance + gradient alone."""
  apply_fn = s["apply_fn"]

  def fn(student, teacher, arrays):
    loss = lambda p: E.student_kernel_distance(
        name, teacher, apply_fn, p, arrays["mask"], arrays["x"], arrays["x_adv_s"],
        normalize=True, **options)
    return jax.value_and_grad(loss)(student)
  return fn


def cost_one(model_name, n, name, k, repeats, options=None, part="all"):
  """One cost row. part="all": teacher + student; "student": the student's
  distance + gradient with the teacher prepared beforehand (not timed)."""
  s = setup(model_name, n)
  options = options if options is not None else (
      EXACT_OPTIONS[model_name] if name == "exact" else {})
  if name == "yardstick":
    out = yardstick(s, repeats)
  elif part == "student":
    teacher = jax.jit(lambda key, a: E.prepare_teacher(
        name, s["apply_fn"], a["params"], a["x"], a["x_adv"], key=key, num_samples=k,
        **options))(jax.random.key(7), distance_arrays(s))
    out = time_compiled(student_grad_fn(s, name, options),
                        (s["student"], teacher, distance_arrays(s)), repeats)
  else:
    out = time_compiled(distance_and_grad_fn(s, name, k, options),
                        (s["student"], jax.random.key(7), distance_arrays(s)), repeats)
  out["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  return dict(model=model_name, n=n, estimator=name, k=k,
              part=None if name == "yardstick" else part,
              chunk_size=(options or {}).get("chunk_size") if name != "exact" else None,
              **out)


def cost_in_subprocess(model_name, n, name, k, repeats, timeout, part="all", options=None):
  """Runs cost_one in a fresh process so that its peak RSS is its own."""
  cmd = [sys.executable, __file__, "--single",
         json.dumps([model_name, n, name, k, repeats, part, options])]
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
  except subprocess.TimeoutExpired:
    return dict(model=model_name, n=n, estimator=name, k=k, part=part,
                error=f"timeout {timeout}s")
  lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
  if proc.returncode or not lines:
    return dict(model=model_name, n=n, estimator=name, k=k, part=part,
                error=(proc.stderr or proc.stdout)[-400:])
  return json.loads(lines[-1])


# ---------------------------------------------------------------------------
# Accuracy.
# ---------------------------------------------------------------------------

def accuracy(model_name, n, ks, keys_for, *, names, num_masks, save_partial=None):
  """Accuracy rows of one model; `save_partial(result_so_far)` after each row,
  so that a long sweep killed half-way keeps what it measured."""
  s = setup(model_name, n)
  apply_fn = s["apply_fn"]
  options = EXACT_OPTIONS[model_name]
  exact_fn = jax.jit(lambda student, mask, xs: E.kernel_distance(
      "exact", apply_fn, s["params"], student, mask, s["x"], s["x_adv"], xs,
      key=jax.random.key(0), **options))
  t0 = time.perf_counter()
  exact = float(exact_fn(s["student"], s["mask"], s["x_adv_s"]))
  exact_s = time.perf_counter() - t0
  kernel = E.prepare_teacher("exact", apply_fn, s["params"], s["x"], s["x_adv"],
                             key=jax.random.key(0), **options)["kernel"]
  kernel_norm = float(jnp.sqrt(jnp.sum(kernel**2)))
  arrays = dict(distance_arrays(s), student=s["student"])
  rows = []
  for name in names:
    for k in ks:
      if name == "random_projection_unbiased" and k < 2:
        continue
      if name.endswith("diagonal") and k > n:
        continue

      @jax.jit
      def run(key, a, k=k, name=name):  # Arrays as arguments: no constant folding.
        teacher = E.prepare_teacher(name, apply_fn, a["params"], a["x"], a["x_adv"],
                                    key=key, num_samples=k)
        d = E.student_kernel_distance(name, teacher, apply_fn, a["student"], a["mask"],
                                      a["x"], a["x_adv_s"])
        est = E.kernel_estimate(name, teacher)
        kerr = (jnp.sqrt(jnp.sum((est - kernel) ** 2)) if est is not None
                else jnp.nan)
        return d, kerr

      t0 = time.perf_counter()
      vals, kerrs = zip(*[(float(a), float(b)) for a, b in
                          (run(jax.random.key(1000 + r), arrays)
                           for r in range(keys_for(k)))])
      vals = np.array(vals)
      se = float(vals.std(ddof=1) / np.sqrt(len(vals))) if len(vals) > 1 else float("nan")
      rows.append(dict(
          model=model_name, n=n, estimator=name, k=k, keys=len(vals), exact=exact,
          mean=float(vals.mean()), stderr=se,
          z=float((vals.mean() - exact) / se) if se > 0 else float("nan"),
          rel_rms=float(np.sqrt(np.mean((vals - exact) ** 2)) / exact),
          rel_bias=float((vals.mean() - exact) / exact),
          kernel_rel_fro=float(np.nanmean(kerrs)) / kernel_norm if name.startswith(
              "random_projection") else None,
          seconds=time.perf_counter() - t0))
      print(json.dumps(rows[-1]), flush=True)
      if save_partial:
        save_partial(dict(exact=exact, exact_seconds=exact_s, rows=rows, ranks=[],
                          partial=True))

  if not num_masks:
    return dict(exact=exact, exact_seconds=exact_s, rows=rows, ranks=[])
  # Rank correlation across random masks of one density (common random numbers).
  from scipy.stats import spearmanr
  mask_list = [masks.random_mask(jax.random.key(100 + i), s["params"], 0.1)
               for i in range(num_masks)]
  xs_list = [s["pgd"](apply_fn, masks.apply_mask(s["student"], m), s["x"], s["y"],
                      key=jax.random.key(5)) for m in mask_list]
  exact_d = [float(exact_fn(s["student"], m, xs)) for m, xs in zip(mask_list, xs_list)]
  ranks = []
  for name in names:
    for k in (8, 64):
      if name.endswith("diagonal") and k > n:
        continue
      teacher = jax.jit(lambda key: E.prepare_teacher(
          name, apply_fn, s["params"], s["x"], s["x_adv"], key=key, num_samples=k))(
              jax.random.key(3))
      student = jax.jit(lambda m, xs: E.student_kernel_distance(
          name, teacher, apply_fn, s["student"], m, s["x"], xs))
      est = [float(student(m, xs)) for m, xs in zip(mask_list, xs_list)]
      ranks.append(dict(model=model_name, n=n, estimator=name, k=k, num_masks=num_masks,
                        spearman=float(spearmanr(exact_d, est).statistic)))
      print(json.dumps(ranks[-1]), flush=True)
  return dict(exact=exact, exact_seconds=exact_s, rows=rows, ranks=ranks,
              exact_masks=exact_d)


# ---------------------------------------------------------------------------
# Reporting.
# ---------------------------------------------------------------------------

def _fmt(v, spec=".3g"):
  return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, spec)


def cost_table(rows):
  yard = {(r["model"], r["n"]): r for r in rows
          if r["estimator"] == "yardstick" and "time_s" in r}
  lines = ["| model | n | estimator | part | k | chunk | wall (s) | × PGD-10 step (wall) | CPU (s) | "
           "× PGD-10 step (CPU) | GFLOP | × PGD-10 step (FLOPs) | compile (s) | "
           "XLA mem (MB) | peak RSS (MB) |",
           "|" + " --- |" * 15]
  for r in rows:
    part = r.get("part") or ("" if r["estimator"] == "yardstick" else "all")
    if "error" in r:
      lines.append(f"| {r['model']} | {r['n']} | {r['estimator']} | {part} | {r['k']} | "
                   f"{_fmt(r.get('chunk_size'), '')} | {r['error'][-80:]!r} |" + " |" * 8)
      continue
    base = yard.get((r["model"], r["n"]))
    ratio = r["time_s"] / base["time_s"] if base else None
    cpu_ratio = r["cpu_s"] / base["cpu_s"] if base else None
    flops, base_flops = r.get("flops"), base.get("flops") if base else None
    flop_ratio = flops / base_flops if flops and base_flops else None
    lines.append(
        f"| {r['model']} | {r['n']} | {r['estimator']} | {part} | {_fmt(r['k'], '')} | "
        f"{_fmt(r.get('chunk_size'), '')} | {_fmt(r['time_s'])} | {_fmt(ratio, '.2f')} | {_fmt(r['cpu_s'])} | "
        f"{_fmt(cpu_ratio, '.2f')} | {_fmt(flops / 1e9 if flops else None, '.1f')} | "
        f"{_fmt(flop_ratio, '.2f')} | {_fmt(r['compile_s'], '.1f')} | "
        f"{_fmt(r['xla_bytes'] / 2**20 if r['xla_bytes'] else None, '.0f')} | "
        f"{_fmt(r['peak_rss_bytes'] / 2**20, '.0f')} |")
  return "\n".join(lines)


def accuracy_table(acc):
  lines = ["| model | estimator | k | keys | rel. RMS err | rel. bias | (mean−exact)/s.e. | "
           "kernel rel. Frobenius err |", "|" + " --- |" * 8]
  for model_name, res in acc.items():
    for r in res["rows"]:
      lines.append(f"| {model_name} | {r['estimator']} | {r['k']} | {r['keys']} | "
                   f"{_fmt(r['rel_rms'])} | {_fmt(r['rel_bias'], '+.3f')} | "
                   f"{_fmt(r['z'], '+.2f')} | {_fmt(r['kernel_rel_fro'])} |")
  lines += ["", "| model | estimator | k | Spearman vs exact (random masks, d=0.1) |",
            "| --- | --- | --- | --- |"]
  for model_name, res in acc.items():
    for r in res["ranks"]:
      lines.append(f"| {model_name} | {r['estimator']} | {r['k']} | {r['spearman']:.2f} |")
  return "\n".join(lines)


def plots(result, path: pathlib.Path):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
  ax = axes[0]
  styles = {"mlp": "-", "cnn": "--"}
  for model_name, res in result.get("accuracy", {}).items():
    for i, name in enumerate(ESTIMATED):
      pts = sorted((r["k"], r["rel_rms"]) for r in res["rows"] if r["estimator"] == name)
      if pts:
        ax.plot(*zip(*pts), "o" + styles.get(model_name, ":"), color=f"C{i}",
                label=f"{model_name} {name}")
  ax.axhline(0.3, color="grey", lw=0.8, ls=":")
  ax.axhline(0.1, color="grey", lw=0.8, ls=":")
  ax.set(xscale="log", yscale="log", xlabel="k (probes / directions / positions)",
         ylabel="relative RMS error of the kernel distance",
         title="estimator error vs k (n = 64; dotted: 30% and 10%)")
  ax.legend(fontsize=6)
  ax = axes[1]
  cost = [r for r in result.get("cost", []) if "cpu_s" in r]
  yard = {(r["model"], r["n"]): r for r in cost if r["estimator"] == "yardstick"}
  def ratio(r, field):
    base = yard[(r["model"], r["n"])].get(field)
    return r[field] / base if r.get(field) and base else 0.0
  bars = [(f"{r['model']} n={r['n']} {r['estimator']}\nk={r['k']} {r.get('part') or 'all'}"
            + (f" chunk {r['chunk_size']}" if r.get("chunk_size") else ""),
           ratio(r, "cpu_s"), ratio(r, "time_s"), ratio(r, "flops"))
          for r in cost if r["estimator"] != "yardstick" and (r["model"], r["n"]) in yard]
  if bars:
    labels, cpu_ratio, wall_ratio, flop_ratio = zip(*bars)
    where = np.arange(len(bars))
    ax.barh(where - 0.27, cpu_ratio, 0.27, label="CPU time")
    ax.barh(where, wall_ratio, 0.27, label="wall time")
    ax.barh(where + 0.27, flop_ratio, 0.27, label="XLA FLOPs")
    ax.set_yticks(where, labels, fontsize=5)
    ax.axvline(1.0, color="k", lw=0.8)
    ax.axvline(2.0, color="grey", lw=0.8, ls=":")
    ax.set(xscale="log", xlabel="distance + gradient / one PGD-10 training step",
           title="cost relative to adversarial training (dotted: 2x)")
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def _save(path, result, key):
  """Progress of this run's part `key`, in its own partial file."""
  path.write_text(json.dumps({k: v for k, v in result.items()
                              if k not in ("accuracy", "cost") or k == key}, indent=1))


def publish(out: pathlib.Path, stem: str, result: dict, parts) -> list[str]:
  """`<stem>.json`, `.md`, `.png` with this run's `parts` replaced; the rest kept.

  Re-reads the committed JSON now, so a part another run published meanwhile
  stays; writes to a temporary folder and moves the files into place.
  """
  final = out / f"{stem}.json"
  current = json.loads(final.read_text()) if final.exists() else {}
  current.update({k: v for k, v in result.items() if k not in ("accuracy", "cost")})
  for part in parts:
    current[part] = result[part]
  tables = []
  if "cost" in current:
    tables.append(cost_table(current["cost"]))
  if "accuracy" in current:
    tables.append(accuracy_table(current["accuracy"]))
  staging = out / f".{stem}.tmp"
  shutil.rmtree(staging, ignore_errors=True)
  staging.mkdir(parents=True)
  try:
    (staging / f"{stem}.json").write_text(json.dumps(current, indent=1))
    (staging / f"{stem}.md").write_text("\n\n".join(tables) + "\n")
    if "accuracy" in current:
      plots(current, staging / f"{stem}.png")
    for path in sorted(staging.iterdir()):
      os.replace(path, out / path.name)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return tables


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="small sweep (~10 min)")
  parser.add_argument("--skip-vgg", action="store_true")
  parser.add_argument("--only", choices=["cost", "accuracy", "report"], default=None,
                      help="run one part; 'report' only rewrites tables and plots")
  parser.add_argument("--accuracy-models", default="mlp,cnn",
                      help="models of the accuracy sweep; others already in the JSON stay")
  parser.add_argument("--accuracy-estimators", default=None,
                      help="estimators of the accuracy sweep (default: all); others' rows stay")
  parser.add_argument("--num-masks", type=int, default=None,
                      help="random masks for the rank correlation (0: skip; default 10)")
  parser.add_argument("--max-k", type=int, default=256, help="largest k of the accuracy sweep")
  parser.add_argument("--keys", type=int, default=48,
                      help="repetitions (keys) per k <= 16 in the accuracy sweep; half above")
  parser.add_argument("--cost-models", default="mlp,cnn,vgg16",
                      help="models of the cost sweep (comma-separated)")
  parser.add_argument("--cost-sizes", default="16,64,256",
                      help="batch sizes n of the MLP/CNN cost sweep (CNN: up to 64)")
  parser.add_argument("--vgg-batch", default="32",
                      help="batch sizes of the VGG-16 cost rows (comma-separated)")
  parser.add_argument("--vgg-estimators", default="random_projection,output_probes,output_probes_deflated")
  parser.add_argument("--vgg-repeats", type=int, default=2,
                      help="timed VGG-16 calls per row (median; 1 = no warm-up call)")
  parser.add_argument("--vgg-chunk-size", type=int, default=0,
                      help="probes/directions per pass of the VGG-16 estimator rows (0: all)")
  parser.add_argument("--vgg-skip-yardstick", action="store_true",
                      help="keep the JSON's VGG-16 yardstick rows (with --append-cost)")
  parser.add_argument("--vgg-parts", default="all,student",
                      help="'all' (teacher + student) and/or 'student' (student alone)")
  parser.add_argument("--vgg-exact-max-batch", type=int, default=8,
                      help="largest VGG-16 batch with an exact-distance row")
  parser.add_argument("--append-cost", action="store_true",
                      help="keep the JSON's other cost rows instead of replacing them")
  parser.add_argument("--out", default=str(RESULTS), help="results folder")
  parser.add_argument("--single", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.single:
    model_name, n, name, k, repeats, part, options = (json.loads(args.single) + [None])[:7]
    print(json.dumps(cost_one(model_name, n, name, k, repeats, options, part=part)),
          flush=True)
    return

  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  stem = "estimators_accuracy_quick" if args.quick else "estimators_accuracy"
  committed = out / f"{stem}.json"
  result = json.loads(committed.read_text()) if committed.exists() else {}
  result.update(device=str(jax.devices()[0]), jax=jax.__version__, quick=args.quick)
  parts = []

  if args.only in (None, "accuracy"):
    ks = [1, 2, 4, 8, 16, 32, 64] if args.quick else [1, 2, 4, 8, 16, 32, 64, 128, 256]
    many = 24 if args.quick else args.keys
    keys_for = lambda k: many if k <= 16 else max(many // 2, 2) if k <= 64 else max(many // 4, 2)
    ks = [k for k in ks if k <= args.max_k]
    result["accuracy"] = dict(result.get("accuracy", {}))
    names = args.accuracy_estimators.split(",") if args.accuracy_estimators else ESTIMATED
    num_masks = args.num_masks if args.num_masks is not None else 6 if args.quick else 10
    for model_name in args.accuracy_models.split(","):
      # Rows and ranks of the estimators not rerun now stay.
      earlier = result["accuracy"].get(model_name, {})
      kept_rows = [r for r in earlier.get("rows", []) if r["estimator"] not in names]
      kept_ranks = [r for r in earlier.get("ranks", []) if r["estimator"] not in names]

      def merged(new, kept_rows=kept_rows, kept_ranks=kept_ranks):
        return dict(new, rows=kept_rows + new["rows"], ranks=kept_ranks + new["ranks"])

      def save_partial(partial, model_name=model_name):
        result["accuracy"][model_name] = merged(partial)
        _save(out / f"{stem}.accuracy.partial.json", result, "accuracy")
      result["accuracy"][model_name] = merged(accuracy(
          model_name, 64, ks, keys_for, names=names, num_masks=num_masks,
          save_partial=save_partial))
      _save(out / f"{stem}.accuracy.partial.json", result, "accuracy")
    parts.append("accuracy")

  if args.only in (None, "cost"):
    rows = []
    sizes = [int(v) for v in args.cost_sizes.split(",")]
    cost_models = args.cost_models.split(",")
    for model_name, ns in (("mlp", sizes), ("cnn", [v for v in sizes if v <= 64])):
      if model_name not in cost_models:
        continue
      if args.quick:
        ns = ns[:2]
      for n in ns:
        rows.append(cost_in_subprocess(model_name, n, "yardstick", None, 3, 900))
        rows.append(cost_in_subprocess(model_name, n, "exact", None, 3, 900))
        for name in ESTIMATED:
          for k in ([8, 64] if n == 64 else [8]):
            rows.append(cost_in_subprocess(model_name, n, name, k, 3, 900))
            print(json.dumps(rows[-1]), flush=True)
    if not args.skip_vgg and "vgg16" in cost_models:
      for n in (int(v) for v in args.vgg_batch.split(",")):
        if not args.vgg_skip_yardstick:
          rows.append(cost_in_subprocess("vgg16", n, "yardstick", None, args.vgg_repeats,
                                         3600))
          print(json.dumps(rows[-1]), flush=True)
        for name in filter(None, args.vgg_estimators.split(",")):
          for part in filter(None, args.vgg_parts.split(",")):
            options = {"chunk_size": args.vgg_chunk_size} if args.vgg_chunk_size else None
            rows.append(cost_in_subprocess("vgg16", n, name, 8, args.vgg_repeats, 3600,
                                           part=part, options=options))
            print(json.dumps(rows[-1]), flush=True)
        if n <= args.vgg_exact_max_batch:
          rows.append(cost_in_subprocess("vgg16", n, "exact", None, 1, 3600))
          print(json.dumps(rows[-1]), flush=True)
    if args.append_cost:  # Keep earlier rows of other (model, n, estimator, part).
      def row_key(r):  # Rows from before `part` existed timed teacher + student.
        part = None if r["estimator"] == "yardstick" else r.get("part") or "all"
        return r["model"], r["n"], r["estimator"], r["k"], part, r.get("chunk_size")
      fresh = {row_key(r) for r in rows}
      rows = [r for r in result.get("cost", []) if row_key(r) not in fresh] + rows
    result["cost"] = rows
    parts.append("cost")

  tables = publish(out, stem, result, parts)
  for part in parts:
    (out / f"{stem}.{part}.partial.json").unlink(missing_ok=True)
  print("\n" + "\n\n".join(tables))
  print(f"\nwrote {committed}")


if __name__ == "__main__":
  main()
