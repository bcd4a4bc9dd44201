"""The paper's figures, and what the reproduction configs (configs/paper/) share.

Config files are loaded by path (ml_collections' `--config`, or
benchmarks/sweep.py), not imported as a package, so a paper config finds its
top-level config from its own path (`top_level(name, __file__)`).
"""
import importlib.util
import pathlib

from scalable_awt import config_schema


def top_level(name: str, paper_config_file: str):
  """`configs/<name>.py`'s get_config(), found beside `configs/paper/`.

  Called without arguments: the shared words (smoke, cheap) are applied last,
  by `finish`, after the paper config's own settings.
  """
  configs = pathlib.Path(paper_config_file).resolve().parents[1]
  spec = importlib.util.spec_from_file_location(f"configs_{name}", configs / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def split_arg(arg, own_words) -> tuple[set, set]:
  """(this config's words, the shared ones such as "smoke"), each checked."""
  words = {w for w in (arg or "").split(",") if w}
  own = words & set(own_words)
  unknown = words - own - set(config_schema.SHARED_WORDS)
  if unknown:
    raise ValueError(
        f"Unknown config argument(s) {sorted(unknown)}; this config takes "
        f"{sorted(set(own_words) | set(config_schema.SHARED_WORDS))}, comma-separated after ':' "
        "(e.g. --config configs/paper/mnist_mlp_table1.py:eps092,smoke)")
  shared = config_schema.parse_arg(",".join(sorted(words - own)))
  return own, shared


def finish(c, shared: set):
  """The shared words (config_schema.finish) on a paper config."""
  return config_schema.finish(c, shared)


# The paper's Table 1 (AWT and iterative pruning + adversarial training,
# natural / PGD accuracy in %). Its threat model as it states it: L∞,
# eps = 0.3 on MNIST, PGD (its step count is not in our copy of the text).
PAPER_TABLE1 = {
    "dense (paper, ε = 0.3)": {1.0: (98.96, 91.14)},
    "awt (paper, ε = 0.3 as stated)": {
        0.513: (99.13, 91.21), 0.169: (96.58, 89.30), 0.087: (94.48, 87.51),
        0.036: (91.74, 83.60), 0.018: (87.69, 78.66)},
    "iterative pruning + AT (paper, ε = 0.3)": {
        0.513: (98.07, 60.14), 0.169: (97.73, 59.91), 0.087: (97.20, 57.60),
        0.036: (95.58, 48.81), 0.018: (92.67, 38.23)},
}
# The paper's Table 2 (PGD accuracy in %, L∞ eps = 8/255) and HYDRA.
PAPER_TABLE2 = {
    "S-AWT (paper)": {0.10: (None, 46.68), 0.05: (None, 45.87)},
    "IWI (paper)": {0.10: (None, 47.53), 0.05: (None, 47.59)},
    "WT (paper)": {0.10: (None, 40.10), 0.05: (None, 45.15)},
    "HYDRA (Sehwag et al. 2020)": {0.10: (None, 49.5), 0.05: (None, 48.7)},
}
