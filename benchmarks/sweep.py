"""Sweeps of the runner over densities, methods and seeds: the reproduction tables.

Each (density, seed) point is one ordinary run of
`scalable_awt.train.train_and_evaluate` in its own workdir under `--runs` (so a
killed sweep resumes where it stopped, and a finished point returns at once);
dense, which has no density, runs once per seed. What to sweep comes from a
paper config (`configs/paper/*.py`: `get_config(arg)` for the runner,
`get_sweep(arg)` for the densities, methods, estimators, seeds and the
paper's figures):

    python benchmarks/sweep.py --config configs/paper/mnist_mlp_table1.py
    python benchmarks/sweep.py --config configs/paper/mnist_mlp_table1.py:eps092
    python benchmarks/sweep.py --config configs/paper/cnn_mnist_fig6.py --seeds 0

`--densities`, `--methods`, `--estimators`, `--seeds` narrow it (one density
per invocation spreads a long table over sessions; `--merge` joins them) and
`--set group.key=value` overrides any config key. The older presets
(`python benchmarks/sweep.py table1 --set ...`) still run. The rows of every
run are collected into `--out` (default benchmarks/results/):

    <name>.json   {"rows": [...], "config_file", "overrides", "paper", ...}
    <name>.md     the table with its threat model, the paper's figures beside ours
    <name>.png    robust accuracy vs density, one line per method
    <name>_curves.png  robust accuracy per training epoch
    <name>_seeds.{json,md,png}  with several seeds: mean ± standard error, paired AWT − baseline

Each row is `{"method", "density", "seed", "threat_model", "natural_accuracy",
"robust_accuracy": {"pgd<k>", "apgd_ce", ..., "worst_case"}, "validation",
"epochs_search", "epochs_train", "search_wall_s", "wall_time_s", "workdir",
"curve"}`, accuracies as fractions, epsilon in the units of the model's
inputs (pixels of [0, 1] images). Nothing under `--out` is overwritten by
an unfinished sweep: progress goes to `<name>.partial.json`, and the
finished files are written to a temporary folder and moved into place.
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
import shutil
import sys
import time

from scalable_awt import config_schema, paper

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CHEAP = "cheap"  # The `--estimators` entry that runs the cheap search.

# The paper's figures (docs/method.md), percent, natural / PGD, for the
# presets; paper configs carry their own in get_sweep(). One copy, in
# scalable_awt/paper.py.
PAPER_TABLE1 = paper.PAPER_TABLE1
PAPER_VGG = paper.PAPER_TABLE2


@dataclasses.dataclass
class Preset:
  config: str  # Config file under configs/.
  densities: tuple[float, ...]
  methods: tuple[str, ...]  # Masked methods, run at every density.
  dense: bool = True  # Also run the dense network once.
  overrides: tuple[str, ...] = ()
  paper: dict | None = None
  # Several estimators: one run per (density, estimator) for the "awt" method,
  # reported as "awt[<estimator>]". "cheap" is the whole cheap search
  # (config_schema.CHEAP_SEARCH: estimator, kernel sub-batch and period,
  # teacher cache), held against "exact" in the same table.
  estimators: tuple[str, ...] = ()
  # Seeds to run (one run per seed and point); empty: the config's own seed.
  seeds: tuple[int, ...] = ()
  name: str = ""  # Default results name ("" = the preset's name).


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


def config_path(spec) -> tuple[pathlib.Path, str]:
  """`path[:arg]` -> (the file, its argument); bare names are under configs/."""
  path, _, arg = str(spec).partition(":")
  candidate = pathlib.Path(path)
  if not candidate.is_absolute():
    candidate = ROOT / path if (ROOT / path).exists() else ROOT / "configs" / path
  if not candidate.exists():
    raise SystemExit(f"config {path!r}: no such file (looked in {ROOT} and {ROOT / 'configs'})")
  return candidate, arg


def _config_module(path: pathlib.Path):
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_config(spec):
  """The runner config of `path[:arg]` (a path, or a file name under configs/)."""
  path, arg = config_path(spec)
  module = _config_module(path)
  return module.get_config(arg) if arg else module.get_config()


def preset_from_config(spec: str) -> Preset:
  """A paper config's sweep: `get_sweep(arg)` of `configs/paper/X.py[:arg]`."""
  path, arg = config_path(spec)
  module = _config_module(path)
  if not hasattr(module, "get_sweep"):
    raise SystemExit(f"--config {spec}: {path.name} has no get_sweep(); sweeps run paper "
                     "configs (configs/paper/*.py)")
  sweep = module.get_sweep(arg or None)
  relative = os.path.relpath(path, ROOT)
  return Preset(
      config=relative + (f":{arg}" if arg else ""),
      densities=tuple(float(d) for d in sweep["densities"]),
      methods=tuple(sweep.get("methods", ())), dense=bool(sweep.get("dense", True)),
      paper={k: {float(d): tuple(v) for d, v in t.items()}
             for k, t in sweep.get("paper", {}).items()} or None,
      estimators=tuple(sweep.get("estimators", ())),
      seeds=tuple(int(x) for x in sweep.get("seeds", ())), name=sweep.get("name", ""))


def threat_model_of(config) -> dict:
  """The threat model a config evaluates under (eps in the units of its inputs).

  Each attack's entry is the one `evaluation.evaluate` writes
  (`evaluation.attack_spec`), so the two cannot disagree.
  """
  from scalable_awt import evaluation
  e = config.eval
  step_size = e.step_size if e.step_size > 0 else 2.5 * config.attack.epsilon / e.pgd_steps
  return {"norm": config.attack.norm, "epsilon": float(config.attack.epsilon),
          "units": "pixels",
          "attacks": [evaluation.attack_spec(
              a, epsilon=config.attack.epsilon, pgd_steps=e.pgd_steps,
              pgd_restarts=e.pgd_restarts, step_size=step_size,
              apgd_steps=e.apgd_steps, apgd_t_targets=e.get("apgd_t_targets", 9),
              square_queries=e.get("square_queries", 5000)) for a in e.attacks]}


def fill_threat_models(rows, config) -> None:
  """Gives rows from before rows carried a threat model the config's, in place.

  Only the attacks the row actually has results for are listed.
  """
  model = threat_model_of(config)
  for row in rows:
    if row.get("threat_model"):
      continue
    ran = {"pgd" if a.startswith("pgd") else a for a in row.get("robust_accuracy", {})}
    row["threat_model"] = dict(model, attacks=[a for a in model["attacks"] if a["name"] in ran])


_ATTACK_NAMES = {"pgd": "PGD", "cw": "CW", "apgd_ce": "APGD-CE", "apgd_t": "APGD-T",
                 "square": "Square", "fgsm": "FGSM"}


def threat_model_text(tm: dict) -> str:
  """`L∞ ε = 0.0924 (pixels); PGD-100 ×1 restart, APGD-CE-100 ×1 restart`."""
  norm = {"linf": "L∞", "l2": "L2"}.get(tm["norm"], tm["norm"])
  attacks = []
  for a in tm.get("attacks", []):
    name = _ATTACK_NAMES.get(a["name"], a["name"])
    if a["name"] == "square":
      attacks.append(f"{name} ({a['steps']} queries)")
    else:
      restarts = a.get("restarts", 1)
      targets = f", {a['targets']} targets" if a.get("targets") else ""
      attacks.append(f"{name}-{a['steps']} ×{restarts} restart{'s' if restarts != 1 else ''}"
                     f"{targets}")
  return f"{norm} ε = {tm['epsilon']:.4g} ({tm.get('units', 'pixels')}); " + ", ".join(attacks)


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


def run_point(preset: Preset, overrides, *, methods, density, estimator, runs: pathlib.Path,
              seed=None):
  """One runner call; returns its rows."""
  from scalable_awt import train
  config = load_config(preset.config)
  for assignment in (*preset.overrides, *overrides):
    apply_override(config, assignment)
  config.methods = tuple(methods)
  if seed is not None:
    config.seed = int(seed)
  if density is not None:
    config.search.density = float(density)
  if estimator == CHEAP:
    config_schema.apply_cheap_search(config)
  elif estimator is not None:
    config.search.estimator = estimator
  tag = "dense" if density is None else f"d{density:g}" + (f"_{estimator}" if estimator else "")
  if seed is not None:
    tag += f"_s{seed}"
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
    if m.get("robust_accuracy_all_attacks") is not None and len(robust) > 1:
      robust["worst_case"] = m["robust_accuracy_all_attacks"]
    label = f"{method}[{estimator}]" if estimator else method
    rows.append({
        "method": label, "density": m["density"],
        "target_density": 1.0 if density is None else float(density),
        "seed": int(config.seed), "threat_model": m.get("threat_model") or threat_model_of(config),
        # "validation" in a recipe study (eval.split): the test set untouched.
        "split": m.get("split", "test"),
        "natural_accuracy": m["natural_accuracy"], "robust_accuracy": robust,
        "validation": m.get("validation"),
        "epochs_search": (float(config.search.epochs)
                          if method in ("awt", "awt_no_kernel", "ntt") else 0.0),
        "epochs_train": float(config.train.epochs),
        "search_wall_s": m.get("search_wall_s"),
        "wall_time_s": results.get("wall_time_s"),
        "num_test_examples": m["num_examples"],
        "workdir": os.path.relpath(workdir, ROOT),
        # Accuracy after each training epoch (train.curve_examples images of
        # the validation split, or of the test set without one; PGD-<
        # train.curve_pgd_steps>): whether a schedule had converged.
        "curve": [point for point in map(curve_point, m.get("curve", [])) if point],
    })
  return rows, config


def curve_point(entry: dict) -> dict | None:
  """One epoch of a training curve as `{epoch, split, natural_accuracy, robust_accuracy}`.

  Reads the runner's history rows (`<split>_natural_accuracy`, ...) and rows
  already in this form; older results only had the test split. None for an
  epoch without a curve measurement.
  """
  if "robust_accuracy" in entry:
    return entry
  split = entry.get("curve_split", "test")
  if f"{split}_robust_accuracy" not in entry:
    return None
  return {"epoch": entry["epoch"], "split": split,
          "natural_accuracy": entry[f"{split}_natural_accuracy"],
          "robust_accuracy": entry[f"{split}_robust_accuracy"]}


def curve_gaps(rows) -> list[dict]:
  """How far each ticket's accuracy curve stays from the dense network's.

  The paper's claim for its Fig. 6 is that AWT's learning curves are "much
  closer to the dense model than the random structure"; this measures it:
  the mean over training epochs of |ticket − dense| test accuracy (natural and
  robust, fractions), and the signed mean of the robust difference, on the
  epochs both curves have. Empty without a dense row that has a curve.
  """
  # The dense network of the same seed (rows without a seed share one).
  dense = {r.get("seed"): r for r in rows if r["method"] == "dense" and r.get("curve")}
  if not dense:
    return []
  gaps = []
  for r in rows:
    if r["method"] == "dense" or not r.get("curve"):
      continue
    reference_row = dense.get(r.get("seed")) or (
        next(iter(dense.values())) if len(dense) == 1 else None)
    if reference_row is None:
      continue
    reference = {c["epoch"]: c for c in map(curve_point, reference_row["curve"]) if c}
    common = [c for c in map(curve_point, r["curve"]) if c and c["epoch"] in reference]
    if not common:
      continue
    def mean(values):
      return sum(values) / len(values)
    natural = [c["natural_accuracy"] - reference[c["epoch"]]["natural_accuracy"]
               for c in common]
    robust = [c["robust_accuracy"] - reference[c["epoch"]]["robust_accuracy"]
              for c in common]
    gaps.append({"method": r["method"], "target_density": r["target_density"],
                 "density": r["density"], "seed": r.get("seed"), "epochs": len(common),
                 "natural_gap": mean([abs(d) for d in natural]),
                 "robust_gap": mean([abs(d) for d in robust]),
                 "robust_signed": mean(robust)})
  return gaps


def markdown(rows, paper, threat_model: dict | None = None) -> str:
  """The table; its first line states the threat model (the rows' own, else `threat_model`)."""
  attacks = sorted({a for r in rows for a in r["robust_accuracy"]},
                   key=lambda a: (a == "worst_case", a))
  seeds = sorted({r.get("seed") for r in rows if r.get("seed") is not None})
  with_seed = len(seeds) > 1
  head = ["method", "density"] + (["seed"] if with_seed else []) + ["natural"] + attacks + [
      "search s"]
  lines = []
  models = {json.dumps(r["threat_model"], sort_keys=True) for r in rows if r.get("threat_model")}
  if models or threat_model:
    texts = sorted(threat_model_text(json.loads(m)) for m in models) or [
        threat_model_text(threat_model)]
    lines += ["Threat model: " + "; ".join(texts) + ". Accuracies in %.", ""]
  lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for r in sorted(rows, key=lambda r: (-r["target_density"], r["method"], r.get("seed") or 0)):
    cells = [r["method"], f"{100 * r['density']:.1f}%"]
    cells += [str(r.get("seed", ""))] if with_seed else []
    cells += [f"{100 * r['natural_accuracy']:.2f}"]
    cells += [f"{100 * r['robust_accuracy'][a]:.2f}" if a in r["robust_accuracy"]
              else "" for a in attacks]
    cells.append("" if r.get("search_wall_s") is None else f"{r['search_wall_s']:.0f}")
    lines.append("| " + " | ".join(cells) + " |")
  gaps = curve_gaps(rows)
  if gaps:
    lines += ["", "Accuracy curves (per epoch, during training) against the dense network's "
              f"over {gaps[0]['epochs']} epochs "
              "(mean |ticket − dense|, points; signed: ticket − dense):", "",
              "| method | density | natural gap | robust gap | robust signed |",
              "|---|---|---:|---:|---:|"]
    for g in sorted(gaps, key=lambda g: (-g["target_density"], g["method"], g.get("seed") or 0)):
      method = g["method"] + (f" (seed {g['seed']})" if with_seed else "")
      lines.append(f"| {method} | {100 * g['density']:.1f}% | "
                   f"{100 * g['natural_gap']:.1f} | {100 * g['robust_gap']:.1f} | "
                   f"{100 * g['robust_signed']:+.1f} |")
  if paper:
    lines += ["", "The paper's figures (natural / PGD, %; the paper states L∞ ε = 0.3 on MNIST, "
              "8/255 on CIFAR-10):", "",
              "| method | density | natural | PGD |", "|---|---|---|---|"]
    for method, by_density in paper.items():
      for d, (nat, rob) in sorted(by_density.items(), reverse=True):
        lines.append(f"| {method} | {100 * d:.1f}% | {'' if nat is None else nat} | {rob} |")
  return "\n".join(lines) + "\n"


def headline_attack(rows) -> str | None:
  """What plots show: the worst case over the suite when every row has one, else PGD."""
  keys = [set(r["robust_accuracy"]) for r in rows]
  if keys and all("worst_case" in k for k in keys):
    return "worst_case"
  return next((a for k in keys for a in sorted(k) if a.startswith("pgd")), None)


def plot(rows, paper, path: pathlib.Path, title: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  attack = headline_attack(rows)
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
    by_target: dict[float, list] = {}  # Several seeds: their mean.
    for r in rows:
      if r["method"] == method and attack in r["robust_accuracy"]:
        by_target.setdefault(r["target_density"], []).append(r)
    pts = sorted((sum(r["density"] for r in draws) / len(draws),
                  sum(r["robust_accuracy"][attack] for r in draws) / len(draws))
                 for draws in by_target.values())
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
  ax.set_ylabel(f"robust accuracy, {attack} (%)"
                + ("\n(the paper's: its PGD)" if paper and not attack.startswith("pgd") else ""))
  ax.set_title(title, fontsize=8)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_curves(rows, path: pathlib.Path, title: str) -> bool:
  """Robust accuracy per training epoch (validation or test split), one line per ticket."""
  if not any(r.get("curve") for r in rows):
    return False
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4))
  splits = set()
  for r in sorted(rows, key=lambda r: (-r["target_density"], r["method"])):
    if r.get("curve"):
      label = r["method"] if r["method"] == "dense" else (
          f"{r['method']} {100 * r['density']:.3g}%")
      curve = [c for c in map(curve_point, r["curve"]) if c]
      splits |= {c["split"] for c in curve}
      ax.plot([c["epoch"] for c in curve], [100 * c["robust_accuracy"] for c in curve],
              "-", marker="o", markersize=2, label=label)
  ax.set_xlabel("training epoch")
  ax.set_ylabel(f"robust {' / '.join(sorted(splits))} accuracy during training (%)")
  ax.set_title(title, fontsize=9)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return True


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("preset", nargs="?", choices=sorted(PRESETS),
                      help="an older preset; prefer --config")
  parser.add_argument("--config", metavar="configs/paper/X.py[:arg]",
                      help="a paper config: the runner config and what to sweep")
  parser.add_argument("--set", dest="overrides", action="append", default=[],
                      metavar="group.key=value", help="config override (repeatable)")
  parser.add_argument("--densities", help="comma-separated, replaces the config's")
  parser.add_argument("--methods", help="comma-separated, replaces the config's")
  parser.add_argument("--estimators", help="comma-separated, replaces the config's")
  parser.add_argument("--seeds", help="comma-separated, replaces the config's")
  parser.add_argument("--no-dense", action="store_true")
  parser.add_argument("--dense-from", metavar="NAME",
                      help="with --no-dense: compare with the dense row of <out>/NAME.json "
                           "(its overrides may differ in search.* only)")
  parser.add_argument("--name", help="results name (default: the config's)")
  parser.add_argument("--out", help="results folder (default benchmarks/results)")
  parser.add_argument("--report-only", action="store_true",
                      help="rewrite <name>.md and the plots from <name>.json; run nothing")
  parser.add_argument("--runs", default=None, help="workdir root (default runs/sweep_<name>)")
  parser.add_argument("--merge", nargs="+", metavar="NAME",
                      help="write <name> from the finished sweeps NAME... (same config and "
                           "overrides, e.g. one density each); run nothing")
  args = parser.parse_args(argv)
  if (args.preset is None) == (args.config is None):
    parser.error("give a paper config (--config configs/paper/X.py) or a preset, not both")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  preset_name = args.preset or args.config
  preset = (preset_from_config(args.config) if args.config
            else copy.deepcopy(PRESETS[args.preset]))
  if args.densities:
    preset.densities = tuple(float(d) for d in args.densities.split(","))
  if args.methods is not None:
    preset.methods = tuple(m for m in args.methods.split(",") if m)
  if args.estimators is not None:
    preset.estimators = tuple(e for e in args.estimators.split(",") if e)
  if args.seeds is not None:
    preset.seeds = tuple(int(x) for x in args.seeds.split(",") if x)
  if args.no_dense:
    preset.dense = False
  name = args.name or preset.name or f"{args.preset}"
  out = pathlib.Path(args.out) if args.out else RESULTS
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
    return report_only(name, preset_name, preset, out, dense_from=args.dense_from)
  if args.merge:
    if not args.name:
      raise SystemExit("--merge writes a new table: name it with --name")
    return merge(name, preset_name, preset, args.merge, out, dense_from=args.dense_from)
  dense_reference = dense_rows_from(args.dense_from, preset.config, overrides, out)
  rows, config, start = [], None, time.time()
  points = []
  for seed in preset.seeds or (None,):
    if preset.dense:
      points.append(dict(methods=("dense",), density=None, estimator=None, seed=seed))
    for density in preset.densities:
      if preset.methods:
        points.append(dict(methods=preset.methods, density=density, estimator=None, seed=seed))
      for estimator in preset.estimators:
        points.append(dict(methods=("awt",), density=density, estimator=estimator, seed=seed))
  out.mkdir(parents=True, exist_ok=True)
  partial = out / f"{name}.partial.json"
  for point in points:
    point_rows, config = run_point(preset, args.overrides, runs=runs, **point)
    rows += point_rows
    result = {
        "preset": preset_name, "config_file": preset.config,
        "overrides": overrides, "seeds": list(preset.seeds),
        "threat_model": threat_model_of(config),
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
    # Progress only: the finished table replaces <name>.json when every point is done.
    partial.write_text(json.dumps(result, indent=1))
  publish(out, name, lambda tmp: _write_all(tmp, name, result, dense_reference, preset, config))
  partial.unlink(missing_ok=True)
  print(f"wrote {out / name}.json, .md, .png")
  return 0


def publish(out: pathlib.Path, name: str, write) -> None:
  """Runs `write(folder)` in a temporary folder, then moves its files into `out`.

  A sweep killed while writing its report leaves the committed files as they
  were: nothing under `out` changes until every file exists.
  """
  tmp = out / f".{name}.tmp"
  shutil.rmtree(tmp, ignore_errors=True)
  tmp.mkdir(parents=True)
  try:
    write(tmp)
    for path in sorted(tmp.iterdir()):
      os.replace(path, out / path.name)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def _write_all(folder, name, result, dense_reference, preset, config) -> None:
  (folder / f"{name}.json").write_text(json.dumps(result, indent=1))
  write_report(folder, name, result["rows"], dense_reference, result.get("dense_from"),
               preset, config)
  if len({r.get("seed") for r in result["rows"]}) > 1:
    write_seeds(folder, f"{name}_seeds", result)


def _seeds_module():
  spec = importlib.util.spec_from_file_location(
      "seeds", pathlib.Path(__file__).resolve().parent / "seeds.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def write_seeds(folder: pathlib.Path, name: str, result: dict) -> None:
  """`<name>.{json,md,png}`: the spread over the sweep's seeds (benchmarks/seeds.py)."""
  seeds = _seeds_module()
  by_seed: dict[int, list] = {}
  for row in result["rows"]:
    by_seed.setdefault(row.get("seed", seeds.DEFAULT_SEED), []).append(row)
  draws = [{"rows": rows, "overrides": [*result["overrides"], f"seed={seed}"],
            "curve_gaps": [g for g in result.get("curve_gaps", []) if g.get("seed") == seed]}
           for seed, rows in sorted(by_seed.items())]
  summary = {"inputs": [result.get("config_file")], "preset": result.get("preset"),
             "config_file": result.get("config_file"), "overrides": result["overrides"],
             # The rows' own (what evaluation ran) before the config's.
             "threat_model": next((r["threat_model"] for r in result["rows"]
                                   if r.get("threat_model")), result.get("threat_model")),
             "schedule": result.get("schedule"),
             **seeds.aggregate(draws)}
  seeds.write(folder, name, summary)


def dense_rows_from(name: str | None, config_file: str, overrides,
                    out: pathlib.Path | None = None) -> list[dict]:
  """The dense row of sweep `name`, checked to share everything but search.* keys."""
  if not name:
    return []
  source = (out or RESULTS) / f"{name}.json"
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


def write_report(folder, name, rows, dense_reference, dense_from, preset, config) -> str:
  """`<name>.md`, `<name>.png` and `<name>_curves.png` from the rows, in `folder`."""
  threat_model = threat_model_of(config)
  md = markdown(dense_reference + rows, preset.paper, threat_model)
  if any(r.get("split") == "validation" for r in rows):
    md = ("Evaluated on the **validation split** (`eval.split=validation`): a recipe "
          "study; the test set was not evaluated.\n\n" + md)
  if dense_from:
    md = f"Dense row from `{dense_from}` (same config but for search.*).\n\n" + md
  (folder / f"{name}.md").write_text(md)
  norm = {"linf": "L∞", "l2": "L2"}.get(threat_model["norm"], threat_model["norm"])
  title = (f"{os.path.basename(preset.config)}: search {config.search.epochs} + train "
           f"{config.train.epochs} epochs\n{norm} ε = {threat_model['epsilon']:.4g} (pixels)")
  splits = {r.get("split", "test") for r in rows}
  plot(dense_reference + rows, preset.paper, folder / f"{name}.png",
       title + (", validation split" if "validation" in splits else ""))
  # The split the training curves watched (the validation split when held out).
  curve_split = next((p.get("split", "test") for r in dense_reference + rows
                      for p in r.get("curve") or []), "test")
  plot_curves(dense_reference + rows, folder / f"{name}_curves.png",
              f"{title}, PGD-{config.train.curve_pgd_steps} on the first "
              f"{config.train.curve_examples} {curve_split} images")
  print("\n" + md)
  return md


def report_only(name: str, preset_name: str, preset: Preset, out: pathlib.Path, *,
                dense_from: str | None = None) -> int:
  """Rewrites a finished sweep's tables and plots from its JSON; runs nothing.

  `dense_from` (else the sweep's own `dense_from`) supplies a dense row to a
  sweep that ran without one, for the curve gaps.
  """
  path = out / f"{name}.json"
  if not path.exists():
    raise SystemExit(f"--report-only: {path} does not exist; run the sweep first")
  result = json.loads(path.read_text())
  if result["preset"] != preset_name:
    raise SystemExit(f"--report-only: {path} is a {result['preset']!r} sweep, not "
                     f"{preset_name!r}; name its preset")
  config = load_config(result["config_file"])
  for assignment in result["overrides"]:
    apply_override(config, assignment)
  preset = dataclasses.replace(preset, config=result["config_file"])
  result["dense_from"] = dense_from or result.get("dense_from")
  dense_reference = dense_rows_from(result["dense_from"], result["config_file"],
                                    result["overrides"], out)
  fill_threat_models(dense_reference + result["rows"], config)
  result["curve_gaps"] = curve_gaps(dense_reference + result["rows"])
  result.setdefault("threat_model", result["rows"][0]["threat_model"] if result["rows"]
                    else threat_model_of(config))

  def write(folder):
    (folder / f"{name}.json").write_text(json.dumps(result, indent=1))
    write_report(folder, name, result["rows"], dense_reference, result["dense_from"], preset,
                 config)
  publish(out, name, write)
  print(f"rewrote {out / name}.md, .png from {path}")
  return 0


def merge(name: str, preset_name: str, preset: Preset, sources, out: pathlib.Path, *,
          dense_from: str | None = None) -> int:
  """One table from finished sweeps that differ only in what they ran; runs nothing.

  Long schedules are run a density per sweep (to fit a session, or to run
  side by side); this writes their rows to `<name>.json` and its report as if
  one sweep had run every density. Sweeps with other settings (config,
  overrides, preset), unfinished ones, and a (method, density, seed) that two
  of them ran are refused: a merged table must be one experiment.
  """
  if name in sources:
    raise SystemExit(f"--merge: --name {name} is one of the sweeps to merge; pick a new name "
                     "so that no result is overwritten")
  results = []
  for source in sources:
    path = out / f"{source}.json"
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
      key = (row["method"], row["target_density"], row.get("seed"))
      if key in ran_by:
        raise SystemExit(f"--merge: {row['method']} at density {row['target_density']:g} is in "
                         f"both {ran_by[key]} and {source}; merge one of them")
      ran_by[key] = source
      rows.append(row)
  rows.sort(key=lambda r: -r["target_density"])
  config = load_config(first["config_file"])
  for assignment in first["overrides"]:
    apply_override(config, assignment)
  preset = dataclasses.replace(preset, config=first["config_file"])
  dense_from = dense_from or first.get("dense_from")
  dense_reference = dense_rows_from(dense_from, first["config_file"], first["overrides"], out)
  fill_threat_models(dense_reference + rows, config)
  merged = {
      "preset": preset_name, "config_file": first["config_file"],
      "overrides": first["overrides"], "threat_model": threat_model_of(config), "rows": rows,
      "curve_gaps": curve_gaps(dense_reference + rows), "dense_from": dense_from,
      "paper": first.get("paper"), "complete": True, "merged_from": list(sources),
      "runs_wall_s": sum(result.get("runs_wall_s") or 0.0 for _, result in results),
      "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
      "machine": {source: result.get("machine") for source, result in results},
      "schedule": first.get("schedule"),
  }
  out.mkdir(parents=True, exist_ok=True)
  publish(out, name, lambda tmp: _write_all(tmp, name, merged, dense_reference, preset, config))
  print(f"merged {', '.join(sources)} into {out / name}.json, .md, .png")
  return 0


def _machine() -> dict:
  import platform
  import jax
  return {"platform": platform.platform(), "cpu_count": os.cpu_count(),
          "jax": jax.__version__, "devices": [str(d) for d in jax.devices()]}


if __name__ == "__main__":
  sys.exit(main())
