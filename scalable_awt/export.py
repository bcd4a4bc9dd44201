"""A run's evidence in one small folder: results, masks, timings, plots.

`export_run(workdir, out)` copies what a reader of a finished run needs and
nothing it can recompute: results.json, config.json, dataset.json and
status.json (phase wall times, steps run against steps planned), the plots,
and each ticket's mask as bit-packed arrays (`masks/<method>.npz`, one
entry per parameter path, `np.unpackbits(..., count=size).reshape(shape)`
restores it). Checkpoints stay in the workdir: VGG-16's weights alone are
60 MB a copy. The folder's size is checked against `max_mb`.
"""

from __future__ import annotations

import json
import os
import shutil

import jax
import numpy as np

from scalable_awt import distribution, masks, metrics, models, rng, search_phase
from scalable_awt import settings as settings_lib
from scalable_awt import workdir as workdir_lib

_FILES = ("results.json", "config.json", "dataset.json", "status.json")


def _packed(mask) -> dict[str, np.ndarray]:
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(mask)[0]:
    name = "/".join(str(getattr(p, "key", p)) for p in path)
    leaf = np.asarray(leaf, bool)
    out[name + ":bits"] = np.packbits(leaf.ravel())
    out[name + ":shape"] = np.asarray(leaf.shape, np.int64)
  return out


def export_masks(workdir: str, out: str) -> list[str]:
  """Writes `out/masks/<method>.npz` for every searched or masked ticket."""
  raw = metrics.read_json(os.path.join(workdir, "config.json"))
  info = metrics.read_json(os.path.join(workdir, "dataset.json"))
  settings = settings_lib.from_saved(raw)
  status = workdir_lib.Status(workdir)
  model = settings.model.build(info["num_classes"])
  params, _ = models.init_model(model, rng.phase_keys(settings.seed)["init"],
                                [1] + list(info["image_shape"]))
  mesh = distribution.make_mesh(jax.devices()[:1])
  written = []
  for method in settings.methods:
    if not status.done("search", method):
      continue
    mask = search_phase.load_mask(workdir, method, params, mesh, status)
    if mask is None:
      continue
    path = os.path.join(out, "masks", f"{method}.npz")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.savez_compressed(path, **_packed(distribution.to_host(mask)),
                        density=masks.density_report(
                            distribution.to_host(mask))["density_prunable"])
    written.append(path)
  return written


def folder_mb(path: str) -> float:
  return sum(os.path.getsize(os.path.join(root, f))
             for root, _, files in os.walk(path) for f in files) / 2**20


def export_run(workdir: str, out: str, *, max_mb: float = 60.0) -> dict:
  """Copies the run's evidence into `out` (see the module docstring)."""
  os.makedirs(out, exist_ok=True)
  copied = []
  for name in _FILES:
    if os.path.exists(os.path.join(workdir, name)):
      shutil.copy2(os.path.join(workdir, name), os.path.join(out, name))
      copied.append(name)
  plots = os.path.join(workdir, "plots")
  if os.path.isdir(plots):
    shutil.copytree(plots, os.path.join(out, "plots"), dirs_exist_ok=True)
  copied += [os.path.relpath(p, out) for p in export_masks(workdir, out)]
  size = folder_mb(out)
  manifest = {"files": copied, "size_mb": round(size, 3), "max_mb": max_mb}
  with open(os.path.join(out, "export.json"), "w") as f:
    json.dump(manifest, f, indent=2)
  if size > max_mb:
    raise RuntimeError(f"{out} holds {size:.1f} MB, over the {max_mb} MB limit.")
  return manifest


if __name__ == "__main__":
  import sys
  if len(sys.argv) != 3:
    sys.exit("usage: python -m scalable_awt.export WORKDIR OUT")
  print(json.dumps(export_run(sys.argv[1], sys.argv[2]), indent=2))
