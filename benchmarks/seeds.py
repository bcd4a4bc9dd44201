"""Seed spread of a sweep: mean ± standard error over sweeps that differ only in `seed`.

One sweep (`benchmarks/sweep.py ... --set seed=<s>`) is one draw of every
ticket: the seed drives initialisation, masks, data order, PGD starts and the
evaluation. A ranking between two tickets needs that draw's spread, so this
reads several sweeps of the same config and schedule and writes, under
`--out` (default benchmarks/results/, where the sweeps are read from too):

    <name>.json  {"inputs", "seeds", "threat_model", "rows", "paired", ...}
    <name>.md    the threat model; mean ± standard error per ticket; AWT − random per seed
    <name>.png   robust accuracy vs density with ± standard-error bars

A sweep over several seeds in one invocation (`benchmarks/sweep.py --config
... --seeds 0,1,2`) writes the same `<sweep>_seeds.*` itself, through
`aggregate` and `write` below.

`paired` compares AWT with the random mask at each density on the same seed
(same initialisation, same data order): the per-seed differences, their mean,
standard error, and a two-sided paired t-test (scipy.stats.ttest_rel).

    python benchmarks/seeds.py --name table1_mnist_mlp_eps092_10ep_seeds \
        table1_mnist_mlp_eps092_10ep_seed0 table1_mnist_mlp_eps092_10ep_seed1 \
        table1_mnist_mlp_eps092_10ep_seed2 table1_mnist_mlp_eps092_10ep_seed3
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import shutil
import statistics
import sys
import textwrap

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import sweep  # noqa: E402  The threat-model line, written as the sweeps write it.

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_SEED = 0  # configs/*.py: `c.seed = 0` unless a sweep overrides it.


def seed_of(result: dict) -> int:
  """The seed a sweep ran with: its last `seed=` override, else the default."""
  seed = DEFAULT_SEED
  for assignment in result["overrides"]:
    key, _, value = assignment.partition("=")
    if key.strip() == "seed":
      seed = int(value)
  return seed


def _without_seed(overrides) -> list[str]:
  return [o for o in overrides if o.partition("=")[0].strip() != "seed"]


def load(names, results_dir: pathlib.Path | None = None) -> list[dict]:
  """Reads `<name>.json` for each name; all must be the same sweep but for the seed."""
  results_dir = results_dir or RESULTS
  sweeps = []
  for name in names:
    path = results_dir / f"{name}.json"
    if not path.exists():
      raise SystemExit(f"{path}: no such sweep result; run benchmarks/sweep.py "
                       f"--name {name} first")
    result = json.loads(path.read_text())
    if not result.get("complete", True):
      raise SystemExit(f"{path}: the sweep has not finished (complete=false); run it again "
                       "to finish it")
    result["name"] = name
    sweeps.append(result)
  first = sweeps[0]
  for other in sweeps[1:]:
    for key in ("preset", "config_file"):
      if other[key] != first[key]:
        raise SystemExit(f"{other['name']}: {key} {other[key]!r} differs from "
                         f"{first['name']}'s {first[key]!r}; only the seed may differ")
    mine, theirs = _without_seed(other["overrides"]), _without_seed(first["overrides"])
    if mine != theirs:
      extra = sorted(set(mine) ^ set(theirs)) or ["(order)"]
      raise SystemExit(f"{other['name']}: overrides differ from {first['name']}'s in "
                       f"{extra}; only the seed may differ")
  seeds = [seed_of(s) for s in sweeps]
  if len(set(seeds)) != len(seeds):
    raise SystemExit(f"seeds {seeds} repeat: {[s['name'] for s in sweeps]} are not "
                     "independent draws; give each sweep its own --set seed=<s>")
  return sweeps


def _attack_order(attacks) -> list[str]:
  """PGD first, then the others by name: the docs' column order."""
  return sorted(attacks, key=lambda a: (not a.startswith("pgd"), a))


def spread(values) -> dict:
  """Mean, sample std, standard error and the values themselves."""
  std = statistics.stdev(values) if len(values) > 1 else 0.0
  return {"mean": statistics.fmean(values), "std": std,
          "stderr": std / math.sqrt(len(values)), "values": list(values)}


def _pgd_key(robust: dict) -> str | None:
  return next((a for a in sorted(robust) if a.startswith("pgd")), None)


def aggregate(sweeps) -> dict:
  """Per (method, density): mean, std and s.e.; per density: paired AWT − random."""
  seeds = [seed_of(s) for s in sweeps]
  by_key: dict[tuple, list] = {}
  for seed, sweep in zip(seeds, sweeps):
    for row in sweep["rows"]:
      by_key.setdefault((row["method"], row["target_density"]), []).append((seed, row))
  rows = []
  for (method, target), draws in sorted(by_key.items(), key=lambda kv: (-kv[0][1], kv[0][0])):
    attacks = _attack_order(set.intersection(*(set(r["robust_accuracy"]) for _, r in draws)))
    row = {
        "method": method, "target_density": target,
        "density": statistics.fmean(r["density"] for _, r in draws),
        "seeds": [s for s, _ in draws], "n": len(draws),
        "natural_accuracy": spread([r["natural_accuracy"] for _, r in draws]),
        "robust_accuracy": {a: spread([r["robust_accuracy"][a] for _, r in draws])
                            for a in attacks},
    }
    # How much the full suite takes off PGD alone: a large gap is what
    # gradient masking looks like, and what a PGD-only table would hide.
    pgd = _pgd_key(row["robust_accuracy"])
    if pgd and "worst_case" in row["robust_accuracy"]:
      row["pgd_minus_worst_case"] = dict(
          spread([r["robust_accuracy"][pgd] - r["robust_accuracy"]["worst_case"]
                    for _, r in draws]), attack=pgd)
    rows.append(row)
  # Every AWT ticket (`awt`, or `awt[<estimator>]`) against every other
  # masked method at its density, on the seeds both ran: random first, then
  # the ablations (`awt_no_kernel`, `ntt`, `magnitude`, ...); a scalable
  # search (`awt[cheap]`, `awt[diagonal]`, ...) also against the exact one
  # (`awt[exact]`, else `awt`): is the cheaper ticket a worse one?
  paired = []
  methods = {m for m, _ in by_key if m != "dense"}
  treatments = sorted(m for m in methods if _is_awt(m))
  baselines = sorted(methods - set(treatments), key=lambda m: (m != "random", m))
  reference = next((m for m in ("awt[exact]", "awt") if m in treatments), None)
  targets = sorted({t for m, t in by_key if m in treatments}, reverse=True)
  for target in targets:
    for treatment in treatments:
      against_exact = [reference] if reference and treatment != reference else []
      for baseline in baselines + against_exact:
        if (treatment, target) not in by_key or (baseline, target) not in by_key:
          continue
        awt = dict(by_key[(treatment, target)])
        rnd = dict(by_key[(baseline, target)])
        common = sorted(set(awt) & set(rnd))
        if not common:
          continue
        attacks = _attack_order(
            set.intersection(*(set(awt[s]["robust_accuracy"]) for s in common)))
        for metric in ["natural", *attacks]:
          def value(row):
            return (row["natural_accuracy"] if metric == "natural"
                    else row["robust_accuracy"].get(metric, float("nan")))
          entry = _paired(target, metric, common, [value(awt[s]) for s in common],
                          [value(rnd[s]) for s in common])
          paired.append(dict(entry, method=treatment, baseline=baseline))
  # How far each ticket's accuracy curve stays from the dense one (sweep.py's
  # curve_gaps, in sweeps that have a dense row): AWT − random < 0 means
  # AWT's curve is the closer one.
  gaps: dict[tuple, dict] = {}
  for seed, sweep in zip(seeds, sweeps):
    for gap in sweep.get("curve_gaps", []):
      gaps.setdefault((gap["method"], gap["target_density"]), {})[seed] = gap
  curve_paired = []
  for target in sorted({t for m, t in by_key if m == "awt"}, reverse=True):
    awt, rnd = gaps.get(("awt", target), {}), gaps.get(("random", target), {})
    common = sorted(set(awt) & set(rnd))
    if common:
      for metric in ("natural_gap", "robust_gap"):
        curve_paired.append(_paired(target, metric, common, [awt[s][metric] for s in common],
                                    [rnd[s][metric] for s in common]))
  return {"seeds": seeds, "rows": rows, "paired": paired, "curve_paired": curve_paired}


def _is_awt(method: str) -> bool:
  """The searched ticket (`awt`, `awt[<estimator>]`), not its ablation `awt_no_kernel`."""
  return method == "awt" or method.startswith("awt[")


def _paired(target, metric, seeds, awt_values, random_values) -> dict:
  """AWT − random on the same seeds, with a two-sided paired t-test."""
  from scipy import stats
  diffs = [x - y for x, y in zip(awt_values, random_values)]
  entry = {"target_density": target, "metric": metric, "seeds": seeds,
           "differences": diffs, "mean": statistics.fmean(diffs),
           "awt_ahead": sum(d > 0 for d in diffs), "n": len(diffs)}
  if len(diffs) > 1:
    entry["std"] = statistics.stdev(diffs)
    entry["stderr"] = entry["std"] / math.sqrt(len(diffs))
    if entry["std"] > 0:
      test = stats.ttest_rel(awt_values, random_values)
      entry["t"], entry["p_value"] = float(test.statistic), float(test.pvalue)
  return entry


def _pm(summary: dict) -> str:
  """Mean ± standard error, as the docs quote seeds."""
  return f"{100 * summary['mean']:.2f} ± {100 * summary['stderr']:.2f}"


def threat_model_of(result: dict) -> dict | None:
  """The sweep's threat model: its own, its rows', else read from its overrides."""
  if result.get("threat_model"):
    return result["threat_model"]
  for row in result.get("rows", []):
    if row.get("threat_model"):
      return row["threat_model"]
  return None


def markdown(result: dict) -> str:
  rows = result["rows"]
  attacks = _attack_order({a for r in rows for a in r["robust_accuracy"]})
  head = ["ticket", "density", "n", "natural"] + attacks
  lines = []
  if result.get("threat_model"):
    lines += [f"Threat model: {sweep.threat_model_text(result['threat_model'])}.", ""]
  lines += [f"Mean ± standard error over seeds {result['seeds']} (%):", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for r in rows:
    cells = [r["method"], f"{100 * r['density']:.1f}%", str(r["n"]), _pm(r["natural_accuracy"])]
    cells += [_pm(r["robust_accuracy"][a]) if a in r["robust_accuracy"] else "" for a in attacks]
    lines.append("| " + " | ".join(cells) + " |")
  gaps = [r for r in rows if "pgd_minus_worst_case" in r]
  if gaps:
    attack = gaps[0]["pgd_minus_worst_case"]["attack"]
    lines += ["", "Worst case over the suite, and how far it lies below "
              f"{attack} alone (points; mean ± standard error over seeds):", "",
              f"| ticket | density | worst case | {attack} − worst case |", "|---|---|---:|---:|"]
    for r in gaps:
      worst, gap = r["robust_accuracy"]["worst_case"], r["pgd_minus_worst_case"]
      lines.append(f"| {r['method']} | {100 * r['density']:.1f}% | "
                   f"{100 * worst['mean']:.2f} ± {100 * worst['stderr']:.2f} | "
                   f"{100 * gap['mean']:.2f} ± {100 * gap['stderr']:.2f} |")
  pairs = {(p.get("method", "awt"), p.get("baseline", "random")) for p in result.get("paired", [])}
  named = pairs != {("awt", "random")}
  sections = [
      ("paired", "AWT − baseline on the same seed (points; mean ± standard error, "
                 "two-sided paired t-test):" if named else
                 "AWT − random on the same seed (points; mean ± standard error, "
                 "two-sided paired t-test):", "AWT ahead"),
      ("curve_paired", "Distance of the accuracy curve from the dense network's, AWT − random "
                       "on the same seed (points of mean |ticket − dense| over epochs; "
                       "negative: AWT's curve is closer):", "AWT farther"),
  ]
  for key, caption, ahead in sections:
    if not result.get(key):
      continue
    lines += ["", caption, "",
              f"| density | metric | per seed | mean ± s.e. | {ahead} | p |",
              "|---|---|---|---|---|---|"]
    for p in result[key]:
      metric = (f"{p['metric']}, {p.get('method', 'awt')} − {p.get('baseline', 'random')}"
                if named and key == "paired" else p["metric"])
      per_seed = ", ".join(f"{100 * d:+.1f}" for d in p["differences"])
      se = f" ± {100 * p['stderr']:.1f}" if "stderr" in p else ""
      pval = f"{p['p_value']:.3f}" if "p_value" in p else ""
      lines.append(f"| {100 * p['target_density']:.1f}% | {metric} | {per_seed} | "
                   f"{100 * p['mean']:+.1f}{se} | {p['awt_ahead']}/{p['n']} | {pval} |")
  return "\n".join(lines) + "\n"


def plot(result: dict, path: pathlib.Path, title: str) -> bool:
  rows = result["rows"]
  attack = sweep.headline_attack(rows)
  if attack is None:
    return False
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4))
  for i, method in enumerate(sorted({r["method"] for r in rows})):
    mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["density"])
    means = [100 * r["robust_accuracy"][attack]["mean"] for r in mine]
    # Standard errors, as the tables quote (older aggregates hold the std only).
    errors = [100 * r["robust_accuracy"][attack]["std"] / math.sqrt(r["n"]) for r in mine]
    if method == "dense":
      ax.axhline(means[0], color="k", ls="--", lw=1, label="dense (mean)")
      ax.axhspan(means[0] - errors[0], means[0] + errors[0], color="k", alpha=0.08)
      continue
    ax.errorbar([100 * r["density"] for r in mine], means, yerr=errors, fmt="o-", capsize=3,
                label=f"{method} (mean ± s.e.)", color=f"C{i}")
    for r in mine:  # Each seed, so a reader sees the draws, not only their summary.
      ax.plot([100 * r["density"]] * r["n"],
              [100 * v for v in r["robust_accuracy"][attack]["values"]], ".",
              color=f"C{i}", alpha=0.4)
  ax.set_xscale("log")
  ticks = sorted({100 * r["density"] for r in rows if r["method"] != "dense"})
  ax.set_xticks(ticks, [f"{t:.3g}" for t in ticks])
  ax.minorticks_off()
  ax.set_xlabel("density (% of prunable weights kept)")
  ax.set_ylabel(f"robust accuracy, {attack} (%)")
  ax.set_title(title, fontsize=9)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return True


def write(folder: pathlib.Path, name: str, result: dict) -> str:
  """`<name>.json`, `.md` and `.png` of an aggregated result, in `folder`."""
  folder.mkdir(parents=True, exist_ok=True)
  (folder / f"{name}.json").write_text(json.dumps(result, indent=1))
  md = markdown(result)
  (folder / f"{name}.md").write_text(md)
  schedule = result.get("schedule") or {}
  title = (f"{os.path.basename(str(result['config_file']))}: search "
           f"{schedule.get('search_epochs')} + train {schedule.get('train_epochs')} epochs, "
           f"seeds {result['seeds']}")
  tm = result.get("threat_model")
  if tm:
    # Wrapped: the full suite's description is longer than the figure is wide.
    title += "\n" + "\n".join(textwrap.wrap(sweep.threat_model_text(tm), 80))
  plot(result, folder / f"{name}.png", title)
  return md


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("sweeps", nargs="+", help="sweep result names (<out>/<name>.json)")
  parser.add_argument("--name", required=True, help="output name under --out")
  parser.add_argument("--out", help="results folder (default benchmarks/results)")
  args = parser.parse_args(argv)
  if len(args.sweeps) < 2:
    raise SystemExit("give at least two sweeps (seeds) to measure a spread")
  out = pathlib.Path(args.out) if args.out else RESULTS
  sweeps = load(args.sweeps, out)
  result = {"inputs": args.sweeps, "preset": sweeps[0]["preset"],
            "config_file": sweeps[0]["config_file"],
            "overrides": _without_seed(sweeps[0]["overrides"]),
            "threat_model": threat_model_of(sweeps[0]),
            "schedule": sweeps[0].get("schedule"), **aggregate(sweeps)}
  # Written whole to a temporary folder first: an interrupted run leaves
  # the committed files as they were.
  tmp = out / f".{args.name}.tmp"
  shutil.rmtree(tmp, ignore_errors=True)
  try:
    md = write(tmp, args.name, result)
    for path in sorted(tmp.iterdir()):
      os.replace(path, out / path.name)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  print(md)
  print(f"wrote {out / args.name}.json, .md, .png")
  return 0


if __name__ == "__main__":
  sys.exit(main())
