"""Sweeps of the runner over densities and methods: the reproduction tables.

Each (density) point is one ordinary run of `scalable_awt.train.train_and_evaluate`
in its own workdir under `--runs` (so a killed sweep resumes where it stopped,
and a finished point returns at once); dense, which has no density, runs once.
The rows of every run are collected into

    benchmarks/results/<name>.json   {"rows": [...], "settings": ..., "paper": ...}
    benchmarks/results/<name>.md     the table, the paper's figures beside ours
    benchmarks/results/<name>.png    robust accuracy vs density, one line per method
    benchmarks/results/<name>_curves.png  robust accuracy per training epoch

Each row is `{"method", "density", "natural_accuracy", "robust_accuracy":
{"pgd<k>": ..., "apgd_ce": ...}, "epochs_search", "epochs_train",
"search_wall_s", "wall_time_s", "workdir", "curve"}`, accuracies as fractions.

Presets (the README's reproduction commands); any `--set group.key=value`
after them overrides the preset (e.g. shorter schedules):

    python benchmarks/sweep.py table1          # MNIST MLP, paper Table 1
    python benchmarks/sweep.py cnn_mnist       # MNIST CNN, AWT vs random (Fig. 6)
    python benchmarks/sweep.py estimators_mlp  # tickets from each estimator
    python benchmarks/sweep.py vgg16_cpu       # VGG-16/CIFAR-10, shortened, on CPU

A long schedule can run one density per sweep (`--densities 0.087 --name A`,
`--densities 0.036 --name B`); `--merge A B --name C` then writes them as one
table, refusing sweeps whose settings differ.
"""

from __future__ import annotations

import argparse
import ast
import copy
import dataclasses
import importlib.util
import json
import os
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

# The paper's figures (../shared/docs/method.md), percent, natural / PGD.
PAPER_TABLE1 = {
    "dense": {1.0: (98.96, 91.14)},
    "awt (paper)": {0.513: (99.13, 91.21), 0.169: (96.58, 89.30), 0.087: (94.48, 87.51),
                    0.036: (91.74, 83.60), 0.018: (87.69, 78.66)},
    "iterative pruning + AT (paper)": {
        0.513: (98.07, 60.14), 0.169: (97.73, 59.91), 0.087: (97.20, 57.60),
        0.036: (95.58, 48.81), 0.018: (92.67, 38.23)},
}
PAPER_VGG = {  # Adversarial test accuracy (%), paper Table 2, and HYDRA.
    "S-AWT (paper)": {0.10: (None, 46.68), 0.05: (None, 45.87)},
    "IWI (paper)": {0.10: (None, 47.53), 0.05: (None, 47.59)},
    "WT (paper)": {0.10: (None, 40.10), 0.05: (None, 45.15)},
    "HYDRA (Sehwag et al. 2020)": {0.10: (None, 49.5), 0.05: (None, 48.7)},
}


@dataclasses.dataclass
class Preset:
  config: str  # Config file under configs/.
  densities: tuple[float, ...]
  methods: tuple[str, ...]  # Masked methods, run at every density.
  dense: bool = True  # Also run the dense network once.
  overrides: tuple[str, ...] = ()
  paper: dict | None = None
  # Several estimators: one run per (density, estimator) for the "awt" method,
  # reported as "awt[<estimator>]".
  estimators: tuple[str, ...] = ()


PRESETS = {
    "table1": Preset(
        config="mlp_mnist.py", densities=(0.513, 0.169, 0.087, 0.036, 0.018),
        methods=("awt", "random"), paper=PAPER_TABLE1,
        overrides=("data.data_dir=data/mnist", "eval.attacks=('pgd','apgd_ce')",
                   "eval.pgd_steps=100")),
    "cnn_mnist": Preset(
        config="cnn_mnist.py", densities=(0.05, 0.03, 0.01),
        methods=("awt", "random"),
        overrides=("data.data_dir=data/mnist", "eval.attacks=('pgd','apgd_ce')",
                   "eval.pgd_steps=100")),
    "estimators_mlp": Preset(
        # The random mask of the same density is the floor every estimator must beat.
        config="mlp_mnist.py", densities=(0.036,), methods=("random",), dense=False,
        estimators=("exact", "diagonal", "random_projection", "output_probes",
                    "output_probes_deflated"),
        overrides=("data.data_dir=data/mnist", "eval.attacks=('pgd','apgd_ce')",
                   "eval.pgd_steps=100")),
    "estimators_cnn": Preset(
        # The random mask of the same density is the floor every estimator must beat.
        config="cnn_mnist.py", densities=(0.03,), methods=("random",), dense=False,
        estimators=("exact", "diagonal", "random_projection", "output_probes",
                    "output_probes_deflated"),
        overrides=("data.data_dir=data/mnist", "eval.attacks=('pgd','apgd_ce')",
                   "eval.pgd_steps=100")),
    "vgg16_cpu": Preset(
        config="vgg16_cifar10.py", densities=(0.1, 0.05), methods=("awt", "random"),
        paper=PAPER_VGG, overrides=("data.data_dir=data/cifar10",)),
}


def load_config(path: pathlib.Path):
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def apply_override(config, assignment: str) -> None:
  """`group.key=value`, the value parsed as a Python literal (else a string)."""
  if "=" not in assignment:
    raise SystemExit(f"--set {assignment!r}: expected group.key=value")
  key, raw = assignment.split("=", 1)
  try:
    value = ast.literal_eval(raw)
  except (ValueError, SyntaxError):
    value = raw
  node = config
  *parents, leaf = key.split(".")
  for part in parents:
    node = node[part]
  if leaf not in node:
    raise SystemExit(f"--set {key}: unknown key; keys here are {sorted(node.keys())}")
  if isinstance(node[leaf], float) and isinstance(value, int):
    value = float(value)
  node[leaf] = value


def run_point(preset: Preset, overrides, *, methods, density, estimator, runs: pathlib.Path):
  """One runner call; returns its rows."""
  from scalable_awt import train
  config = load_config(ROOT / "configs" / preset.config)
  for assignment in (*preset.overrides, *overrides):
    apply_override(config, assignment)
  config.methods = tuple(methods)
  if density is not None:
    config.search.density = float(density)
  if estimator is not None:
    config.search.estimator = estimator
  tag = "dense" if density is None else f"d{density:g}" + (f"_{estimator}" if estimator else "")
  workdir = runs / tag
  print(f"\n=== {tag}: methods {list(methods)} -> {workdir}", flush=True)
  start = time.time()
  results = train.train_and_evaluate(config, str(workdir))
  print(f"=== {tag}: done in {time.time() - start:.0f} s", flush=True)
  rows = []
  for method in methods:
    m = results["models"][method]
    robust = {}
    for attack, value in m["robust_accuracy"].items():
      name = f"pgd{config.eval.pgd_steps}" if attack == "pgd" else attack
      robust[name] = value
    label = f"{method}[{estimator}]" if estimator else method
    rows.append({
        "method": label, "density": m["density"],
        "target_density": 1.0 if density is None else float(density),
        "natural_accuracy": m["natural_accuracy"], "robust_accuracy": robust,
        "epochs_search": float(config.search.epochs) if method in ("awt", "ntt") else 0.0,
        "epochs_train": float(config.train.epochs),
        "search_wall_s": m.get("search_wall_s"),
        "wall_time_s": results.get("wall_time_s"),
        "num_test_examples": m["num_examples"],
        "workdir": os.path.relpath(workdir, ROOT),
        # Test accuracy after each training epoch (train.curve_examples images,
        # PGD-<train.curve_pgd_steps>): whether a schedule had converged.
        "curve": [{k: c[k] for k in ("epoch", "test_natural_accuracy",
                                     "test_robust_accuracy") if k in c}
                  for c in m.get("curve", []) if "test_robust_accuracy" in c],
    })
  return rows, config


def curve_gaps(rows) -> list[dict]:
  """How far each ticket's test curve stays from the dense network's.

  The paper's claim for its Fig. 6 is that AWT's learning curves are "much
  closer to the dense model than the random structure"; this measures it:
  the mean over training epochs of |ticket − dense| test accuracy (natural and
  robust, fractions), and the signed mean of the robust difference, on the
  epochs both curves have. Empty without a dense row that has a curve.
  """
  dense = next((r for r in rows if r["method"] == "dense" and r.get("curve")), None)
  if dense is None:
    return []
  reference = {c["epoch"]: c for c in dense["curve"]}
  gaps = []
  for r in rows:
    if r["method"] == "dense" or not r.get("curve"):
      continue
    common = [c for c in r["curve"] if c["epoch"] in reference]
    if not common:
      continue
    def mean(values):
      return sum(values) / len(values)
    natural = [c["test_natural_accuracy"] - reference[c["epoch"]]["test_natural_accuracy"]
               for c in common]
    robust = [c["test_robust_accuracy"] - reference[c["epoch"]]["test_robust_accuracy"]
              for c in common]
    gaps.append({"method": r["method"], "target_density": r["target_density"],
                 "density": r["density"], "epochs": len(common),
                 "natural_gap": mean([abs(d) for d in natural]),
                 "robust_gap": mean([abs(d) for d in robust]),
                 "robust_signed": mean(robust)})
  return gaps


def markdown(rows, paper) -> str:
  attacks = sorted({a for r in rows for a in r["robust_accuracy"]})
  head = ["method", "density", "natural"] + attacks + ["search s"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for r in sorted(rows, key=lambda r: (-r["target_density"], r["method"])):
    cells = [r["method"], f"{100 * r['density']:.1f}%",
             f"{100 * r['natural_accuracy']:.2f}"]
    cells += [f"{100 * r['robust_accuracy'][a]:.2f}" if a in r["robust_accuracy"]
              else "" for a in attacks]
    cells.append("" if r.get("search_wall_s") is None else f"{r['search_wall_s']:.0f}")
    lines.append("| " + " | ".join(cells) + " |")
  gaps = curve_gaps(rows)
  if gaps:
    lines += ["", f"Test curves against the dense network's over {gaps[0]['epochs']} epochs "
              "(mean |ticket − dense|, points; signed: ticket − dense):", "",
              "| method | density | natural gap | robust gap | robust signed |",
              "|---|---|---:|---:|---:|"]
    for g in sorted(gaps, key=lambda g: (-g["target_density"], g["method"])):
      lines.append(f"| {g['method']} | {100 * g['density']:.1f}% | "
                   f"{100 * g['natural_gap']:.1f} | {100 * g['robust_gap']:.1f} | "
                   f"{100 * g['robust_signed']:+.1f} |")
  if paper:
    lines += ["", "The paper's figures (natural / PGD, %):", "",
              "| method | density | natural | PGD |", "|---|---|---|---|"]
    for method, by_density in paper.items():
      for d, (nat, rob) in sorted(by_density.items(), reverse=True):
        lines.append(f"| {method} | {100 * d:.1f}% | {'' if nat is None else nat} | {rob} |")
  return "\n".join(lines) + "\n"


def plot(rows, paper, path: pathlib.Path, title: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  attack = next((a for r in rows for a in r["robust_accuracy"] if a.startswith("pgd")),
                None)
  if attack is None:
    return
  fig, ax = plt.subplots(figsize=(6, 4))
  if len({r["target_density"] for r in rows if r["method"] != "dense"}) == 1:
    # One density (an estimator comparison): quality against search cost.
    for i, r in enumerate(sorted(rows, key=lambda r: r["method"])):
      cost = r.get("search_wall_s") or 0.0
      ax.plot(cost, 100 * r["robust_accuracy"][attack], "o", color=f"C{i}")
      ax.annotate(r["method"], (cost, 100 * r["robust_accuracy"][attack]), fontsize=7,
                  xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("search wall time (s)")
    ax.set_ylabel(f"robust accuracy, {attack} (%)")
    ax.set_title(f"{title}, density {100 * rows[-1]['density']:.1f}%", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return
  for method in sorted({r["method"] for r in rows}):
    pts = sorted((r["density"], r["robust_accuracy"][attack]) for r in rows
                 if r["method"] == method)
    if method == "dense":
      ax.axhline(100 * pts[0][1], color="k", ls="--", lw=1, label="dense (ours)")
      continue
    ax.plot([100 * d for d, _ in pts], [100 * a for _, a in pts], "o-", label=method)
  for method, by_density in (paper or {}).items():
    pts = sorted((d, rob) for d, (_, rob) in by_density.items() if d < 1.0)
    if pts:
      ax.plot([100 * d for d, _ in pts], [a for _, a in pts], "x:", label=method)
  ax.set_xscale("log")
  ticks = sorted({100 * r["density"] for r in rows if r["method"] != "dense"} |
                 {100 * d for t in (paper or {}).values() for d in t if d < 1.0})
  ax.set_xticks(ticks, [f"{t:.3g}" for t in ticks])
  ax.minorticks_off()
  ax.set_xlabel("density (% of prunable weights kept)")
  ax.set_ylabel(f"robust accuracy, {attack} (%)")
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_curves(rows, path: pathlib.Path, title: str) -> bool:
  """Robust test accuracy per training epoch, one line per ticket."""
  if not any(r.get("curve") for r in rows):
    return False
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4))
  for r in sorted(rows, key=lambda r: (-r["target_density"], r["method"])):
    if r.get("curve"):
      label = r["method"] if r["method"] == "dense" else (
          f"{r['method']} {100 * r['density']:.3g}%")
      ax.plot([c["epoch"] for c in r["curve"]],
              [100 * c["test_robust_accuracy"] for c in r["curve"]],
              "-", marker="o", markersize=2, label=label)
  ax.set_xlabel("training epoch")
  ax.set_ylabel("robust test accuracy during training (%)")
  ax.set_title(title, fontsize=9)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return True


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("preset", choices=sorted(PRESETS))
  parser.add_argument("--set", dest="overrides", action="append", default=[],
                      metavar="group.key=value", help="config override (repeatable)")
  parser.add_argument("--densities", help="comma-separated, replaces the preset's")
  parser.add_argument("--methods", help="comma-separated, replaces the preset's")
  parser.add_argument("--estimators", help="comma-separated, replaces the preset's")
  parser.add_argument("--no-dense", action="store_true")
  parser.add_argument("--dense-from", metavar="NAME",
                      help="with --no-dense: compare with the dense row of benchmarks/results/"
                           "NAME.json (its overrides may differ in search.* only)")
  parser.add_argument("--name", help="results name (default: the preset's)")
  parser.add_argument("--report-only", action="store_true",
                      help="rewrite <name>.md and the plots from <name>.json; run nothing")
  parser.add_argument("--runs", default=None, help="workdir root (default runs/sweep_<name>)")
  parser.add_argument("--merge", nargs="+", metavar="NAME",
                      help="write <name> from the finished sweeps NAME... (same preset and "
                           "overrides, e.g. one density each); run nothing")
  args = parser.parse_args(argv)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  preset = copy.deepcopy(PRESETS[args.preset])
  if args.densities:
    preset.densities = tuple(float(d) for d in args.densities.split(","))
  if args.methods is not None:
    preset.methods = tuple(m for m in args.methods.split(",") if m)
  if args.estimators is not None:
    preset.estimators = tuple(e for e in args.estimators.split(",") if e)
  if args.no_dense:
    preset.dense = False
  name = args.name or f"{args.preset}"
  runs = pathlib.Path(args.runs or ROOT / "runs" / f"sweep_{name}")
  # Progress lines (steps/s, ETA) from the runner; Orbax's chatter (absl) off.
  import logging
  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.WARNING)
  handler = logging.StreamHandler(sys.stdout)
  handler.addFilter(lambda record: record.name == "root" or record.levelno >= logging.WARNING)
  logging.getLogger().addHandler(handler)
  logging.getLogger().setLevel(logging.INFO)

  if args.dense_from and not args.no_dense:
    raise SystemExit("--dense-from NAME reuses NAME's dense row; add --no-dense")
  overrides = [*preset.overrides, *args.overrides]
  if args.report_only:
    return report_only(name, args.preset, preset, dense_from=args.dense_from)
  if args.merge:
    if not args.name:
      raise SystemExit("--merge writes a new table: name it with --name")
    return merge(name, args.preset, preset, args.merge, dense_from=args.dense_from)
  dense_reference = dense_rows_from(args.dense_from, preset.config, overrides)
  out_json = RESULTS / f"{name}.json"
  previous = json.loads(out_json.read_text()) if out_json.exists() else {}
  rows, config, start = [], None, time.time()
  points = []
  if preset.dense:
    points.append(dict(methods=("dense",), density=None, estimator=None))
  for density in preset.densities:
    if preset.methods:
      points.append(dict(methods=preset.methods, density=density, estimator=None))
    for estimator in preset.estimators:
      points.append(dict(methods=("awt",), density=density, estimator=estimator))
  for point in points:
    point_rows, config = run_point(preset, args.overrides, runs=runs, **point)
    rows += point_rows
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {
        "preset": args.preset, "config_file": preset.config,
        "overrides": [*preset.overrides, *args.overrides],
        "rows": rows, "curve_gaps": curve_gaps(dense_reference + rows),
        "dense_from": args.dense_from,
        "paper": {k: {str(d): v for d, v in t.items()}
                                for k, t in (preset.paper or {}).items()},
        "complete": point is points[-1],
        "sweep_wall_s": time.time() - start,  # This invocation (finished points return at once).
        # What the runs cost when they ran (setup + search + train + evaluate).
        "runs_wall_s": sum(sum(v.values()) for v in
                           {r["workdir"]: r["wall_time_s"] for r in rows}.values()),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": _machine(),
        "schedule": {"search_epochs": float(config.search.epochs),
                     "train_epochs": float(config.train.epochs),
                     "eval_examples": rows[-1]["num_test_examples"]},
    }
    # Keep the last complete table until this sweep finishes.
    keep_previous = previous.get("complete") and not result["complete"]
    path = RESULTS / f"{name}.partial.json" if keep_previous else out_json
    path.write_text(json.dumps(result, indent=1))
  write_report(name, rows, dense_reference, args.dense_from, preset, config)
  partial = RESULTS / f"{name}.partial.json"
  if partial.exists():
    partial.unlink()
  print(f"wrote {RESULTS / name}.json, .md, .png")
  return 0


def dense_rows_from(name: str | None, config_file: str, overrides) -> list[dict]:
  """The dense row of sweep `name`, checked to share everything but search.* keys."""
  if not name:
    return []
  source = RESULTS / f"{name}.json"
  if not source.exists():
    raise SystemExit(f"--dense-from {name}: {source} does not exist; run that sweep first")
  reference = json.loads(source.read_text())
  # The dense network ignores every search.* key; anything else must agree.
  ours = [o for o in overrides if not o.startswith("search.")]
  theirs = [o for o in reference["overrides"] if not o.startswith("search.")]
  if reference["config_file"] != config_file or sorted(ours) != sorted(theirs):
    raise SystemExit(
        f"--dense-from {name}: its dense network ran with {reference['config_file']} "
        f"{sorted(theirs)}, this sweep with {config_file} {sorted(ours)}; only search.* "
        "overrides may differ")
  rows = [r for r in reference["rows"] if r["method"] == "dense"]
  if not rows:
    raise SystemExit(f"--dense-from {name}: {source} has no dense row")
  return rows


def write_report(name, rows, dense_reference, dense_from, preset, config) -> str:
  """`<name>.md`, `<name>.png` and `<name>_curves.png` from the rows."""
  md = markdown(dense_reference + rows, preset.paper)
  if dense_from:
    md = f"Dense row from `{dense_from}` (same config but for search.*).\n\n" + md
  (RESULTS / f"{name}.md").write_text(md)
  title = f"{preset.config}: search {config.search.epochs} + train {config.train.epochs} epochs"
  plot(dense_reference + rows, preset.paper, RESULTS / f"{name}.png", title)
  plot_curves(dense_reference + rows, RESULTS / f"{name}_curves.png",
              f"{title} (PGD-{config.train.curve_pgd_steps}, first "
              f"{config.train.curve_examples} test images)")
  print("\n" + md)
  return md


def report_only(name: str, preset_name: str, preset: Preset, *,
                dense_from: str | None = None) -> int:
  """Rewrites a finished sweep's tables and plots from its JSON; runs nothing.

  `dense_from` (else the sweep's own `dense_from`) supplies a dense row to a
  sweep that ran without one, for the curve gaps.
  """
  path = RESULTS / f"{name}.json"
  if not path.exists():
    raise SystemExit(f"--report-only: {path} does not exist; run the sweep first")
  result = json.loads(path.read_text())
  if result["preset"] != preset_name:
    raise SystemExit(f"--report-only: {path} is a {result['preset']!r} sweep, not "
                     f"{preset_name!r}; name its preset")
  config = load_config(ROOT / "configs" / result["config_file"])
  for assignment in result["overrides"]:
    apply_override(config, assignment)
  preset = dataclasses.replace(preset, config=result["config_file"])
  result["dense_from"] = dense_from or result.get("dense_from")
  dense_reference = dense_rows_from(result["dense_from"], result["config_file"],
                                    result["overrides"])
  result["curve_gaps"] = curve_gaps(dense_reference + result["rows"])
  path.write_text(json.dumps(result, indent=1))
  write_report(name, result["rows"], dense_reference, result["dense_from"], preset, config)
  print(f"rewrote {RESULTS / name}.md, .png from {path}")
  return 0


def merge(name: str, preset_name: str, preset: Preset, sources, *,
          dense_from: str | None = None) -> int:
  """One table from finished sweeps that differ only in what they ran; runs nothing.

  Long schedules are run a density per sweep (to fit a session, or to run
  side by side); this writes their rows to `<name>.json` and its report as if
  one sweep had run every density. Sweeps with other settings (config,
  overrides, preset), unfinished ones, and a (method, density) that two of
  them ran are refused: a merged table must be one experiment.
  """
  if name in sources:
    raise SystemExit(f"--merge: --name {name} is one of the sweeps to merge; pick a new name "
                     "so that no result is overwritten")
  results = []
  for source in sources:
    path = RESULTS / f"{source}.json"
    if not path.exists():
      raise SystemExit(f"--merge: {path} does not exist; run that sweep first")
    result = json.loads(path.read_text())
    if result.get("preset") != preset_name:
      raise SystemExit(f"--merge: {source} is a {result.get('preset')!r} sweep, not "
                       f"{preset_name!r}; name its preset")
    if not result.get("complete"):
      raise SystemExit(f"--merge: {source} has not finished (complete=false); run it again "
                       "to finish it")
    results.append((source, result))
  first_name, first = results[0]
  for source, result in results[1:]:
    if (result["config_file"] != first["config_file"]
        or sorted(result["overrides"]) != sorted(first["overrides"])):
      raise SystemExit(
          f"--merge: {source} ran with {result['config_file']} {sorted(result['overrides'])}, "
          f"{first_name} with {first['config_file']} {sorted(first['overrides'])}; only sweeps "
          "with the same settings share a table")
  rows, ran_by = [], {}
  for source, result in results:
    for row in result["rows"]:
      key = (row["method"], row["target_density"])
      if key in ran_by:
        raise SystemExit(f"--merge: {row['method']} at density {row['target_density']:g} is in "
                         f"both {ran_by[key]} and {source}; merge one of them")
      ran_by[key] = source
      rows.append(row)
  rows.sort(key=lambda r: -r["target_density"])
  config = load_config(ROOT / "configs" / first["config_file"])
  for assignment in first["overrides"]:
    apply_override(config, assignment)
  preset = dataclasses.replace(preset, config=first["config_file"])
  dense_from = dense_from or first.get("dense_from")
  dense_reference = dense_rows_from(dense_from, first["config_file"], first["overrides"])
  merged = {
      "preset": preset_name, "config_file": first["config_file"],
      "overrides": first["overrides"], "rows": rows,
      "curve_gaps": curve_gaps(dense_reference + rows), "dense_from": dense_from,
      "paper": first.get("paper"), "complete": True, "merged_from": list(sources),
      "runs_wall_s": sum(result.get("runs_wall_s") or 0.0 for _, result in results),
      "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
      "machine": {source: result.get("machine") for source, result in results},
      "schedule": first.get("schedule"),
  }
  RESULTS.mkdir(parents=True, exist_ok=True)
  (RESULTS / f"{name}.json").write_text(json.dumps(merged, indent=1))
  write_report(name, rows, dense_reference, dense_from, preset, config)
  print(f"merged {', '.join(sources)} into {RESULTS / name}.json, .md, .png")
  return 0


def _machine() -> dict:
  import platform
  import jax
  return {"platform": platform.platform(), "cpu_count": os.cpu_count(),
          "jax": jax.__version__, "devices": [str(d) for d in jax.devices()],
          "load_average": os.getloadavg()}


if __name__ == "__main__":
  sys.exit(main())
