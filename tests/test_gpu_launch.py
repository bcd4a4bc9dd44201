"""launch/gpu_vgg16.sh in its smoke form, on CPU, without TensorFlow or CLU.

The GPU machine has jax, flax, optax and orbax but no TensorFlow, TFDS or
clu: stub modules that raise ImportError stand in for them here, so the
script must run the VGG-16 search, training and evaluation from image
folders without them, and export a folder of at most 60 MB.
"""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parents[1]
CLASSES = [f"class{i}" for i in range(10)]


def _image_folders(root: pathlib.Path, per_class: dict) -> None:
  rng = np.random.default_rng(0)
  for split, count in per_class.items():
    for label, name in enumerate(CLASSES):
      folder = root / split / name
      folder.mkdir(parents=True)
      for i in range(count):
        # A class-dependent colour plus noise: learnable, 32x32 RGB.
        pixels = np.clip(rng.normal(25 * label, 30, (32, 32, 3)), 0, 255)
        Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i:04d}.jpg")


def _blocked_modules(folder: pathlib.Path) -> None:
  for name in ("tensorflow", "tensorflow_datasets", "clu"):
    (folder / f"{name}.py").write_text(
        f"raise ImportError('{name} is not installed on the GPU machine')\n")


@pytest.mark.slow
def test_smoke_form_runs_and_exports_without_tensorflow(tmp_path):
  data = tmp_path / "cifar10"
  _image_folders(data, {"train": 12, "test": 4})
  stubs = tmp_path / "stubs"
  stubs.mkdir()
  _blocked_modules(stubs)
  out, work = tmp_path / "out", tmp_path / "work"
  env = dict(os.environ, PYTHON=sys.executable, SMOKE="1", WORKDIR=str(work),
             SITE=str(tmp_path / "site"), PYTHONPATH=str(stubs))
  command = [str(ROOT / "launch" / "gpu_vgg16.sh"), "4", str(data), str(out),
             "--config.methods=('dense','awt')", "--config.eval.attacks=('pgd',)"]
  done = subprocess.run(command, env=env, capture_output=True, text=True,
                        timeout=900, cwd=tmp_path)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  results = json.loads((out / "results.json").read_text())
  assert set(results["models"]) == {"dense", "awt"}
  for row in results["models"].values():
    assert row["threat_model"]["units"] == "pixels"
    assert "truncated" in row and row["steps"]["train"]["planned"] > 0
  # The ticket's mask, bit-packed, restores to a 5%-dense 0/1 pytree.
  packed = np.load(out / "masks" / "awt.npz")
  bits = [k for k in packed.files if k.endswith(":bits")]
  kept = total = 0
  for key in bits:
    shape = packed[key.replace(":bits", ":shape")]
    leaf = np.unpackbits(packed[key], count=int(np.prod(shape))).reshape(shape)
    kept, total = kept + leaf.sum(), total + leaf.size
  assert 0 < kept / total < 0.2
  manifest = json.loads((out / "export.json").read_text())
  assert manifest["size_mb"] <= 60
  assert (out / "status.json").exists() and (out / "console.log").exists()
  # No TensorFlow was imported: metrics went to the JSONL writer.
  assert (work / "metrics.jsonl").exists()
