"""`make demo`: the digits MLP, dense and random ticket, into runs/demo.

Runs `configs/mlp_digits.py` (embedded here as the default config, so a fresh
clone needs no arguments) through every phase and prints where the results,
plots, checkpoints and TensorBoard files are. Running it again finds every
phase done and returns at once; an interrupted run resumes.

    python -m scalable_awt.demo [--workdir runs/demo] [--smoke]
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import sys
import time


def _config(smoke: bool):
  import importlib.util
  here = os.path.dirname(os.path.abspath(__file__))
  path = os.path.join(os.path.dirname(here), "configs", "mlp_digits.py")
  if os.path.exists(path):
    spec = importlib.util.spec_from_file_location("mlp_digits", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config("smoke" if smoke else None)
  from scalable_awt import config_schema  # Installed without configs/.
  c = config_schema.get_config()
  return config_schema.apply_smoke(c) if smoke else c


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default="runs/demo")
  parser.add_argument("--smoke", action="store_true",
                      help="The config's smoke variant (seconds).")
  args = parser.parse_args(argv)
  # 3, as main sets it: data_sources then holds back TensorFlow's start-up lines too.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.WARNING)
  logging.getLogger().setLevel(logging.WARNING)
  from scalable_awt import results as results_lib
  from scalable_awt import train
  start = time.time()
  config = _config(args.smoke)
  print(f"demo: {config.model.name} on {config.data.name}, methods "
        f"{list(config.methods)}, workdir {args.workdir}", flush=True)
  results = train.train_and_evaluate(config, args.workdir)
  workdir = os.path.abspath(args.workdir)
  print(f"\ndone in {time.time() - start:.1f} s "
        f"(phase wall times, all runs: {results.get('wall_time_s')})")
  print("\n".join(results_lib.summary_lines(results)))
  events = sorted(glob.glob(os.path.join(workdir, "events.out.tfevents.*")))
  jsonl = os.path.join(workdir, "metrics.jsonl")
  print(f"results:     {os.path.join(workdir, 'results.json')}")
  for plot in results.get("plots", {}).values():
    print(f"plot:        {plot}")
  print(f"checkpoints: {os.path.join(workdir, 'checkpoints')}")
  if events:
    print(f"TensorBoard: tensorboard --logdir {workdir}  ({len(events)} event file(s))")
  if os.path.exists(jsonl):
    print(f"metrics:     {jsonl}")
  print(f"load it:     python -c \"import scalable_awt; "
        f"apply_fn, params = scalable_awt.load_trained('{args.workdir}')\"")
  return 0


if __name__ == "__main__":
  sys.exit(main())
