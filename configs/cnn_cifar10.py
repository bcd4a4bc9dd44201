r"""The paper's CNN on CIFAR-10, PGD training at eps = 8/255.

Command:  python -m scalable_awt.main --config configs/cnn_cifar10.py --workdir runs/cnn_cifar10 \
            --config.data.data_dir=data/cifar10     (JPEG folders train/<class>/, test/<class>/;
                                                     or a TFDS data_dir)
Smoke:    ... --config configs/cnn_cifar10.py:smoke  (about a minute on 2 cores)
Time:     20 epochs; many hours on 2 CPU cores, tens of minutes on one GPU.
Expected: dense roughly 0.6-0.7 natural / 0.3-0.35 PGD accuracy.
"""
from scalable_awt import config_schema


def get_config(arg=None):
  c = config_schema.get_config()
  c.data.name = "cifar10"
  c.model.name = "cnn"
  # The dense network, a random ticket and the AWT ticket, all at one density.
  c.methods = ("dense", "random", "awt")
  c.search.density = 0.1
  c.attack.epsilon = 8 / 255
  c.attack.train_steps = 10
  c.attack.train_step_size = 2 / 255
  c.train.epochs = 20
  c.train.batch_size = 64
  c.train.learning_rate = 1e-3
  c.train.log_every_steps = 100
  c.eval.pgd_steps = 50
  c.checkpoint.every_steps = 500
  return config_schema.finish(c, config_schema.parse_arg(arg))
