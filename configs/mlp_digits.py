r"""MLP on scikit-learn's 8x8 digits: the quick default that `make demo` runs.

Command:  python -m scalable_awt.main --config configs/mlp_digits.py --workdir runs/digits
Smoke:    ... --config configs/mlp_digits.py:smoke   (about 15 s)
Time:     about 1 minute on 2 CPU cores (63 s measured with the AWT search),
          evaluation included; a second run returns in about 2 s.
Expected: dense, random and AWT (10% density) MLP 64-128-64-10, PGD-5-trained
          at eps=0.1 (L-inf, inputs in [0, 1]) for 15 epochs; on the 450
          held-out digits, dense about 0.97 natural / 0.78 PGD-20 accuracy,
          random 10% about 0.87 / 0.61, AWT 10% about 0.89 / 0.66.
"""
from scalable_awt import config_schema


def get_config(arg=None):
  c = config_schema.get_config()
  c.data.name = "digits"
  c.model.name = "mlp"
  c.model.mlp_features = (128, 64)
  c.methods = ("dense", "random", "awt")
  c.search.density = 0.1
  c.search.estimator = "exact"  # The exact MTK is cheap at this size.
  c.search.epochs = 10
  c.search.mask_update_period = 20
  c.search.attack_steps = 5
  c.attack.epsilon = 0.1
  c.attack.train_steps = 5
  c.attack.train_step_size = 0.04
  c.train.epochs = 15
  c.train.batch_size = 64
  c.train.learning_rate = 3e-3
  c.train.log_every_steps = 20
  c.train.curve_examples = 450
  c.eval.pgd_steps = 20
  c.checkpoint.every_steps = 100
  return config_schema.finish(c, config_schema.parse_arg(arg))
