r"""Paper Table 1: MNIST MLP (784-300-100-10) tickets at five densities.

The recipe: Lottery-Ticket layer densities, a cubic mask schedule over a
2-epoch exact-MTK AWT search (the paper searches 20), then the paper's 100
epochs of PGD-10 training (Adam 1e-3, eps ramped over 2 epochs) for every
ticket from the same initialisation; the last 10,000 training images are a
validation split (recipe studies: --set eval.split=validation) and the test
set is evaluated once per final model. The default recipe's choices were
made on the test set at eps = 0.0924 (docs/reproduction/history.md); it stays
the default so that the committed tables re-run from their commands. The
recipe re-made on the validation split at eps = 0.3 px is `:validated`.

Threat model (primary, the standard one): L-inf eps = 0.3 in pixel units of
[0, 1] images; evaluation PGD-100 with 5 random restarts, APGD-CE-100,
APGD-T-100 (9 targets) and Square (5,000 queries), worst case per example.

Command (one density, 8.7%, the validated recipe):
  python -m scalable_awt.main --config configs/paper/mnist_mlp_table1.py:validated --workdir runs/table1
The table (5 densities x 5 masked methods + dense, seeds 0-2), written as
benchmarks/results/mnist_mlp_table1.* (without :validated, as
mnist_mlp_table1_test_set_recipe.*):
  python benchmarks/sweep.py --config configs/paper/mnist_mlp_table1.py:validated
Arguments (comma-separated after ':'):
  eps092     L-inf eps = 0.0924 pixels (= 0.3 on inputs standardised by MNIST's
             std 0.3081; training step 0.0231): the reading under which the dense
             network matches the paper's dense 91%. awt, awt_no_kernel, random.
  validated  the recipe chosen on the validation split at eps = 0.3 px (recipe
             studies in docs/reproduction/table1_mnist_mlp.md, "The recipe"):
             LTH layer densities (against uniform), a constant mask density
             (against the cubic schedule) and Adam 3e-3 for training (against
             1e-3), each the higher mean worst-case validation accuracy of AWT;
             the eps ramp over 2 epochs kept (against none). Two later
             studies (gamma, the ramp's length) would pick gamma = 0.1 and a
             1-epoch ramp; they are not adopted here, so that the committed
             table re-runs (docs/reproduction/table1_mnist_mlp.md).
  committed  with eps092: the settings the committed table
             (benchmarks/results/table1_mnist_mlp_eps092.*) ran with: no validation
             split, PGD-100 x1 restart + APGD-CE, awt and random, seed 0.
  smoke      about a minute on a CPU.
Time:     measured on a 2-core CPU: 26 to 43 minutes per density for the
          committed AWT + random pair (100 epochs, both cores); on the
          shortened schedule of issue 19 (--set search.epochs=1 --set
          train.epochs=10 --set eval.num_examples=1000, the full attack suite),
          12.5 to 15 minutes per (density, seed) for awt, awt_no_kernel and
          random, 6.7 to 8 for ntt and magnitude, with one sweep pinned to each
          core. Not measured on a GPU.
Expected: at eps = 0.3 px with :validated on the shortened schedule,
          seeds 0-2, worst-case robust accuracy (mean) at 16.9 / 8.7 / 3.6%:
          AWT 0.509 / 0.487 / 0.429, awt_no_kernel 0.510 / 0.498 / 0.442,
          ntt 0.492 / 0.483 / 0.425, random 0.493 / 0.493 / 0.411,
          magnitude 0.498 / 0.491 / 0.424, dense 0.360
          (benchmarks/results/mnist_mlp_table1.json). Without :validated,
          same schedule: AWT 0.412 / 0.412 / 0.345, awt_no_kernel 0.416 /
          0.405 / 0.384, ntt 0.438 / 0.437 / 0.360, random 0.438 / 0.447 /
          0.386, magnitude 0.374 / 0.397 / 0.369, dense 0.299
          (benchmarks/results/mnist_mlp_table1_test_set_recipe.json). With
          :eps092,committed, seed 0: AWT 0.917 / 0.903 / 0.880 / 0.837 / 0.746
          PGD-100 at 51.3 / 16.9 / 8.7 / 3.6 / 1.8% density.
"""
from scalable_awt import paper as base

WORDS = ("eps092", "committed", "validated")
# The densities of Lottery-Ticket pruning of LeNet-300-100 after 3, 8, 11, 15
# and 18 rounds: the paper's five.
DENSITIES = (0.513, 0.169, 0.087, 0.036, 0.018)


def get_config(arg=None):
  own, shared = base.split_arg(arg, WORDS)
  if "committed" in own and "eps092" not in own:
    raise ValueError("'committed' is the committed eps = 0.0924 table: use it as "
                     "configs/paper/mnist_mlp_table1.py:eps092,committed")
  c = base.top_level("mlp_mnist", __file__)
  c.data.data_dir = "data/mnist"  # The four IDX files (docs/runner.md, Data).
  c.methods = ("dense", "awt", "awt_no_kernel", "ntt", "random", "magnitude")
  c.search.density = 0.087
  c.search.epochs = 2
  # Chosen on the test set at eps = 0.0924 (docs/reproduction/history.md);
  # issue 19 re-makes these choices on the validation split.
  c.search.mask_distribution = "lth"
  c.search.density_schedule = "cubic"
  c.train.epochs = 100
  if "validated" in own:
    if own & {"eps092", "committed"}:
      raise ValueError("'validated' is the recipe chosen on the validation split at "
                       "eps = 0.3 px; it does not combine with eps092 or committed")
    c.search.density_schedule = "constant"
    c.train.learning_rate = 3e-3
  c.attack.epsilon = 0.3
  c.attack.train_step_size = 0.075  # 2.5 eps / 10 PGD steps.
  c.eval.attacks = ("pgd", "apgd_ce", "apgd_t", "square")
  c.eval.pgd_steps = 100
  c.eval.pgd_restarts = 5
  if "eps092" in own:
    c.methods = ("dense", "awt", "awt_no_kernel", "random")
    c.attack.epsilon = 0.09243  # 0.3 x 0.3081, MNIST's pixel std.
    c.attack.train_step_size = 0.02311  # 0.075 x 0.3081.
  if "committed" in own:
    c.methods = ("awt", "random")
    c.data.validation_examples = 0
    c.eval.validation = False
    c.eval.attacks = ("pgd", "apgd_ce")
    c.eval.pgd_restarts = 1
  return base.finish(c, shared)


def get_sweep(arg=None):
  """What benchmarks/sweep.py runs: every density, masked method and seed."""
  own, _ = base.split_arg(arg, WORDS)
  # The primary table, benchmarks/results/mnist_mlp_table1.*, is the validated
  # recipe's; the default recipe's (chosen on the test set) is named as such.
  sweep = {"name": "mnist_mlp_table1_test_set_recipe", "densities": DENSITIES,
           "methods": ("awt", "awt_no_kernel", "ntt", "random", "magnitude"),
           "dense": True, "seeds": (0, 1, 2), "paper": base.PAPER_TABLE1}
  if "eps092" in own:
    sweep.update(name="table1_mnist_mlp_eps092_validation",
                 methods=("awt", "awt_no_kernel", "random"))
  if "validated" in own:
    sweep.update(name="mnist_mlp_table1")
  if "committed" in own:
    sweep.update(name="table1_mnist_mlp_eps092", methods=("awt", "random"), dense=False,
                 seeds=(0,))
  return sweep
