"""Benchmark: our exact MTK against neural-tangents, on the paper's MLP and CNN.

For the paper's MLP (784-300-100-10) and CNN (`models.CNN()` defaults), both
on 28x28x1 inputs, at n = m = 8, 16, 32, 64, float32, full `(n, m, C, C)` and
traced `(n, m)`, it times

* ours: `scalable_awt.kernels.exact_mtk` with implementation "jacobian",
  "ntk_vector_products" and "structured", in the project's environment;
* neural-tangents 0.6.5: `empirical_ntk_fn` with implementations 1
  (Jacobian contraction), 2 (NTK-vector products) and 3 (structured
  derivatives), in the pinned environment `benchmarks/.nt-env` (jax 0.5.3;
  created on first use, see `nt_env.py`), with the models re-implemented as
  plain JAX functions (`_nt_worker.py`, checked equal to ours by
  `tests/test_kernels_reference.py`),

on the same inputs and parameters (saved to a temporary npz) on the same
machine. Each (side, model, implementation, n) runs in its own process:
compile time (lower + compile) is separate from run time (median of
`--repeats` calls after one warm-up call); memory is XLA's
`compiled.memory_analysis()` (temp + argument + output bytes) and the
process's peak RSS. Configurations whose Jacobian-sized memory would exceed
`--memory-limit-gb` are skipped with the estimate recorded.

Note: NT's `trace_axes=(-1,)` returns the mean over the outputs, ours the
sum; the cost is the same.

    python benchmarks/exact_kernel.py                      # full sweep
    python benchmarks/exact_kernel.py --quick --out /tmp/ek  # n = 8, 16; 3 repeats
    python benchmarks/exact_kernel.py --replot             # table and plot from the JSON

Writes exact_kernel.json, exact_kernel.md (the table) and exact_kernel.png
into `--out` (default benchmarks/results) and prints the table. Results are
never replaced by a partial run: while it runs, the sweep checkpoints to a
temporary file (its path is printed), and only a sweep that ran every
configuration without an error moves its three files into `--out`, each by
an atomic rename (a configuration that ran past `--timeout-s` counts as
finished: it is recorded as too slow). A subset sweep (`--quick`, `--sizes`, `--models`) needs an
explicit `--out`, so that it cannot replace the committed full sweep.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import pathlib
import platform
import shlex
import subprocess
import sys
import tempfile
import time

import numpy as np

BENCHMARKS = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHMARKS))

import _nt_worker  # noqa: E402  (numpy-only helpers)
import nt_env  # noqa: E402

RESULTS = BENCHMARKS / "results"
MODELS = {
    "mlp": dict(kwargs={}, example_shape=(28, 28, 1)),
    "cnn": dict(kwargs={}, example_shape=(28, 28, 1)),
}
OURS = ("jacobian", "ntk_vector_products", "structured")
NT = {1: "nt_jacobian_contraction", 2: "nt_ntk_vector_products",
      3: "nt_structured_derivatives"}
NUM_CLASSES = 10


def jacobian_bytes(model: str, n: int, m: int) -> int:
  """Bytes of both Jacobians, (n + m) · C · P float32: the memory of the
  Jacobian and NTK-vector-product implementations (the latter holds m · C
  parameter-sized vectors and their JVPs)."""
  shapes = _nt_worker.param_shapes(model, MODELS[model]["kwargs"],
                                   MODELS[model]["example_shape"])
  num_params = sum(math.prod(s) for s in shapes.values())
  return (n + m) * NUM_CLASSES * num_params * 4


def estimated_bytes(model: str, implementation: str, n: int) -> int | None:
  if implementation in ("structured", "nt_structured_derivatives"):
    return None  # Never forms a Jacobian of the big layers; checked after compiling.
  return jacobian_bytes(model, n, n)


def make_spec(model: str, n: int, seed: int, path: pathlib.Path, **extra) -> None:
  config = MODELS[model]
  params = _nt_worker.init_params(model, config["kwargs"], config["example_shape"], seed)
  rng = np.random.default_rng(seed + 1)
  x = rng.uniform(0.0, 1.0, (n, *config["example_shape"])).astype(np.float32)
  # A random-sign L∞ step of 0.1, clipped: the cost does not depend on how
  # the perturbation was found.
  x_adv = np.clip(x + 0.1 * rng.choice([-1.0, 1.0], x.shape), 0.0, 1.0).astype(np.float32)
  np.savez(path, model=np.array(model), model_kwargs=np.array(json.dumps(config["kwargs"])),
           x=x, x_adv=x_adv, **{f"params/{k}": v for k, v in params.items()},
           **{k: np.array(v) for k, v in extra.items()})


# ----------------------------------------------------------------------------
# Our side (runs in a subprocess of the project's python).
# ----------------------------------------------------------------------------

def run_ours_worker(spec_path: str, out_path: str) -> None:
  import jax
  import jax.numpy as jnp

  from scalable_awt import kernels, models

  spec, flat, x, x_adv = _nt_worker.load_bench_spec(spec_path)
  model = models.create_model(str(spec["model"]), **json.loads(str(spec["model_kwargs"])))
  apply_fn = models.make_apply_fn(model)
  params = jax.tree.map(jnp.asarray, _nt_worker.nest(flat))
  x, x_adv = jnp.asarray(x), jnp.asarray(x_adv)
  implementation = str(spec["implementation"])
  results = {"rss_at_start_bytes": _nt_worker._peak_rss_bytes(), "jax": jax.__version__,
             "backend": jax.default_backend()}
  for trace in (True, False):
    fn = jax.jit(lambda p, a, b, trace=trace: kernels.exact_mtk(
        apply_fn, p, a, b, trace_outputs=trace, implementation=implementation))
    results["traced" if trace else "full"] = _nt_worker.time_jitted(
        fn, (params, x, x_adv), repeats=int(spec["repeats"]),
        memory_limit_bytes=float(spec["memory_limit_bytes"]))
  with open(out_path, "w") as f:
    json.dump(results, f)


# ----------------------------------------------------------------------------
# Driver.
# ----------------------------------------------------------------------------

def _env(nt: bool) -> dict:
  env = dict(os.environ)
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  env.pop("XLA_FLAGS", None)  # No simulated devices: one CPU device, all threads.
  env["JAX_PLATFORMS"] = "cpu"
  if not nt:
    env["PYTHONPATH"] = os.pathsep.join(
        [str(BENCHMARKS.parent), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
  return env


def run_one(side: str, model: str, implementation: str, n: int, args, tmp: pathlib.Path,
            nt_python) -> dict:
  spec = tmp / f"{side}_{model}_{implementation}_{n}.npz"
  out = tmp / f"{side}_{model}_{implementation}_{n}.json"
  extra = dict(repeats=args.repeats, memory_limit_bytes=args.memory_limit_gb * 1e9)
  if side == "nt":
    number = {v: k for k, v in NT.items()}[implementation]
    extra["nt_implementation"] = number
    command = [str(nt_python), str(BENCHMARKS / "_nt_worker.py"), "bench", str(spec), str(out)]
  else:
    extra["implementation"] = implementation
    command = [sys.executable, str(pathlib.Path(__file__).resolve()), "--worker",
               str(spec), str(out)]
  make_spec(model, n, seed=args.seed, path=spec, **extra)
  start = time.perf_counter()
  try:
    proc = subprocess.run(command, env=_env(side == "nt"), capture_output=True, text=True,
                          timeout=args.timeout_s)
  except subprocess.TimeoutExpired:
    return {"error": f"timed out after {args.timeout_s} s"}
  wall = time.perf_counter() - start
  if proc.returncode != 0 or not out.exists():
    tail = "\n".join((proc.stderr or "").strip().splitlines()[-5:])
    return {"error": f"exit {proc.returncode}: {tail}"}
  result = json.loads(out.read_text())
  result["process_wall_s"] = wall
  return result


def plan(args) -> list[tuple[str, str, str, int]]:
  """(side, model, implementation, n), cheapest families first.

  The CNN's Jacobian-sized implementations (seconds per call already at
  n = 8) come last, so that the time budget cuts them rather than the rest.
  """
  fast = [("ours", "structured"), ("nt", NT[3])]
  slow = [("ours", "jacobian"), ("nt", NT[1]), ("ours", "ntk_vector_products"),
          ("nt", NT[2])]
  jobs = []
  for families in (fast, slow):
    for model in args.models:
      for n in args.sizes:
        jobs += [(side, model, implementation, n) for side, implementation in families]
  return jobs


def sweep(args, checkpoint) -> dict:
  nt_python = nt_env.ensure()
  records = []
  started = time.perf_counter()
  previous: dict = {}  # (side, model, implementation) -> (n, slowest median)
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    for side, model, implementation, n in plan(args):
      estimate = estimated_bytes(model, implementation, n)
      base = dict(model=model, n=n, m=n, side=side, implementation=implementation,
                  estimated_jacobian_bytes=estimate)
      reason = None
      if estimate is not None and estimate > args.memory_limit_gb * 1e9:
        reason = (f"estimated {estimate / 1e9:.1f} GB ((n+m)·C·P float32) > "
                  f"{args.memory_limit_gb} GB limit")
      elif (side, model, implementation) in previous:
        n_prev, t_prev = previous[(side, model, implementation)]
        projected = t_prev * n / n_prev  # at least linear in n
        if projected > args.max_call_s:
          reason = (f"too slow: {t_prev:.1f} s per call at n={n_prev}, projected "
                    f">= {projected:.0f} s at n={n} > --max-call-s {args.max_call_s}")
      if reason is None and time.perf_counter() - started > args.budget_s:
        reason = f"sweep time budget ({args.budget_s} s) used up"
      if reason is not None:
        for trace in (True, False):
          records.append({**base, "traced": trace, "skipped": reason})
        print(f"skip {side:4s} {model} n={n:3d} {implementation}: {reason}", file=sys.stderr)
        checkpoint(records, started)
        continue
      result = run_one(side, model, implementation, n, args, tmp, nt_python)
      medians = []
      for trace in (True, False):
        key = "traced" if trace else "full"
        record = {**base, "traced": trace}
        if "error" in result:
          record["error"] = result["error"]
        else:
          record.update(result[key])
          record["rss_at_start_bytes"] = result["rss_at_start_bytes"]
          record["jax"] = result["jax"]
          record["process_wall_s"] = result["process_wall_s"]
          if trace is False:
            record["peak_rss_note"] = "max over the traced and full runs of this process"
          if record.get("median_s") is not None:
            medians.append(record["median_s"])
        records.append(record)
      if medians:
        previous[(side, model, implementation)] = (n, max(medians))
      shown = {k: result.get(k, {}).get("median_s") for k in ("traced", "full")}
      print(f"{side:4s} {model} n={n:3d} {implementation:26s} "
            f"traced {_fmt(shown['traced'])}  full {_fmt(shown['full'])}  "
            f"{result.get('error', '')[:200]}", file=sys.stderr)
      checkpoint(records, started)
  return {"records": records, "sweep_wall_s": time.perf_counter() - started}


def _fmt(seconds) -> str:
  return "    -    " if seconds is None else f"{seconds * 1e3:9.2f} ms"


def _cpu_model() -> str:
  try:
    for line in open("/proc/cpuinfo"):
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor()


def summary_rows(records) -> list[dict]:
  rows = []
  keys = sorted({(r["model"], r["n"], r["traced"]) for r in records},
                key=lambda k: (k[0] != "mlp", k[2], k[1]))
  for model, n, traced in keys:
    mine = [r for r in records if (r["model"], r["n"], r["traced"]) == (model, n, traced)]
    times = {r["implementation"]: r.get("median_s") for r in mine}
    row = {"model": model, "n": n, "traced": traced, "times": times}
    for side, names in (("ours", OURS), ("nt", tuple(NT.values()))):
      timed = [(times[k], k) for k in names if times.get(k) is not None]
      row[f"best_{side}"] = min(timed) if timed else None
    if row["best_ours"] and row["best_nt"]:
      row["ratio"] = row["best_ours"][0] / row["best_nt"][0]
    rows.append(row)
  return rows


def markdown(rows) -> str:
  columns = [*OURS, *NT.values()]
  short = {"jacobian": "ours jac", "ntk_vector_products": "ours nvp",
           "structured": "ours struct", "nt_jacobian_contraction": "NT 1 jac",
           "nt_ntk_vector_products": "NT 2 nvp", "nt_structured_derivatives": "NT 3 struct"}
  lines = ["| model | n=m | kernel | " + " | ".join(short[c] for c in columns)
           + " | best ours / best NT |",
           "|---|---:|---|" + "---:|" * len(columns) + "---:|"]
  for row in rows:
    cells = []
    for c in columns:
      t = row["times"].get(c)
      cells.append("skip" if t is None else f"{t * 1e3:.1f}")
    ratio = f"{row['ratio']:.2f}" if "ratio" in row else "-"
    kernel = "traced (n,m)" if row["traced"] else "full (n,m,C,C)"
    lines.append(f"| {row['model']} | {row['n']} | {kernel} | " + " | ".join(cells)
                 + f" | {ratio} |")
  lines.append("")
  lines.append("Times in ms: median of the repeats after compilation, float32, CPU; "
               "'skip' = not run: over the memory limit or the sweep's time budget "
               "(the reason is in the JSON record). "
               "Ratio < 1: our best is faster than NT's best.")
  return "\n".join(lines)


def markdown_document(result: dict) -> str:
  """exact_kernel.md: the table with the command, date and machine it came from."""
  machine = result["machine"]
  load = machine.get("load_average_at_end")
  load_text = (f", load average {load[0]:.1f} at the end (other jobs share the cores)"
               if load else "")
  return "\n".join([
      "# Exact MTK: ours against neural-tangents 0.6.5",
      "",
      f"`{result['command']}` on {result['date']}, {machine['cpu']} "
      f"({machine['cpu_count']} cores{load_text}), jax {result.get('jax', '?')} for ours, "
      f"jax 0.5.3 for neural-tangents; float32, CPU. Each (side, model, implementation, n) "
      "ran in its own process; best ours / best NT compares the fastest of our three "
      "implementations with the fastest of NT's three on the same inputs in the same sweep.",
      "",
      result["markdown"],
      "",
  ])


def publish(files: dict[str, bytes | str], out_dir: pathlib.Path) -> None:
  """Writes `files` (name -> content) into `out_dir`, each by an atomic rename.

  Every file is first written completely next to its destination; only then
  are they renamed into place, so an interruption while writing leaves the
  previous results as they were.
  """
  out_dir.mkdir(parents=True, exist_ok=True)
  umask = os.umask(0)
  os.umask(umask)
  staged = []
  try:
    for name, content in files.items():
      handle, temporary = tempfile.mkstemp(dir=out_dir, prefix=f".{name}.", suffix=".tmp")
      with os.fdopen(handle, "wb") as f:
        f.write(content.encode() if isinstance(content, str) else content)
      os.chmod(temporary, 0o666 & ~umask)  # mkstemp's 0600 is for secrets
      staged.append((temporary, out_dir / name))
    for temporary, destination in staged:
      os.replace(temporary, destination)
  finally:
    for temporary, _ in staged:
      if os.path.exists(temporary):
        os.remove(temporary)


def plot_png(records) -> bytes:
  with tempfile.TemporaryDirectory() as tmp:
    path = pathlib.Path(tmp) / "plot.png"
    plot(records, path)
    return path.read_bytes()


def plot(records, path: pathlib.Path) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  models = sorted({r["model"] for r in records}, key=lambda m: m != "mlp")
  fig, axes = plt.subplots(2, len(models), figsize=(6 * len(models), 8), squeeze=False)
  styles = {"jacobian": ("C0", "-"), "ntk_vector_products": ("C1", "-"),
            "structured": ("C2", "-"), "nt_jacobian_contraction": ("C0", "--"),
            "nt_ntk_vector_products": ("C1", "--"), "nt_structured_derivatives": ("C2", "--")}
  for col, model in enumerate(models):
    for row, traced in enumerate((False, True)):
      ax = axes[row][col]
      for implementation, (color, style) in styles.items():
        points = sorted((r["n"], r["median_s"]) for r in records
                        if r["model"] == model and r["traced"] == traced
                        and r["implementation"] == implementation and r.get("median_s"))
        if points:
          ns, ts = zip(*points)
          label = implementation if implementation.startswith("nt_") else f"ours: {implementation}"
          ax.plot(ns, ts, style, color=color, marker="o" if style == "-" else "s",
                  label=label)
      ax.set_xscale("log", base=2)
      ax.set_yscale("log")
      ax.set_xlabel("n = m")
      ax.set_ylabel("time per kernel (s)")
      kind = "traced (n, m)" if traced else "full (n, m, C, C)"
      ax.set_title(f"{model.upper()}, {kind}")
      ax.grid(True, which="both", alpha=0.3)
      ax.legend(fontsize=7)
  fig.suptitle("Exact MTK: ours (solid) vs neural-tangents 0.6.5 (dashed), CPU float32")
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--worker", nargs=2, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
  parser.add_argument("--replot", action="store_true",
                      help="only redo the table and plot from an existing --out JSON")
  parser.add_argument("--quick", action="store_true", help="n = 8, 16 and 3 repeats")
  parser.add_argument("--sizes", type=int, nargs="+", default=None)
  parser.add_argument("--models", nargs="+", default=["mlp", "cnn"], choices=sorted(MODELS))
  parser.add_argument("--repeats", type=int, default=None)
  parser.add_argument("--memory-limit-gb", type=float, default=6.0)
  parser.add_argument("--timeout-s", type=int, default=900)
  parser.add_argument("--max-call-s", type=float, default=20.0,
                      help="skip larger n once the projected time per call exceeds this")
  parser.add_argument("--budget-s", type=float, default=1500.0,
                      help="start no new configuration after this many seconds")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", default=None, metavar="DIR",
                      help=f"directory for exact_kernel.{{json,md,png}} (default {RESULTS}; "
                           "required for a subset sweep)")
  args = parser.parse_args()
  if args.worker:
    run_ours_worker(*args.worker)
    return
  command = "python benchmarks/exact_kernel.py" + "".join(
      f" {shlex.quote(a)}" for a in sys.argv[1:])
  if args.replot:
    out_dir = pathlib.Path(args.out or RESULTS)
    result = json.loads((out_dir / "exact_kernel.json").read_text())
    rows = summary_rows(result["records"])
    result["summary"], result["markdown"] = rows, markdown(rows)
    result.setdefault("command", "python benchmarks/exact_kernel.py")
    publish({"exact_kernel.json": json.dumps(result, indent=1),
             "exact_kernel.md": markdown_document(result),
             "exact_kernel.png": plot_png(result["records"])}, out_dir)
    print(result["markdown"])
    return
  subset = args.quick or args.sizes is not None or args.models != ["mlp", "cnn"]
  if subset and args.out is None:
    parser.error("a subset sweep (--quick, --sizes, --models) needs an explicit --out DIR, "
                 f"so that it cannot replace the full sweep in {RESULTS}")
  if args.sizes is None:
    args.sizes = [8, 16] if args.quick else [8, 16, 32, 64]
  if args.repeats is None:
    args.repeats = 3 if args.quick else 5

  out_dir = pathlib.Path(args.out or RESULTS)
  # Checkpoints go to a temporary file, never to out_dir: a sweep that is
  # interrupted or fails leaves the published results untouched.
  handle, partial = tempfile.mkstemp(prefix="exact_kernel.partial.", suffix=".json")
  os.close(handle)
  partial = pathlib.Path(partial)
  print(f"checkpointing to {partial}; results go to {out_dir} when every "
        "configuration has finished", file=sys.stderr)

  def report(result: dict, final: bool) -> str:
    rows = summary_rows(result["records"])
    table = markdown(rows)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    result.update({
        "complete": final,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": _cpu_model(), "cpu_count": os.cpu_count(),
                    "load_average_at_end": load, "platform": platform.platform(),
                    "note": ("CPU only; a small shared machine (cpu_count cores shared with "
                             "other jobs, load average above), so absolute times are noisy; "
                             "both sides ran on the same machine in the same sweep, one "
                             "process per (side, model, implementation, n).")},
        "settings": {"sizes": args.sizes, "models": args.models, "repeats": args.repeats,
                     "memory_limit_gb": args.memory_limit_gb, "max_call_s": args.max_call_s,
                     "budget_s": args.budget_s, "dtype": "float32", "quick": args.quick,
                     "seed": args.seed,
                     "models_kwargs": {k: MODELS[k]["kwargs"] for k in args.models},
                     "example_shape": [28, 28, 1]},
        "versions": {"nt_env_pins": list(nt_env.PINS)},
        "summary": rows,
        "markdown": table,
        "command": command,
        "jax": next((r["jax"] for r in result["records"]
                     if r["side"] == "ours" and "jax" in r), None),
        "nt_traced_convention": "NT's trace_axes=(-1,) is the mean over outputs; ours the sum",
    })
    partial.write_text(json.dumps(result, indent=1))
    return table

  def checkpoint(records, started):
    report({"records": records, "sweep_wall_s": time.perf_counter() - started}, final=False)

  result = sweep(args, checkpoint)
  table = report(result, final=True)
  print(table)
  # A configuration that crashed makes the sweep incomplete; one that ran
  # past --timeout-s is a measurement (too slow here), recorded like a skip.
  errors = [r for r in result["records"]
            if "error" in r and not r["error"].startswith("timed out")]
  if errors:
    print(f"\n{len(errors)} records failed (first: {errors[0]['error'][:300]}); "
          f"{out_dir} left unchanged, results in {partial}", file=sys.stderr)
    sys.exit(1)
  publish({"exact_kernel.json": json.dumps(result, indent=1),
           "exact_kernel.md": markdown_document(result),
           "exact_kernel.png": plot_png(result["records"])}, out_dir)
  partial.unlink()
  print(f"\nwrote exact_kernel.json, exact_kernel.md and exact_kernel.png in {out_dir}")


if __name__ == "__main__":
  main()
