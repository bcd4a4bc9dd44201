r"""Paper Fig. 6: the MNIST CNN at 3% density, AWT against a random mask.

The committed figure is a CPU-shortened schedule: the first 6,400 training
images, a 2-epoch AWT search (exact MTK on 32 of each 64, PGD-5 for teacher
and student, a new mask every 20 steps), then 10 epochs of PGD-5 training
(step 0.15, eps ramped over 2 epochs) for each ticket from the same
initialisation; evaluated on the first 1,000 test images.

Threat model: L-inf eps = 0.3 in pixel units; evaluation PGD-50 x1 restart
and APGD-CE-50 (as committed; `full` evaluates with the issue-19 suite).

Command:  python -m scalable_awt.main --config configs/paper/cnn_mnist_fig6.py --workdir runs/fig6
Table:    python benchmarks/sweep.py --config configs/paper/cnn_mnist_fig6.py
Arguments: seeds3 (seeds 0, 1, 2), full (all training images, 20 + 20
          epochs, PGD-10, the whole test set, PGD-100 x5 + APGD-CE/T + Square),
          smoke.
Time:     about 2 hours on 2 CPU cores (the search 53 minutes), minutes on a GPU.
Expected: (committed, seed 0) dense 0.977 / 0.732, AWT 0.903 / 0.554, random
          0.871 / 0.517 natural / PGD-50.
"""
from scalable_awt import paper as base

WORDS = ("seeds3", "full")


def get_config(arg=None):
  own, shared = base.split_arg(arg, WORDS)
  c = base.top_level("cnn_mnist", __file__)
  c.data.data_dir = "data/mnist"
  c.methods = ("dense", "awt", "random")
  c.search.density = 0.03
  if "full" in own:
    c.search.epochs = 20
    c.train.epochs = 20
    c.eval.attacks = ("pgd", "apgd_ce", "apgd_t", "square")
    c.eval.pgd_steps = 100
    c.eval.pgd_restarts = 5
    return base.finish(c, shared)
  c.data.validation_examples = 0  # As committed: no validation split.
  c.eval.validation = False
  c.data.num_train = 6400
  c.search.epochs = 2
  c.search.attack_steps = 5
  c.search.mask_update_period = 20
  c.train.epochs = 10
  c.attack.train_steps = 5
  c.attack.train_step_size = 0.15
  c.eval.attacks = ("pgd", "apgd_ce")
  c.eval.num_examples = 1000
  c.eval.pgd_steps = 50
  c.eval.apgd_steps = 50
  return base.finish(c, shared)


def get_sweep(arg=None):
  own, _ = base.split_arg(arg, WORDS)
  return {"name": "fig6_cnn_mnist" + ("_full" if "full" in own else ""),
          "densities": (0.03,), "methods": ("awt", "random"), "dense": True,
          "seeds": (0, 1, 2) if "seeds3" in own else ()}
