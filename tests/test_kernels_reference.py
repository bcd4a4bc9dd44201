"""The exact MTK against neural-tangents, an independent implementation.

The fixtures in `tests/fixtures/mtk_*.npz` were written by
`benchmarks/nt_reference.py`, which runs neural-tangents 0.6.5 on jax 0.5.3
in its own pinned environment (it does not import on the JAX we use) with
the models re-implemented as plain JAX functions, in float64. Each holds the
inputs, real PGD adversarial inputs (the clean and adversarial batch sizes
differ in the `*_rect` cases), the float32 parameters under the Flax
modules' own names, the reference logits and NT's kernels.

Here we rebuild the Flax module, check that it reproduces the reference
logits (so both sides computed the same network), and compare every
implementation of `exact_mtk` (full and traced, chunked too) and
`exact_mtk_diagonal` with NT's kernel: relative Frobenius error at most 1e-5
in float32 and 1e-10 in float64 (JAX's x64 mode, switched on only inside
the test with `jax.enable_x64`).

    python tests/test_kernels_reference.py   # prints the measured errors
"""

from __future__ import annotations

import contextlib
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scalable_awt import kernels, models

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"
CASES = sorted(p.stem[len("mtk_"):] for p in FIXTURES.glob("mtk_*.npz"))
# Chunking and the diagonal exercise no new layer types: the unequal-batch
# ("rect") and paper cases cover them, which keeps the suite's compile time down.
SECONDARY_CASES = [case for case in CASES if "square" not in case]
IMPLEMENTATIONS = ("jacobian", "ntk_vector_products", "structured")
TOLERANCE = {"float32": 1e-5, "float64": 1e-10}
LOGIT_TOLERANCE = {"float32": 1e-5, "float64": 1e-12}


def load_case(case: str) -> dict:
  with np.load(FIXTURES / f"mtk_{case}.npz") as data:
    fixture = {key: data[key] for key in data.files}
  params: dict = {}
  for key, value in fixture.items():
    if key.startswith("params/"):
      node = params
      *path, leaf = key[len("params/"):].split("/")
      for part in path:
        node = node.setdefault(part, {})
      node[leaf] = value
  fixture["params"] = params
  fixture["model_name"] = str(fixture["model"])
  fixture["kwargs"] = json.loads(str(fixture["model_kwargs"]))
  return fixture


def precision(dtype: str):
  """float64 inside `jax.enable_x64`, which does not leak past the block."""
  if dtype == "float64":
    return jax.enable_x64(True)
  return contextlib.nullcontext()


def build(fixture: dict, dtype: str):
  """(apply_fn, params, x, x_adv) in `dtype`; call inside `precision(dtype)`."""
  model = models.create_model(fixture["model_name"], **fixture["kwargs"])
  apply_fn = models.make_apply_fn(model)
  cast = lambda v: jnp.asarray(v, dtype)  # noqa: E731
  return (apply_fn, jax.tree.map(cast, fixture["params"]), cast(fixture["x"]),
          cast(fixture["x_adv"]))


def relative_error(ours, reference) -> float:
  ours = np.asarray(ours, np.float64)
  assert ours.shape == reference.shape, (ours.shape, reference.shape)
  return float(np.linalg.norm(ours - reference) / np.linalg.norm(reference))


def mtk_errors(case: str, implementation: str, dtype: str, chunk_size=None) -> dict:
  """Relative errors of `exact_mtk` (full and traced) against NT."""
  fixture = load_case(case)
  with precision(dtype):
    apply_fn, params, x, x_adv = build(fixture, dtype)
    fn = jax.jit(kernels.exact_mtk, static_argnums=0,
                 static_argnames=("trace_outputs", "implementation", "chunk_size"))
    full = fn(apply_fn, params, x, x_adv, trace_outputs=False,
              implementation=implementation, chunk_size=chunk_size)
    traced = fn(apply_fn, params, x, x_adv, trace_outputs=True,
                implementation=implementation, chunk_size=chunk_size)
    assert full.dtype == jnp.dtype(dtype) and traced.dtype == jnp.dtype(dtype)
    full, traced = np.asarray(full), np.asarray(traced)
  return {"full": relative_error(full, fixture["theta"]),
          "traced": relative_error(traced, fixture["theta_traced"])}


def diagonal_errors(case: str, implementation: str, dtype: str) -> dict:
  """Relative errors of `exact_mtk_diagonal` on the first min(n, m) pairs."""
  fixture = load_case(case)
  k = min(fixture["x"].shape[0], fixture["x_adv"].shape[0])
  rows = np.arange(k)
  with precision(dtype):
    apply_fn, params, x, x_adv = build(fixture, dtype)
    fn = jax.jit(kernels.exact_mtk_diagonal, static_argnums=0,
                 static_argnames=("trace_outputs", "implementation"))
    full = np.asarray(fn(apply_fn, params, x[:k], x_adv[:k], trace_outputs=False,
                         implementation=implementation))
    traced = np.asarray(fn(apply_fn, params, x[:k], x_adv[:k], trace_outputs=True,
                           implementation=implementation))
  return {"full": relative_error(full, fixture["theta"][rows, rows]),
          "traced": relative_error(traced, fixture["theta_traced"][rows, rows])}


def test_fixtures_present():
  assert len(CASES) >= 4, f"expected the reference fixtures in {FIXTURES}"


@pytest.mark.parametrize("case", CASES)
def test_fixture_params_match_flax_module(case):
  fixture = load_case(case)
  model = models.create_model(fixture["model_name"], **fixture["kwargs"])
  shapes = jax.eval_shape(lambda: models.init_model(
      model, jax.random.PRNGKey(0), fixture["x"].shape)[0])
  expected = {"/".join(str(k.key) for k in path): tuple(leaf.shape)
              for path, leaf in jax.tree_util.tree_leaves_with_path(shapes)}
  stored = {"/".join(str(k.key) for k in path): tuple(np.shape(leaf))
            for path, leaf in jax.tree_util.tree_leaves_with_path(fixture["params"])}
  assert stored == expected


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", CASES)
def test_flax_module_reproduces_reference_logits(case, dtype):
  fixture = load_case(case)
  with precision(dtype):
    apply_fn, params, x, x_adv = build(fixture, dtype)
    logits = np.asarray(apply_fn(params, x))
    logits_adv = np.asarray(apply_fn(params, x_adv))
  assert relative_error(logits, fixture["logits_x"]) <= LOGIT_TOLERANCE[dtype]
  assert relative_error(logits_adv, fixture["logits_x_adv"]) <= LOGIT_TOLERANCE[dtype]


@pytest.mark.parametrize("case", CASES)
def test_reference_implementations_agree(case):
  """NT's three implementations agreed with each other when the fixture was made."""
  fixture = load_case(case)
  diffs = json.loads(str(fixture["nt_mutual_diff"]))
  assert max(d["rel_fro"] for d in diffs.values()) <= 1e-12
  num_classes = fixture["theta"].shape[-1]
  np.testing.assert_allclose(fixture["theta_traced"],
                             np.einsum("ijcc->ij", fixture["theta"]), rtol=1e-12)
  # NT's own traced output is the mean over the outputs, ours the sum.
  np.testing.assert_allclose(
      num_classes * fixture["nt/jacobian_contraction/traced"], fixture["theta_traced"],
      rtol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("case", CASES)
def test_exact_mtk_matches_neural_tangents(case, implementation, dtype):
  errors = mtk_errors(case, implementation, dtype)
  print(f"\n{case} {implementation} {dtype}: {errors}")
  assert errors["full"] <= TOLERANCE[dtype], errors
  assert errors["traced"] <= TOLERANCE[dtype], errors


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("case", SECONDARY_CASES)
def test_exact_mtk_chunked_matches_neural_tangents(case, implementation):
  # chunk_size=2 splits every batch unevenly (n, m in {3, 4, 5}), so padding
  # and cropping are exercised too.
  errors = mtk_errors(case, implementation, "float32", chunk_size=2)
  print(f"\n{case} {implementation} chunk_size=2: {errors}")
  assert errors["full"] <= TOLERANCE["float32"], errors
  assert errors["traced"] <= TOLERANCE["float32"], errors


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("case", SECONDARY_CASES)
def test_exact_mtk_diagonal_matches_neural_tangents(case, implementation, dtype):
  errors = diagonal_errors(case, implementation, dtype)
  print(f"\n{case} {implementation} {dtype} diagonal: {errors}")
  assert errors["full"] <= TOLERANCE[dtype], errors
  assert errors["traced"] <= TOLERANCE[dtype], errors


def test_x64_does_not_leak():
  assert jnp.asarray(1.0).dtype == jnp.float32


def _print_error_table():
  worst: dict = {}
  print(f"{'case':18s} {'implementation':20s} {'dtype':8s} {'what':10s} "
        f"{'full':>9s} {'traced':>9s}")
  for case in CASES:
    for implementation in IMPLEMENTATIONS:
      rows = []
      for dtype in ("float32", "float64"):
        rows.append((dtype, "mtk", mtk_errors(case, implementation, dtype)))
        rows.append((dtype, "diagonal", diagonal_errors(case, implementation, dtype)))
      rows.append(("float32", "chunk=2", mtk_errors(case, implementation, "float32", 2)))
      for dtype, what, errors in rows:
        print(f"{case:18s} {implementation:20s} {dtype:8s} {what:10s} "
              f"{errors['full']:9.2e} {errors['traced']:9.2e}")
        key = (implementation, dtype)
        worst[key] = max(worst.get(key, 0.0), errors["full"], errors["traced"])
  print("\nmax relative error over cases (full, traced, diagonal, chunked):")
  for (implementation, dtype), value in sorted(worst.items()):
    print(f"  {implementation:20s} {dtype:8s} {value:.2e}")


if __name__ == "__main__":
  _print_error_table()
