r"""The paper's MNIST MLP (784-300-100-10), PGD training at eps = 0.3.

Command:  python -m scalable_awt.main --config configs/mlp_mnist.py --workdir runs/mlp_mnist \
            --config.data.data_dir=data/mnist      (IDX files; or a TFDS data_dir)
Smoke:    ... --config configs/mlp_mnist.py:smoke  (about a minute on 2 cores)
Time:     20 epochs x 781 steps (50,000 images; 10,000 held out for validation)
          x 3 models (dense, random, AWT) plus a
          20-epoch AWT search; about an hour on 2 CPU
          cores, a few minutes on one GPU.
Expected: (measured on all 60,000 training images, before the validation
          split; docs/reproduction/table1_mnist_mlp.md) at L-inf eps = 0.3 px
          the dense MLP reaches 0.937 natural / 0.798 PGD-100 after 100 epochs.
          At eps = 0.0924 px (0.3 on inputs standardised by MNIST's std; a
          second reading, not the paper's stated setting) it reaches 0.987 /
          0.910 after 10 epochs. The Table 1 recipe is
          configs/paper/mnist_mlp_table1.py.
"""
from scalable_awt import config_schema


def get_config(arg=None):
  c = config_schema.get_config()
  c.data.name = "mnist"
  c.model.name = "mlp"
  c.model.mlp_features = (300, 100)
  # The dense network, a random ticket and the AWT ticket, all at one density.
  c.methods = ("dense", "random", "awt")
  c.search.density = 0.1
  c.attack.epsilon = 0.3
  c.attack.train_steps = 10
  c.attack.train_step_size = 0.075
  c.train.epochs = 20
  c.train.batch_size = 64
  c.train.learning_rate = 1e-3
  # Ramp eps over the first 2 epochs: at eps = 0.3 from the first step, sparse
  # tickets collapse to a constant prediction (measured: 3.6% density stuck at
  # chance for 3 epochs without it).
  c.train.epsilon_warmup_epochs = 2
  c.train.log_every_steps = 100
  c.eval.pgd_steps = 50
  c.checkpoint.every_steps = 500
  return config_schema.finish(c, config_schema.parse_arg(arg))
