"""neural-tangents side of the reference fixtures and the exact-kernel benchmark.

Runs in the pinned environment `benchmarks/.nt-env` (jax 0.5.3,
neural-tangents 0.6.5; see `nt_env.py`), never in the project's environment.
It has no Flax: the paper's MLP and CNN are re-implemented here as plain JAX
functions that reproduce `scalable_awt.models` exactly, on parameter trees
with the same names and shapes as the Flax modules' (`Dense_0/kernel` is
`(in, out)`, `Conv_0/kernel` is HWIO, inputs NHWC, SAME convolutions,
2x2/stride-2 VALID max pools, NHWC flattening).

The numpy-only helpers at the top (`param_shapes`, `init_params`, ...) are
imported by the scripts that run in the project's environment too;
everything that needs JAX imports it inside functions.

    python _nt_worker.py fixtures OUT_DIR
    python _nt_worker.py bench SPEC.npz OUT.json
"""

from __future__ import annotations

import json
import math
import sys
import time

import numpy as np

# ----------------------------------------------------------------------------
# Numpy-only helpers (shared with the project-env scripts).
# ----------------------------------------------------------------------------

MLP_DEFAULTS = dict(features=(300, 100), num_classes=10)
CNN_DEFAULTS = dict(conv_features=(32, 64), kernel_size=(5, 5), dense_features=1024,
                    num_classes=10)


def model_config(name: str, kwargs: dict) -> dict:
  defaults = {"mlp": MLP_DEFAULTS, "cnn": CNN_DEFAULTS}[name]
  config = {**defaults, **kwargs}
  unknown = set(config) - set(defaults) - {"input_mean", "input_std"}
  if unknown:
    raise ValueError(f"Reference {name} does not implement {sorted(unknown)}")
  return config


def param_shapes(name: str, kwargs: dict, example_shape) -> dict[str, tuple]:
  """Flat `{"Layer_k/leaf": shape}` in the Flax modules' naming, in call order."""
  config = model_config(name, kwargs)
  shapes = {}
  if name == "mlp":
    width = math.prod(example_shape)
    for k, out in enumerate([*config["features"], config["num_classes"]]):
      shapes[f"Dense_{k}/kernel"] = (width, out)
      shapes[f"Dense_{k}/bias"] = (out,)
      width = out
    return shapes
  height, width, channels = example_shape
  kh, kw = config["kernel_size"]
  for k, out in enumerate(config["conv_features"]):
    shapes[f"Conv_{k}/kernel"] = (kh, kw, channels, out)
    shapes[f"Conv_{k}/bias"] = (out,)
    channels = out
    height, width = height // 2, width // 2  # 2x2 VALID max pool, stride 2
  flat = height * width * channels
  shapes["Dense_0/kernel"] = (flat, config["dense_features"])
  shapes["Dense_0/bias"] = (config["dense_features"],)
  shapes["Dense_1/kernel"] = (config["dense_features"], config["num_classes"])
  shapes["Dense_1/bias"] = (config["num_classes"],)
  return shapes


def init_params(name: str, kwargs: dict, example_shape, seed: int,
                bias_scale: float = 0.1) -> dict[str, np.ndarray]:
  """LeCun-normal kernels (std 1/sqrt(fan_in)) and small random biases, float32.

  Biases are non-zero on purpose so that their kernel terms and the ReLU
  patterns are generic.
  """
  rng = np.random.default_rng(seed)
  params = {}
  for key, shape in param_shapes(name, kwargs, example_shape).items():
    if key.endswith("kernel"):
      fan_in = math.prod(shape[:-1])
      value = rng.standard_normal(shape) / math.sqrt(fan_in)
    else:
      value = bias_scale * rng.standard_normal(shape)
    params[key] = value.astype(np.float32)
  return params


def nest(flat: dict) -> dict:
  """`{"Dense_0/kernel": v}` -> `{"Dense_0": {"kernel": v}}`."""
  tree: dict = {}
  for key, value in flat.items():
    node = tree
    *path, leaf = key.split("/")
    for part in path:
      node = node.setdefault(part, {})
    node[leaf] = value
  return tree


# ----------------------------------------------------------------------------
# Reference models in plain JAX.
# ----------------------------------------------------------------------------

def _jax():
  import types

  import jax
  # neural-tangents 0.6.5's structured derivatives reach for names that
  # jax 0.5.3 no longer re-exports from jax.interpreters.ad.
  jax.interpreters.ad.source_info_util = jax._src.source_info_util
  jax.interpreters.ad.config = types.SimpleNamespace(jax_enable_checks=False)
  return jax


def make_apply_fn(name: str, kwargs: dict):
  """`apply_fn(params, x) -> logits` for nested params, equal to the Flax module's."""
  jax = _jax()
  import jax.numpy as jnp
  from jax import lax

  config = model_config(name, kwargs)

  def normalise(x):
    if config.get("input_mean") is not None:
      x = x - jnp.asarray(config["input_mean"], x.dtype)
    if config.get("input_std") is not None:
      x = x / jnp.asarray(config["input_std"], x.dtype)
    return x

  def dense(p, x):
    return jnp.dot(x, p["kernel"], precision=lax.Precision.HIGHEST) + p["bias"]

  def mlp(params, x):
    x = normalise(x).reshape((x.shape[0], -1))
    for k in range(len(config["features"])):
      x = jax.nn.relu(dense(params[f"Dense_{k}"], x))
    return dense(params[f"Dense_{len(config['features'])}"], x)

  def cnn(params, x):
    x = normalise(x)
    for k in range(len(config["conv_features"])):
      p = params[f"Conv_{k}"]
      x = lax.conv_general_dilated(
          x, p["kernel"], window_strides=(1, 1), padding="SAME",
          dimension_numbers=("NHWC", "HWIO", "NHWC"),
          precision=lax.Precision.HIGHEST) + p["bias"]
      x = jax.nn.relu(x)
      x = lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    x = x.reshape((x.shape[0], -1))
    x = jax.nn.relu(dense(params["Dense_0"], x))
    return dense(params["Dense_1"], x)

  return {"mlp": mlp, "cnn": cnn}[name]


NT_IMPLEMENTATIONS = {1: "jacobian_contraction", 2: "ntk_vector_products",
                      3: "structured_derivatives"}


def nt_kernel_fn(apply_fn, implementation: int, trace: bool):
  jax = _jax()
  import neural_tangents as nt
  fn = nt.empirical_ntk_fn(
      apply_fn, trace_axes=(-1,) if trace else (), vmap_axes=0,
      implementation=nt.NtkImplementation(implementation))
  return jax.jit(fn)


def pgd(apply_fn, params, x, *, eps=0.1, step=0.04, steps=3):
  """Untargeted L∞ PGD from the clean point against the model's own labels."""
  jax = _jax()
  import jax.numpy as jnp

  labels = jnp.argmax(apply_fn(params, x), -1)

  def loss(inputs):
    logits = apply_fn(params, inputs)
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))

  adv = x
  for _ in range(steps):
    g = jax.grad(loss)(adv)
    adv = adv + step * jnp.sign(g)
    adv = jnp.clip(jnp.clip(adv, x - eps, x + eps), 0.0, 1.0)
  return adv


# ----------------------------------------------------------------------------
# Fixtures.
# ----------------------------------------------------------------------------

FIXTURE_CASES = [
    # name, model, kwargs, example shape, n, m
    ("mlp_small_square", "mlp", dict(features=(16, 8), num_classes=10), (8, 8, 1), 4, 4),
    ("mlp_small_rect", "mlp", dict(features=(16, 8), num_classes=10), (8, 8, 1), 5, 3),
    ("cnn_small_square", "cnn",
     dict(conv_features=(4, 8), kernel_size=(3, 3), dense_features=16, num_classes=10),
     (8, 8, 1), 4, 4),
    ("cnn_small_rect", "cnn",
     dict(conv_features=(4, 8), kernel_size=(3, 3), dense_features=16, num_classes=10),
     (8, 8, 1), 5, 3),
    # Odd spatial size (the VALID pools drop a row and column), two input
    # channels, a 5x3 kernel and three classes: exercises the layout.
    ("cnn_odd_rect", "cnn",
     dict(conv_features=(3, 5), kernel_size=(5, 3), dense_features=6, num_classes=3),
     (7, 9, 2), 3, 4),
    # The paper's MNIST MLP (784-300-100-10) at tiny n; its parameters are
    # most of the fixtures' size.
    ("mlp_paper", "mlp", dict(features=(300, 100), num_classes=10), (28, 28, 1), 3, 3),
]


def make_fixture(case, seed: int) -> dict:
  jax = _jax()
  import jax.numpy as jnp

  name, model, kwargs, example_shape, n, m = case
  params32 = init_params(model, kwargs, example_shape, seed)
  rng = np.random.default_rng(seed + 1)
  x32 = rng.uniform(0.0, 1.0, (n, *example_shape)).astype(np.float32)

  apply_fn = make_apply_fn(model, kwargs)
  params = jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), nest(params32))
  x = jnp.asarray(x32, jnp.float64)
  adv_source = jnp.asarray(
      rng.uniform(0.0, 1.0, (m, *example_shape)).astype(np.float32), jnp.float64)
  adv_source = x[:m] if m <= n else jnp.concatenate([x, adv_source[n:]])
  x_adv32 = np.asarray(pgd(apply_fn, params, adv_source)).astype(np.float32)
  x_adv = jnp.asarray(x_adv32, jnp.float64)

  out = {
      "case": np.array(name),
      "model": np.array(model),
      "model_kwargs": np.array(json.dumps(kwargs)),
      "x": x32,
      "x_adv": x_adv32,
      "logits_x": np.asarray(apply_fn(params, x)),
      "logits_x_adv": np.asarray(apply_fn(params, x_adv)),
  }
  for key, value in params32.items():
    out[f"params/{key}"] = value

  kernels = {}
  for impl, impl_name in NT_IMPLEMENTATIONS.items():
    for trace in (False, True):
      value = np.asarray(nt_kernel_fn(apply_fn, impl, trace)(x, x_adv, params))
      assert value.dtype == np.float64, value.dtype
      suffix = "traced" if trace else "full"
      kernels[(impl, trace)] = value
      out[f"nt/{impl_name}/{suffix}"] = value
  full = kernels[(1, False)]
  num_classes = full.shape[-1]
  assert full.shape == (n, m, num_classes, num_classes), full.shape
  # NT's trace_axes=(-1,) returns the *mean* over the output axis,
  # (1/C) Σ_c Θ[i, j, c, c]; ours (trace_outputs=True) is the sum.
  trace_sum = np.einsum("ijcc->ij", full)
  for impl in NT_IMPLEMENTATIONS:
    assert np.allclose(num_classes * kernels[(impl, True)], trace_sum, rtol=1e-12, atol=0)
  out["theta"] = full  # NT's Jacobian contraction, float64: the reference.
  out["theta_traced"] = num_classes * kernels[(1, True)]  # Σ_c, our convention

  diffs = {}
  for trace in (False, True):
    for a in NT_IMPLEMENTATIONS:
      for b in NT_IMPLEMENTATIONS:
        if a < b:
          ka, kb = kernels[(a, trace)], kernels[(b, trace)]
          diffs[f"{a}-{b}/{'traced' if trace else 'full'}"] = {
              "max_abs": float(np.max(np.abs(ka - kb))),
              "rel_fro": float(np.linalg.norm(ka - kb) / np.linalg.norm(ka)),
          }
  out["nt_mutual_diff"] = np.array(json.dumps(diffs))
  out["meta"] = np.array(json.dumps({
      "seed": seed, "example_shape": list(example_shape), "n": n, "m": m,
      "jax": jax.__version__, "neural_tangents": _nt_version(),
      "dtype": "float64 (inputs and params float32-representable)",
      "reference": "theta = NT NtkImplementation.JACOBIAN_CONTRACTION, trace_axes=()",
      "traced": ("theta_traced = C * NT(trace_axes=(-1,)) = sum_c theta[i, j, c, c]; "
                 "nt/*/traced is NT's raw output, the mean over c"),
      "layout": "theta[i, j, c, d] = <df_c(x_i)/dθ, df_d(x_adv_j)/dθ>, (n, m, C, C)",
  }))
  return out


def _nt_version():
  from importlib import metadata
  return metadata.version("neural-tangents")


def run_fixtures(out_dir: str) -> None:
  import pathlib
  jax = _jax()
  jax.config.update("jax_enable_x64", True)
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  summary = {}
  for index, case in enumerate(FIXTURE_CASES):
    fixture = make_fixture(case, seed=1000 + index)
    path = out / f"mtk_{case[0]}.npz"
    np.savez_compressed(path, **fixture)
    summary[case[0]] = json.loads(str(fixture["nt_mutual_diff"]))
    print(f"wrote {path} ({path.stat().st_size} bytes)", file=sys.stderr)
  print(json.dumps(summary))


# ----------------------------------------------------------------------------
# Benchmark.
# ----------------------------------------------------------------------------

def _memory(compiled) -> dict | None:
  try:
    stats = compiled.memory_analysis()
  except Exception:  # noqa: BLE001 - not every backend reports it
    return None
  if stats is None:
    return None
  fields = ("temp_size_in_bytes", "argument_size_in_bytes", "output_size_in_bytes",
            "alias_size_in_bytes", "generated_code_size_in_bytes")
  result = {f: int(getattr(stats, f, 0) or 0) for f in fields}
  result["total_bytes"] = (result["temp_size_in_bytes"] + result["argument_size_in_bytes"]
                           + result["output_size_in_bytes"])
  return result


def _peak_rss_bytes() -> int:
  import resource
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def time_jitted(jitted, args, *, repeats: int, memory_limit_bytes: float) -> dict:
  """Compiles `jitted` on `args`, then times it (median of `repeats` calls).

  Used on both sides (the pinned NT environment and ours). A configuration
  whose compiled XLA buffers (temp + arguments + output) exceed
  `memory_limit_bytes` is compiled but not run.
  """
  import jax

  start = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  compile_s = time.perf_counter() - start
  memory = _memory(compiled)
  result = {"compile_s": compile_s, "memory": memory}
  if memory is not None and memory["total_bytes"] > memory_limit_bytes:
    result["skipped"] = (f"XLA buffers {memory['total_bytes'] / 1e9:.1f} GB > "
                         f"{memory_limit_bytes / 1e9:.1f} GB limit; compiled, not run")
    return result
  start = time.perf_counter()
  jax.block_until_ready(compiled(*args))
  result["first_call_s"] = time.perf_counter() - start
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - start)
  result["times_s"] = times
  result["median_s"] = float(np.median(times))
  result["peak_rss_bytes"] = _peak_rss_bytes()
  return result


def load_bench_spec(spec_path: str):
  """(spec, flat float32 params, x, x_adv) from a benchmark spec npz."""
  spec = np.load(spec_path)
  params = {k[len("params/"):]: spec[k] for k in spec.files if k.startswith("params/")}
  return spec, params, spec["x"], spec["x_adv"]


def run_bench(spec_path: str, out_path: str) -> None:
  """Times one NT implementation, traced then full, on the inputs in SPEC.npz.

  One process per (model, implementation, n), so the peak RSS recorded after
  the traced kernel is that kernel's; the one after the full kernel is the
  maximum over both (in practice the full kernel's).
  """
  jax = _jax()
  import jax.numpy as jnp

  spec, params, x, x_adv = load_bench_spec(spec_path)
  model = str(spec["model"])
  kwargs = json.loads(str(spec["model_kwargs"]))
  implementation = int(spec["nt_implementation"])
  params = nest({k: jnp.asarray(v) for k, v in params.items()})
  x, x_adv = jnp.asarray(x), jnp.asarray(x_adv)
  apply_fn = make_apply_fn(model, kwargs)
  results = {"rss_at_start_bytes": _peak_rss_bytes(), "jax": jax.__version__,
             "neural_tangents": _nt_version(), "backend": jax.default_backend()}
  for trace in (True, False):
    kernel_fn = nt_kernel_fn(apply_fn, implementation, trace)
    results["traced" if trace else "full"] = time_jitted(
        kernel_fn, (x, x_adv, params), repeats=int(spec["repeats"]),
        memory_limit_bytes=float(spec["memory_limit_bytes"]))
  with open(out_path, "w") as f:
    json.dump(results, f)


def main(argv):
  if argv[1:2] == ["fixtures"]:
    run_fixtures(argv[2])
  elif argv[1:2] == ["bench"]:
    run_bench(argv[2], argv[3])
  else:
    raise SystemExit(__doc__)


if __name__ == "__main__":
  main(sys.argv)
