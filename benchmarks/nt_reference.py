"""Writes the neural-tangents reference fixtures for the exact MTK.

Creates (if needed) the pinned environment `benchmarks/.nt-env` (jax 0.5.3,
neural-tangents 0.6.5, see `nt_env.py`) and runs `_nt_worker.py fixtures` in
it, which writes one `tests/fixtures/mtk_<case>.npz` per case:

* `x` (n, ...), `x_adv` (m, ...): float32 inputs in [0, 1]; `x_adv` is a
  3-step L∞ PGD (ε = 0.1) of the reference model, so the kernel is a real
  clean/adversarial one and the two batch sizes may differ.
* `params/<Layer_k>/<leaf>`: float32 parameters named and shaped exactly as
  the Flax module `scalable_awt.models.create_model(model, **model_kwargs)`.
* `model`, `model_kwargs` (JSON): how to rebuild that module.
* `logits_x`, `logits_x_adv`: the reference model's outputs (float64).
* `theta` (n, m, C, C) and `theta_traced` (n, m): NT's Jacobian contraction
  in float64, with `theta[i, j, c, d] = ⟨∂f_c(x_i)/∂θ, ∂f_d(x̃_j)/∂θ⟩`
  (NT's layout for `trace_axes=()` with `kernel_fn(x, x_adv, params)`).
* `nt/<implementation>/{full,traced}`: all three NT implementations, and
  `nt_mutual_diff` (JSON): their pairwise max-abs and relative differences.

Everything is computed in float64 (jax x64) from float32-representable
inputs and parameters, so the fixtures check our float32 and float64 kernels.

    python benchmarks/nt_reference.py [--out tests/fixtures]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import nt_env  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORKER = pathlib.Path(__file__).resolve().parent / "_nt_worker.py"


def worker_env() -> dict:
  env = dict(os.environ)
  env["JAX_PLATFORMS"] = env.get("NT_JAX_PLATFORMS", "cpu")
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  env.pop("XLA_FLAGS", None)
  return env


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", default=str(ROOT / "tests" / "fixtures"))
  args = parser.parse_args()
  python = nt_env.ensure()
  result = subprocess.run([str(python), str(WORKER), "fixtures", args.out],
                          env=worker_env(), check=True, stdout=subprocess.PIPE, text=True)
  summary = json.loads(result.stdout.strip().splitlines()[-1])
  total = sum(p.stat().st_size for p in pathlib.Path(args.out).glob("mtk_*.npz"))
  print(f"fixtures in {args.out}: {total / 1e6:.2f} MB")
  print("neural-tangents implementations, pairwise differences (float64):")
  for case, diffs in summary.items():
    worst = max(d["rel_fro"] for d in diffs.values())
    worst_abs = max(d["max_abs"] for d in diffs.values())
    print(f"  {case:18s} max rel {worst:.2e}  max abs {worst_abs:.2e}")


if __name__ == "__main__":
  main()
