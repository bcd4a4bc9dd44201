"""results.json: one row per method, with the threat model and provenance.

    {"config": {...resolved config...}, "dataset": {...}, "devices": {...},
     "target_density": d, "wall_time_s": {phase: s}, "plots": {...},
     "models": {method: row}}

A row (`model_row`) carries the ticket's densities, the `split` its accuracies
are on ("test"; "validation" in a recipe study, `eval.split`), its
`natural_accuracy`, `robust_accuracy` (per attack) and
`robust_accuracy_all_attacks` (per-example worst case over the suite), the
`threat_model` ({"norm", "epsilon", "units", "attacks": [...]}), the
`validation` split's {"natural_accuracy", "robust_accuracy"} when it was
evaluated, the search's wall time, the steps run against those planned (`steps`,
`truncated`: a time budget may cut a phase short) and the training curve.
"""

from __future__ import annotations

import os

import jax

from scalable_awt import distribution, masks
from scalable_awt import metrics as metrics_lib


def threat_model(settings, result: dict, dataset_domain) -> dict:
  """The result's threat model; built from the settings if it has none."""
  if "threat_model" in result:
    return result["threat_model"]
  e = settings.eval
  steps = {"pgd": e.pgd_steps, "cw": e.pgd_steps, "apgd_ce": e.apgd_steps,
           "apgd_t": e.apgd_steps, "square": e.square_queries, "fgsm": 1}
  return {"norm": result["norm"], "epsilon": result["epsilon"],
          # Attacks run in the data's own domain: [0, 1] images are pixels.
          "units": "pixels" if tuple(dataset_domain or ()) == (0.0, 1.0)
                   else "inputs",
          "attacks": [{"name": name, "steps": steps[name],
                       "restarts": 1 if name in ("fgsm", "square")
                       else e.pgd_restarts} for name in e.attacks]}


def _density(mask, params) -> dict:
  tree = (distribution.to_host(mask) if mask is not None
          else masks.ones_like(distribution.to_host(params)))
  return masks.density_report(tree)


def model_row(settings, evaluation: dict, *, mask, params, dataset_domain,
              search_info, curve, train_info=None) -> dict:
  """The results.json row of one method (see the module docstring)."""
  res = evaluation["reported"]
  report = _density(mask, params)
  row = {
      # The split the accuracies below are on: "test", or "validation" in a
      # recipe study (eval.split), where the test set is not evaluated.
      "split": evaluation.get("split", "test"),
      "density": report["density_prunable"],
      "density_all_parameters": report["density_all"],
      "density_per_layer": report["per_layer"],
      "threat_model": threat_model(settings, res, dataset_domain),
      "natural_accuracy": res["natural_accuracy"],
      "robust_accuracy": dict(res["robust_accuracy_per_attack"]),
      "robust_accuracy_all_attacks": res.get("robust_accuracy_all_attacks",
                                             res["robust_accuracy"]),
      "epsilon": res["epsilon"], "norm": res["norm"],
      "num_examples": res["num_examples"],
      "per_class_accuracy": res["per_class_accuracy"],
      "search_wall_s": (search_info or {}).get("wall_s"),
      "curve": curve,
  }
  # Steps run against steps planned, where a time budget (budget.py) may
  # have cut a phase short.
  train_info = train_info if isinstance(train_info, dict) else {}
  row["steps"] = {"search": (search_info or {}).get("steps"),
                  "train": {"done": train_info.get("steps"),
                            "planned": train_info.get("planned_steps",
                                                      train_info.get("steps"))}}
  row["truncated"] = bool(train_info.get("truncated")) or bool(
      (search_info or {}).get("steps") and
      search_info["steps"]["done"] < search_info["steps"]["planned"])
  validation = evaluation.get("validation")
  if validation is not None:
    row["validation"] = {
        "natural_accuracy": validation["natural_accuracy"],
        "robust_accuracy": dict(validation["robust_accuracy_per_attack"]),
        "num_examples": validation["num_examples"]}
  return row


def start(workdir: str, settings, dataset_info: dict) -> dict:
  """results.json as it stands (earlier methods kept), with fresh provenance."""
  results = metrics_lib.read_json(os.path.join(workdir, "results.json"),
                                  {"models": {}})
  results["config"] = settings.config_json
  results["dataset"] = dataset_info
  results["devices"] = {"count": jax.device_count(),
                        "platform": jax.devices()[0].platform,
                        "processes": jax.process_count()}
  return results


def finish(workdir: str, settings, results: dict, *, wall_time_s: dict,
           histories: dict) -> dict:
  """Adds densities, wall times and the accuracy plot; writes results.json."""
  results["target_density"] = settings.search.density
  results["wall_time_s"] = dict(wall_time_s)
  results["plots"] = {}
  # The split the training curve watched (train_phase: validation if held out).
  split = next((row["curve_split"] for history in histories.values() for row in history
                if "curve_split" in row), "test")
  plot = metrics_lib.plot_curves(
      os.path.join(workdir, "plots", "accuracy.png"),
      {m: h for m, h in histories.items() if h},
      keys=(("train_adv_accuracy", "train (adversarial)"),
            (f"{split}_natural_accuracy", f"{split} natural"),
            (f"{split}_robust_accuracy", f"{split} robust (PGD)")),
      title=f"{settings.model.name} on {settings.data.name}, "
            f"{settings.attack.norm} eps = {settings.attack.epsilon:.4g} (pixels)")
  if plot:
    results["plots"]["accuracy"] = plot
  metrics_lib.write_json(os.path.join(workdir, "results.json"), results)
  return results


def finished(workdir: str, settings, status) -> dict | None:
  """results.json if this exact config already ran every phase, else None."""
  results = metrics_lib.read_json(os.path.join(workdir, "results.json"))
  if results is None or results.get("config") != settings.config_json:
    return None
  for method in settings.methods:
    for phase in settings.phases:
      if not status.done(phase, method):
        return None
    if "evaluate" in settings.phases and method not in results.get("models", {}):
      return None
  return results


def summary_lines(results: dict) -> list[str]:
  """The console summary: the threat model, then one line per method."""
  models = results.get("models", {})
  lines = []
  threat = next((m.get("threat_model") for m in models.values()), None)
  if threat:  # Every robust accuracy with its threat model.
    norm = {"linf": "L-inf", "l2": "L2"}.get(threat["norm"], threat["norm"])
    lines.append(f"threat model: {norm} eps = {threat['epsilon']:.4g} "
                 f"({threat.get('units', 'pixels')})")
  splits = {m.get("split", "test") for m in models.values()}
  if "validation" in splits:
    lines.append("evaluated on the validation split (eval.split): a recipe study; "
                 "the test set was not evaluated")
  for name, m in models.items():
    robust = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                       for k, v in m["robust_accuracy"].items())
    worst = m.get("robust_accuracy_all_attacks")
    worst = f", worst case {worst:.3f}" if isinstance(worst, float) else ""
    lines.append(f"{name}: density {m['density']:.3f}, natural "
                 f"{m['natural_accuracy']:.3f}, robust {robust}{worst}")
  return lines
