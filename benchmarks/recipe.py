"""Recipe studies on the validation split: which setting to use, chosen without the test set.

A recipe choice (layer-density allocation, mask schedule, learning rate, ε
ramp, search length, γ, k) is a set of config overrides. This runs each named
variant for the given methods, density and seeds with `eval.split=validation`
(the attack suite on the held-out split; the test set is never evaluated),
and writes under `--out` (default benchmarks/results/):

    <name>.json  {"variants", "selection", "rows", "summary", "chosen", ...}
    <name>.md    the threat model; per variant and method, mean ± s.e. over
                 seeds of natural and robust accuracy on the validation split;
                 the chosen variant
    <name>.png   the selection metric per variant and method

The chosen variant maximises the mean over seeds of the headline robust
accuracy (the worst case over the suite, else PGD) of the `--select` methods
(default: all of them, averaged), so a baseline is never tuned for less than
the method it is compared with. Each variant's runs are resumable
(workdirs under `--runs`), as in sweep.py.

    python benchmarks/recipe.py --config configs/paper/mnist_mlp_table1.py \\
        --density 0.036 --methods awt,random --seeds 0,1,2 \\
        --set search.epochs=1 --set train.epochs=10 --set eval.num_examples=1000 \\
        --variant lth search.mask_distribution=lth \\
        --variant erk search.mask_distribution=erk \\
        --variant uniform search.mask_distribution=uniform \\
        --name recipe_mask_distribution
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import statistics
import sys
import textwrap
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import seeds  # noqa: E402  Mean and standard error, as the seed tables compute them.
import sweep  # noqa: E402  The runner call, config loading and report helpers.

SPLIT = "eval.split=validation"


def summarise(rows, select) -> tuple[list[dict], str]:
  """Per (variant, method): mean ± s.e. over seeds; and the chosen variant."""
  attack = sweep.headline_attack(rows)
  by_key: dict[tuple, list] = {}
  for row in rows:
    by_key.setdefault((row["variant"], row["method"]), []).append(row)
  summary = []
  for (variant, method), draws in by_key.items():
    summary.append({"variant": variant, "method": method, "n": len(draws),
                    "seeds": [r["seed"] for r in draws],
                    "natural_accuracy": seeds.spread([r["natural_accuracy"] for r in draws]),
                    "robust_accuracy": seeds.spread([r["robust_accuracy"][attack] for r in draws]),
                    "attack": attack})
  scores = {}
  for entry in summary:
    if not select or entry["method"] in select:
      scores.setdefault(entry["variant"], []).append(entry["robust_accuracy"]["mean"])
  if not scores:
    raise SystemExit(f"--select {','.join(select)}: none of these methods ran")
  chosen = max(scores, key=lambda v: statistics.fmean(scores[v]))
  for entry in summary:
    entry["selection_score"] = statistics.fmean(scores.get(entry["variant"], [math.nan]))
  return summary, chosen


def markdown(result: dict) -> str:
  attack = result["summary"][0]["attack"]
  lines = ["Evaluated on the **validation split** only (`eval.split=validation`); the test "
           "set was not evaluated.", ""]
  if result.get("threat_model"):
    lines += [f"Threat model: {sweep.threat_model_text(result['threat_model'])}.", ""]
  select = ", ".join(result["selection"]) or "every method"
  lines += [f"Mean ± standard error over seeds {result['seeds']} (%); selection: the highest "
            f"mean {attack} of {select}.", "",
            "| variant | overrides | method | natural | " + attack + " | selection score |",
            "|---|---|---|---:|---:|---:|"]
  for e in result["summary"]:
    mark = " **(chosen)**" if e["variant"] == result["chosen"] else ""
    overrides = ", ".join(f"`{o}`" for o in result["variants"][e["variant"]])
    nat, rob = e["natural_accuracy"], e["robust_accuracy"]
    lines.append(f"| {e['variant']}{mark} | {overrides} | {e['method']} | "
                 f"{100 * nat['mean']:.2f} ± {100 * nat['stderr']:.2f} | "
                 f"{100 * rob['mean']:.2f} ± {100 * rob['stderr']:.2f} | "
                 f"{100 * e['selection_score']:.2f} |")
  return "\n".join(lines) + "\n"


def plot(result: dict, path: pathlib.Path) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  variants = list(result["variants"])
  methods = sorted({e["method"] for e in result["summary"]})
  width = 0.8 / max(len(methods), 1)
  fig, ax = plt.subplots(figsize=(6, 4))
  for i, method in enumerate(methods):
    entries = {e["variant"]: e for e in result["summary"] if e["method"] == method}
    xs = [k + i * width for k, v in enumerate(variants) if v in entries]
    ax.bar(xs, [100 * entries[v]["robust_accuracy"]["mean"] for v in variants if v in entries],
           width, yerr=[100 * entries[v]["robust_accuracy"]["stderr"] for v in variants
                        if v in entries], capsize=3, label=method)
  ax.set_xticks([k + 0.4 - width / 2 for k in range(len(variants))],
                [v + (" (chosen)" if v == result["chosen"] else "") for v in variants])
  ax.set_ylabel(f"validation {result['summary'][0]['attack']} (%), mean ± s.e.")
  tm = result.get("threat_model")
  threat = "\n".join(textwrap.wrap(sweep.threat_model_text(tm), 90)) if tm else ""
  ax.set_title(f"{result['name']}: validation split only" + (f"\n{threat}" if threat else ""),
               fontsize=8)
  ax.legend(fontsize=7)
  ax.grid(alpha=0.3, axis="y")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", required=True, metavar="configs/paper/X.py[:arg]")
  parser.add_argument("--variant", nargs="+", action="append", required=True,
                      metavar="NAME_THEN_KEY=VALUE",
                      help="a named setting, then its overrides, e.g. --variant erk "
                           "search.mask_distribution=erk (repeatable; two at least)")
  parser.add_argument("--set", dest="overrides", action="append", default=[],
                      metavar="group.key=value", help="shared override (repeatable)")
  parser.add_argument("--density", type=float, required=True)
  parser.add_argument("--methods", required=True, help="comma-separated")
  parser.add_argument("--seeds", default="0", help="comma-separated")
  parser.add_argument("--select", default="",
                      help="methods whose mean robust accuracy picks the variant "
                           "(comma-separated; default: all)")
  parser.add_argument("--name", required=True)
  parser.add_argument("--out", help="results folder (default benchmarks/results)")
  parser.add_argument("--runs", help="workdir root (default runs/recipe_<name>)")
  args = parser.parse_args(argv)

  variants = {}
  for name, *overrides in args.variant:
    if name in variants:
      raise SystemExit(f"--variant {name}: named twice")
    if "=" in name:
      raise SystemExit(f"--variant {name}: give the variant a name first, then its "
                       "overrides (--variant erk search.mask_distribution=erk)")
    variants[name] = list(overrides)
  if len(variants) < 2:
    raise SystemExit("--variant: a recipe study compares two variants at least")
  if not 0 < args.density <= 1:
    raise SystemExit(f"--density {args.density}: must be in (0, 1]")
  for assignment in [*args.overrides, *(o for v in variants.values() for o in v)]:
    if assignment.partition("=")[0].strip() == "eval.split":
      raise SystemExit(f"{assignment}: a recipe study always evaluates the validation split")
  methods = tuple(m for m in args.methods.split(",") if m)
  select = [m for m in args.select.split(",") if m]
  if set(select) - set(methods):
    raise SystemExit(f"--select {args.select}: not among --methods {args.methods}")
  seeds = [int(s) for s in args.seeds.split(",") if s]
  out = pathlib.Path(args.out) if args.out else sweep.RESULTS
  runs = pathlib.Path(args.runs or sweep.ROOT / "runs" / f"recipe_{args.name}")
  preset = sweep.Preset(config=args.config, densities=(args.density,), methods=methods,
                        dense=False)
  rows, config, start = [], None, time.time()
  for variant, overrides in variants.items():
    for seed in seeds:
      point_rows, config = sweep.run_point(
          preset, [*args.overrides, *overrides, SPLIT], methods=methods,
          density=args.density, estimator=None, runs=runs / variant, seed=seed)
      for row in point_rows:
        if row.get("split") != "validation":
          raise SystemExit(f"{variant}: a row was evaluated on {row.get('split')!r}, "
                           "not the validation split; nothing written")
        rows.append(dict(row, variant=variant))
  summary, chosen = summarise(rows, select)
  result = {"name": args.name, "config_file": args.config, "overrides": args.overrides,
            "variants": variants, "selection": select, "density": args.density,
            "methods": list(methods), "seeds": seeds, "split": "validation",
            "threat_model": rows[0]["threat_model"] if rows else None,
            "rows": rows, "summary": summary, "chosen": chosen,
            "wall_s": time.time() - start, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}

  def write(folder):
    (folder / f"{args.name}.json").write_text(json.dumps(result, indent=1))
    (folder / f"{args.name}.md").write_text(markdown(result))
    plot(result, folder / f"{args.name}.png")
  out.mkdir(parents=True, exist_ok=True)
  sweep.publish(out, args.name, write)
  print(markdown(result))
  print(f"chosen: {chosen} ({', '.join(variants[chosen]) or 'no overrides'})")
  return 0


if __name__ == "__main__":
  sys.exit(main())
