"""Benchmark: the cost of one AWT search step against one PGD-10 training step.

For the paper's MLP (784-300-100-10 on 28x28x1), the package's CNN and VGG-16
(`models.create_model("vgg16")`, batch norm) on CIFAR shapes (32x32x3), at
each batch size, it measures

* (a) `train`: one PGD-10 adversarial training step
  (`adversarial_training.make_train_step`), the unit of every ratio;
* (b) `search/<estimator>`: the search step as it stood
  (`ticket_search.make_search_step`: teacher PGD-10 + student PGD-10 every
  step, kernel term on `kernel_batch` = 32 rows every step), with every
  estimator at k = 8 (`diagonal`/`block_diagonal` at all positions, as the
  paper's S-AWT; `exact` for MLP/CNN only);
* (c) `default` and `default_bf16`: the proposed cheap step: teacher cache
  hit (no teacher PGD: `teacher_cache.make_cached_search_step` serves it),
  `output_probes_deflated` at k = 8 on `kernel_batch` = 8 rows every
  `kernel_period` = 8 steps, in float32 / with the kernel term in bfloat16.
  Its two kinds of update (with / without the kernel term) are compiled and
  measured apart (`ticket_search.make_student_step(kernel=True/False)`);
  time and FLOPs are amortised over a period, `(on + 7·off) / 8`, memory is
  the larger of the two. `host` times the real host-level cached step
  (cache warm, `lax.cond` choosing the branch) at a step with and one
  without the kernel term, to show that the conditional really skips the
  work and what the host's cache lookup adds.

Per case: compile time (`jit(f).lower(...).compile()`), XLA FLOPs
(`compiled.cost_analysis()["flops"]`), memory (`compiled.memory_analysis()`:
`xla_bytes` = temp + argument + output bytes, the buffers alive during the
step, aliasing ignored; the host cache of (c) lives in host RAM and is
reported apart as `cache_bytes_cifar`/`_mnist`, its size for the whole
training set in float16), and the median wall time of `--repeats` calls after
one warm-up call (a case whose first call takes over 20 s is timed by that
call alone: a compiled program's first call includes no compilation).

    python benchmarks/search_cost.py          # MLP/CNN at 32, 64; VGG-16 at 32
    python benchmarks/search_cost.py --models mlp,cnn --batches 32 --quick

Writes `<out>/search_cost[<suffix>].json` and `.png` (ratios to (a)); the
suffix names the subset when the run is not the full default one, so a
partial run never replaces the full results. Files are written to a
temporary name and moved into place only when every requested case has
finished. Each finished case is also printed as one JSON line (a log of
partial results for long runs).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from scalable_awt import (adversarial_training, config_schema, estimators, models,
                          ticket_search)

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
# `estimator_cases`: whether the (b) cases run. On VGG-16 each of them costs
# about ten minutes on 2 CPU cores (compile + one step) and none is a candidate
# default (the issue measured output probes at 5.9x a PGD-10 step), so the
# default run measures VGG-16's (a), (c) float32 and host cases only, at batch
# 32; `--all-cases` measures everything.
MODELS = {
    "mlp": dict(kwargs={}, example_shape=(28, 28, 1), exact=True, estimator_cases=True,
                batches=(32, 64)),
    "cnn": dict(kwargs={}, example_shape=(32, 32, 3), exact=True, estimator_cases=True,
                batches=(32, 64)),
    "vgg16": dict(kwargs={}, example_shape=(32, 32, 3), exact=False, estimator_cases=False,
                  batches=(32,)),
}
ESTIMATORS = estimators.NAMES
K = 8  # Probes / directions: the operating point.
EPSILON, STEP_SIZE, PGD_STEPS = 8 / 255, 2 / 255, 10
# The cheap search that configs/vgg16_cifar10.py (and any config's `:cheap`) runs.
DEFAULT = dict(config_schema.CHEAP_SEARCH)
SLOW_S = 20.0  # A first call this slow is its own timing.


def _flops(compiled) -> float | None:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return float(cost["flops"]) if cost and "flops" in cost else None


def _memory(compiled) -> dict:
  m = compiled.memory_analysis()
  if m is None:
    return {}
  parts = {name: int(getattr(m, f"{name}_size_in_bytes"))
           for name in ("temp", "argument", "output", "alias")}
  return dict(parts, xla_bytes=parts["temp"] + parts["argument"] + parts["output"])


def _block(tree):
  return jax.block_until_ready(tree)


def _time(call, repeats: int) -> tuple[float, int]:
  start = time.perf_counter()
  _block(call())
  first = time.perf_counter() - start
  if first > SLOW_S or repeats < 1:
    return first, 1
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    _block(call())
    times.append(time.perf_counter() - start)
  return statistics.median(times), len(times)


def measure(fn, args, repeats: int) -> dict:
  """Compile time, FLOPs, memory and median time of `jit(fn)(*args)`."""
  start = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  compile_s = time.perf_counter() - start
  time_s, runs = _time(lambda: compiled(*args), repeats)
  return dict(compile_s=compile_s, flops=_flops(compiled), time_s=time_s, time_runs=runs,
              **_memory(compiled))


def _search_settings(batch: int, **overrides) -> ticket_search.SearchSettings:
  base = dict(density=0.1, kernel_weight=1e-3, kernel_batch=min(32, batch),
              epsilon=EPSILON, attack_step_size=STEP_SIZE, attack_steps=PGD_STEPS,
              domain=(0.0, 1.0))
  return ticket_search.SearchSettings(**dict(base, **overrides))


def _problem(model_name: str, batch: int):
  spec = MODELS[model_name]
  model = models.create_model(model_name, num_classes=10, **spec["kwargs"])
  params, model_state = models.init_model(model, jax.random.key(0),
                                          (1,) + spec["example_shape"])
  rng = np.random.default_rng(0)
  batch_arrays = {
      "image": jnp.asarray(rng.uniform(size=(batch,) + spec["example_shape"]), jnp.float32),
      "label": jnp.asarray(rng.integers(0, 10, size=batch), jnp.int32),
      "index": jnp.arange(batch, dtype=jnp.int32)}
  return model, params, model_state, batch_arrays


def _train_case(model, params, model_state, batch, repeats):
  tx = optax.sgd(0.01, momentum=0.9)
  state = adversarial_training.create_train_state(params, model_state, tx)
  step = adversarial_training.make_train_step(
      model, tx, epsilon=EPSILON, step_size=STEP_SIZE, num_steps=PGD_STEPS)
  return measure(step, (state, batch, jax.random.key(1)), repeats)


def _search_case(apply_fn, params, batch, estimator, repeats):
  settings = _search_settings(
      batch["label"].shape[0], estimator=estimator,
      num_samples=None if estimator in ("exact", "diagonal", "block_diagonal") else K)
  tx = optax.adam(5e-4)
  state = ticket_search.init_search_state(params, tx, settings)
  step = ticket_search.make_search_step(apply_fn, tx, settings)
  return measure(step, (state, batch, jax.random.key(1)), repeats)


def _default_case(apply_fn, params, batch, repeats, precision):
  """The cheap step's two kinds of update, measured apart, then amortised."""
  settings = _search_settings(batch["label"].shape[0], precision=precision, **DEFAULT)
  tx = optax.adam(5e-4)
  state = ticket_search.init_search_state(params, tx, settings)
  teacher = jax.jit(ticket_search.make_teacher_fn(apply_fn, settings))(
      params, batch["image"], batch["label"], jax.random.key(0))
  args = (state, batch, teacher, jax.random.key(1))
  parts = {}
  for name, kernel in (("kernel_on", True), ("kernel_off", False)):
    parts[name] = measure(ticket_search.make_student_step(apply_fn, tx, settings,
                                                          kernel=kernel), args, repeats)
  n = settings.kernel_period
  on, off = parts["kernel_on"], parts["kernel_off"]
  result = dict(parts, settings={k: v for k, v in DEFAULT.items()}, precision=precision,
                compile_s=on["compile_s"] + off["compile_s"],
                time_s=(on["time_s"] + (n - 1) * off["time_s"]) / n,
                flops=((on["flops"] + (n - 1) * off["flops"]) / n
                       if on["flops"] is not None else None))
  if "xla_bytes" in on:
    result["xla_bytes"] = max(on["xla_bytes"], off["xla_bytes"])
  return result


def _host_case(apply_fn, params, batch, repeats):
  """The real cached step (cache warm): its time at a kernel and a non-kernel step."""
  from scalable_awt import teacher_cache
  settings = _search_settings(batch["label"].shape[0], **DEFAULT)
  tx = optax.adam(5e-4)
  state = ticket_search.init_search_state(params, tx, settings)
  size = batch["label"].shape[0]
  start = time.perf_counter()
  step = teacher_cache.make_cached_search_step(apply_fn, tx, settings, num_examples=size)
  _block(step(state, batch, jax.random.key(1)))  # Fills the cache, compiles.
  fill_s = time.perf_counter() - start
  _block(step(state.replace(step=jnp.asarray(1, jnp.int32)), batch, jax.random.key(1)))
  step.cache.hits = step.cache.misses = 0  # Count the timed calls only.
  result = {"fill_and_compile_s": fill_s}
  for name, s in (("kernel_on", 0), ("kernel_off", 1)):
    at = state.replace(step=jnp.asarray(s, jnp.int32))
    result[f"time_{name}_s"], result["time_runs"] = _time(
        lambda: step(at, batch, jax.random.key(1)), repeats)
  result["cache_hits"] = step.cache.hits / max(1, step.cache.hits + step.cache.misses)
  return result


def run_model(model_name: str, batch_size: int, estimator_names, repeats: int, log,
              all_cases: bool = False):
  model, params, model_state, batch = _problem(model_name, batch_size)
  apply_fn = models.make_apply_fn(model, model_state)
  spec = MODELS[model_name]
  per_example = (int(np.prod(spec["example_shape"])) + 10) * 2
  row = {"model": model_name, "batch": batch_size,
         "params": int(sum(p.size for p in jax.tree.leaves(params))),
         "cache_bytes_cifar": 50_000 * per_example, "cache_bytes_mnist": 60_000 * per_example,
         "cases": {}}

  def record(name, fn):
    start = time.perf_counter()
    result = fn()
    result["wall_s"] = time.perf_counter() - start
    row["cases"][name] = result
    flat = {k: v for k, v in result.items() if not isinstance(v, dict)}
    for part in ("kernel_on", "kernel_off"):
      if isinstance(result.get(part), dict):
        flat.update({f"{part}_{k}": result[part].get(k)
                     for k in ("time_s", "flops", "xla_bytes", "compile_s")})
    log({"model": model_name, "batch": batch_size, "case": name, **flat})

  record("train", lambda: _train_case(model, params, model_state, batch, repeats))
  record("default", lambda: _default_case(apply_fn, params, batch, repeats, "float32"))
  if all_cases or spec["estimator_cases"]:
    record("default_bf16", lambda: _default_case(apply_fn, params, batch, repeats, "bfloat16"))
  else:
    estimator_names = []
  for name in estimator_names:
    if name == "exact" and not spec["exact"]:
      continue
    record(f"search/{name}", lambda: _search_case(apply_fn, params, batch, name, repeats))
  record("host", lambda: _host_case(apply_fn, params, batch, repeats))

  train = row["cases"]["train"]
  for name, case in row["cases"].items():
    if name in ("train", "host"):
      continue
    case["time_ratio"] = case["time_s"] / train["time_s"]
    if case.get("flops") and train.get("flops"):
      case["flops_ratio"] = case["flops"] / train["flops"]
    if case.get("xla_bytes") and train.get("xla_bytes"):
      case["memory_ratio"] = case["xla_bytes"] / train["xla_bytes"]
  return row


def plot(rows, path):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, len(rows), figsize=(4.2 * len(rows), 4.2), squeeze=False)
  for ax, row in zip(axes[0], rows):
    names = [n for n in row["cases"] if "time_ratio" in row["cases"][n]]
    xs = np.arange(len(names))
    time_r = [row["cases"][n]["time_ratio"] for n in names]
    flops_r = [row["cases"][n].get("flops_ratio", np.nan) for n in names]
    ax.bar(xs - 0.2, time_r, 0.4, label="time")
    ax.bar(xs + 0.2, flops_r, 0.4, label="XLA FLOPs")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.axhline(2.0, color="r", lw=0.8, ls="--", label="2× (issue 21 goal)")
    ax.set_yscale("log")
    ax.set_xticks(xs)
    ax.set_xticklabels([n.replace("search/", "") for n in names], rotation=60,
                       ha="right", fontsize=7)
    ax.set_title(f"{row['model']}, batch {row['batch']}", fontsize=9)
    ax.set_ylabel("cost / one PGD-10 training step")
  axes[0][0].legend(fontsize=7)
  fig.suptitle("Search step cost relative to a PGD-10 training step", fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110, format="png")
  plt.close(fig)


def _write_atomic(path: pathlib.Path, write):
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  os.close(fd)
  try:
    write(tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def _suffix(args, model_names, batches, estimator_names) -> str:
  if (model_names == list(MODELS) and not batches
      and estimator_names == list(ESTIMATORS) and not args.quick and not args.all_cases):
    return ""
  parts = ["-".join(model_names)] + (["b" + "-".join(map(str, batches))] if batches else [])
  if args.all_cases:
    parts.append("all-cases")
  if estimator_names != list(ESTIMATORS):
    parts.append("-".join(estimator_names) or "no-estimators")
  if args.quick:
    parts.append("quick")
  return "_" + "_".join(parts)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--models", default=",".join(MODELS))
  parser.add_argument("--batches", default="",
                      help="batch sizes for every model (default: each model's own, "
                           "32,64 for MLP/CNN and 32 for VGG-16)")
  parser.add_argument("--all-cases", action="store_true",
                      help="also VGG-16's per-estimator and bfloat16 cases (hours on CPU)")
  parser.add_argument("--estimators", default=",".join(ESTIMATORS),
                      help="estimators of the (b) cases ('' for none)")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--out", default=str(RESULTS))
  parser.add_argument("--quick", action="store_true",
                      help="smoke test: output_probes_deflated (and exact) only, 1 repeat")
  args = parser.parse_args(argv)
  model_names = [m for m in args.models.split(",") if m]
  unknown = [m for m in model_names if m not in MODELS]
  if unknown:
    parser.error(f"unknown models {unknown}; choose from {list(MODELS)}")
  batches = [int(b) for b in args.batches.split(",") if b]
  plan = [(m, b) for m in model_names for b in (batches or MODELS[m]["batches"])]
  estimator_names = [e for e in args.estimators.split(",") if e]
  if args.quick:
    estimator_names = [e for e in estimator_names if e in ("exact", "output_probes_deflated")]
    args.repeats = 1
  bad = [e for e in estimator_names if e not in ESTIMATORS]
  if bad:
    parser.error(f"unknown estimators {bad}; choose from {list(ESTIMATORS)}")

  def log(entry):
    print(json.dumps(entry, default=float), flush=True)

  started = datetime.datetime.now(datetime.timezone.utc)
  rows = [run_model(m, b, estimator_names, args.repeats, log, args.all_cases)
          for m, b in plan]
  result = {
      "benchmark": "search_cost", "started": started.isoformat(timespec="seconds"),
      "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                  "loadavg_at_end": os.getloadavg(), "jax": jax.__version__,
                  "backend": jax.default_backend()},
      "settings": {"epsilon": EPSILON, "step_size": STEP_SIZE, "pgd_steps": PGD_STEPS,
                   "k": K, "default": DEFAULT, "repeats": args.repeats,
                   "all_cases": args.all_cases,
                   "memory": "xla_bytes = temp + argument + output (compiled.memory_analysis)",
                   "time": "median wall seconds after one warm-up call; default*: "
                           "(kernel_on + (period-1) kernel_off) / period"},
      "rows": rows}
  stem = "search_cost" + _suffix(args, model_names, batches, estimator_names)
  out = pathlib.Path(args.out)

  def write_json(tmp):
    with open(tmp, "w") as f:
      json.dump(result, f, indent=1, default=float)
  _write_atomic(out / f"{stem}.json", write_json)
  _write_atomic(out / f"{stem}.png", lambda tmp: plot(rows, tmp))
  print_table(rows)
  print(f"wrote {out / stem}.json and .png", file=sys.stderr)


def print_table(rows):
  print("| model | batch | case | time ratio | FLOPs ratio | memory (MB) | compile (s) |")
  print("| --- | --- | --- | --- | --- | --- | --- |")
  for row in rows:
    for name, case in row["cases"].items():
      if name == "host":
        continue
      print(f"| {row['model']} | {row['batch']} | {name} | "
            f"{case.get('time_ratio', 1.0):.2f} | {case.get('flops_ratio', 1.0):.2f} | "
            f"{case.get('xla_bytes', 0) / 1e6:.0f} | {case['compile_s']:.1f} |")


if __name__ == "__main__":
  main()
