r"""Paper Table 3 (App. C.1): the two-Gaussian toy, AWT against adversarial training.

d = 100, 5,000 training points, ||mu|| / sigma = 3.09 with mu on 10
coordinates; L2 attacks of radius eps / sigma = 2.08 (in the units of the
toy's inputs). This is configs/toy_gaussian.py unchanged; the table adds the
Bayes classifier and a linear SVM and evaluates every row on 20,000 fresh
points with the closed form and with L2 PGD.

Command:  python -m scalable_awt.main --config configs/paper/toy_table3.py --workdir runs/toy
Table:    python benchmarks/toy_table3.py --config configs/paper/toy_table3.py
Time:     about 75 s on 2 CPU cores.
Expected: cos to mu: AWT 0.9987 >= adversarial training 0.9950 > SVM 0.8925.
"""
from scalable_awt import paper as base


def get_config(arg=None):
  _, shared = base.split_arg(arg, ())
  return base.finish(base.top_level("toy_gaussian", __file__), shared)
