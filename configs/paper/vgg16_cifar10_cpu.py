r"""VGG-16 on CIFAR-10 (paper Table 2), cut to a 64-step schedule for a CPU.

NOT a reproduction of Table 2: it shows the pipeline end to end on real data
and records cost. The first 1,024 training images; a 16-step AWT search
(output probes, k = 2, kernel on 8 of each 64, PGD-3, a new mask every 4
steps); 64 steps of PGD-3 training at batch 32 (Adam 1e-3); evaluation on
the first 256 test images. For the paper's schedule use configs/vgg16_cifar10.py
on a GPU.

Threat model: L-inf eps = 8/255 in pixel units; PGD-10 x1 restart.

Command:  python -m scalable_awt.main --config configs/paper/vgg16_cifar10_cpu.py --workdir runs/vgg
Table:    python benchmarks/sweep.py --config configs/paper/vgg16_cifar10_cpu.py
Time:     1.5 to 2.5 hours per density on 2 CPU cores (measured, cores shared).
Expected: every ticket near chance: 18-23% natural, 5-13% PGD-10.
"""
from scalable_awt import paper as base


def get_config(arg=None):
  _, shared = base.split_arg(arg, ())
  c = base.top_level("vgg16_cifar10", __file__)
  c.data.data_dir = "data/cifar10"
  c.data.validation_examples = 0  # As committed: no validation split.
  c.eval.validation = False
  c.methods = ("dense", "awt", "random")
  c.search.density = 0.1
  c.data.num_train = 1024
  c.search.epochs = 1
  c.search.batch_size = 64
  c.search.kernel_batch = 8
  c.search.num_samples = 2
  c.search.attack_steps = 3
  c.search.mask_update_period = 4
  c.search.log_every_steps = 2
  c.train.epochs = 2
  c.train.batch_size = 32
  c.train.learning_rate = 1e-3
  c.attack.train_steps = 3
  c.attack.train_step_size = 2.5 * (8 / 255) / 3
  c.train.curve_examples = 64
  c.train.curve_pgd_steps = 3
  c.train.log_every_steps = 8
  c.eval.attacks = ("pgd",)
  c.eval.num_examples = 256
  c.eval.pgd_steps = 10
  c.eval.batch_size = 64
  c.checkpoint.every_steps = 16
  return base.finish(c, shared)


def get_sweep(arg=None):
  return {"name": "vgg16_cifar10_cpu", "densities": (0.1, 0.05), "methods": ("awt", "random"),
          "dense": True, "seeds": (), "paper": base.PAPER_TABLE2}
