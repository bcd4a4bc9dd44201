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
import importlib.util
import pathlib

_spec = importlib.util.spec_from_file_location(
    "configs_paper_base", pathlib.Path(__file__).with_name("_base.py"))
base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(base)


def get_config(arg=None):
  _, shared = base.split_arg(arg, ())
  return base.finish(base.top_level("toy_gaussian"), shared)
