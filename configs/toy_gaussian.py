r"""The paper's Appendix C.1 toy: two Gaussians in 100-D, linear classifier.

Command:  python -m scalable_awt.main --config configs/toy_gaussian.py --workdir runs/toy
Smoke:    ... --config configs/toy_gaussian.py:smoke
Time:     seconds on one CPU core.
Expected: x = s*mu + z, ||mu||/sigma = 3.09, eps = 2.08 (L2). Adversarial
          training of the bias-free linear classifier reaches about 0.99
          natural and about 0.82 L2-robust accuracy (closed form
          Phi(3.09 cos(theta) - 2.08) with cos(theta) near 1); the random
          10% ticket is clearly worse.
"""
from scalable_awt import config_schema


def get_config(arg=None):
  c = config_schema.get_config()
  c.data.name = "gaussian_toy"
  c.model.name = "linear"
  c.search.density = 0.1
  c.attack.epsilon = 2.08
  c.attack.norm = "l2"
  c.attack.train_steps = 5
  c.attack.train_step_size = 1.0
  c.attack.domain = "none"
  c.train.epochs = 5
  c.train.batch_size = 128
  c.train.learning_rate = 1e-2
  c.eval.pgd_steps = 10
  c.eval.step_size = 0.5
  c.checkpoint.every_steps = 50
  if "smoke" in config_schema.parse_arg(arg):
    config_schema.apply_smoke(c)
  return c
