r"""Tickets found with each kernel estimator: MNIST MLP at 3.6% density.

One AWT search per estimator (k = 8 probes, directions or sampled positions;
kernel term on 32 of each 64 examples), then the same PGD-10 training from
the same initialisation, with the random mask as the floor every estimator
must beat. As committed: eps = 0.3 pixels with uniform layer densities,
2-epoch search + 10 epochs of training, one seed.

Threat model: L-inf eps = 0.3 in pixel units; PGD-100 x1 restart and
APGD-CE-100 on all 10,000 test images.

Command:  python -m scalable_awt.main --config configs/paper/estimators_mnist_mlp.py \
            --workdir runs/estimators --config.search.estimator=output_probes
Table:    python benchmarks/sweep.py --config configs/paper/estimators_mnist_mlp.py
Arguments: seeds3 (seeds 0, 1, 2, with awt_no_kernel as a second floor: the
          issue-19 comparison), smoke.
Time:     about 1 hour on 2 CPU cores (searches 1.5 to 7 minutes each).
Expected: (committed) PGD-100 exact 0.322, diagonal 0.327, output_probes 0.361,
          output_probes_deflated 0.359, random_projection 0.358, random 0.326.
"""
from scalable_awt import paper as base

WORDS = ("seeds3",)
ESTIMATORS = ("exact", "diagonal", "random_projection", "output_probes",
              "output_probes_deflated")


def get_config(arg=None):
  _, shared = base.split_arg(arg, WORDS)
  c = base.top_level("mlp_mnist", __file__)
  c.data.data_dir = "data/mnist"
  c.data.validation_examples = 0  # As committed: no validation split.
  c.eval.validation = False
  c.methods = ("awt", "random")
  c.search.density = 0.036
  c.search.epochs = 2
  c.search.num_samples = 8
  c.train.epochs = 10
  c.eval.attacks = ("pgd", "apgd_ce")
  c.eval.pgd_steps = 100
  c.eval.num_examples = -1
  return base.finish(c, shared)


def get_sweep(arg=None):
  own, _ = base.split_arg(arg, WORDS)
  sweep = {"name": "estimators_tickets_mlp", "densities": (0.036,), "methods": ("random",),
           "estimators": ESTIMATORS, "dense": False, "seeds": ()}
  if "seeds3" in own:
    sweep.update(name="estimators_tickets_mlp_seeds", methods=("random", "awt_no_kernel"),
                 seeds=(0, 1, 2))
  return sweep
