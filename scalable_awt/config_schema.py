"""The one base configuration every config file in `configs/` modifies.

`get_config()` returns every key the runner knows, each with its default and a
comment. Config files call it and change a few fields; the validator
(`config_validation.py`) rejects any key that is not here, so a typo in a
config file or an override fails at start-up instead of being ignored.

Keys other tools set (keep them stable): `search.density`, `search.estimator`,
`data.name`, `data.data_dir`, `attack.epsilon`.
"""

from __future__ import annotations

import ml_collections

# Names the validator accepts that no library module owns. The others
# (estimators, search precisions, mask distributions, density schedules,
# reductions, norms, optimizers, eval attacks) come from the modules that
# implement them: `config_validation.allowed_values()`.
PHASES = ("search", "train", "evaluate")
# Readers of data.load (scalable_awt.data).
DATASETS = ("mnist", "cifar10", "cifar100", "digits", "gaussian_toy",
            "image_folder", "idx", "npz")
DATA_SOURCES = ("auto", "tfds", "idx", "image_folder", "npz")
# models.create_model's names, plus the toy's bias-free "linear" classifier
# (tests/test_config.py checks they agree).
MODELS = ("mlp", "cnn", "vgg16", "linear")
VGG_NORMS = ("batch", "group", "none")
DOMAINS = ("auto", "unit", "none")
EVAL_SPLITS = ("test", "validation")


def _data() -> ml_collections.ConfigDict:
  """`config.data`: what data, from where, and how much (`data.load`)."""
  d = ml_collections.ConfigDict()
  d.name = "digits"  # One of DATASETS.
  # Where the data lives: a TFDS data_dir, a folder of IDX files, an image
  # folder root (root/<split>/<label>/<image>) or a .npz file. "" = the
  # default for the source (TFDS: ~/tensorflow_datasets).
  d.data_dir = ""
  # How to read `name`: "auto" looks at data_dir (IDX files, image folders,
  # .npz) and falls back to TFDS; or force "tfds", "idx", "image_folder", "npz".
  d.source = "auto"
  d.download = False  # Let TFDS download (offline it retries for minutes).
  d.train_split = "train"  # Split names (TFDS / image-folder subfolders).
  d.test_split = "test"
  d.num_train = -1  # Use the first N training examples; -1 = all.
  d.num_test = -1  # Use the first N test examples; -1 = all.
  # Last N training examples held out as a validation split (recipe choices
  # are made on it; the test set is evaluated once per final model). -1 = the
  # data set's standard (mnist 10000, cifar10/cifar100 5000, everything else
  # 0); 0 = none.
  d.validation_examples = -1
  d.digits_test_fraction = 0.25  # digits: held-out share (fixed split).
  d.toy_dim = 100  # gaussian_toy: input dimension (paper: 100).
  d.toy_num_train = 5000  # gaussian_toy: training points (paper: 5000).
  d.toy_num_test = 5000  # gaussian_toy: test points.
  d.toy_mu_over_sigma = 3.09  # gaussian_toy: ||mu|| / sigma (paper Table 3).
  d.toy_support = 10  # gaussian_toy: mu's non-zero coords (paper: 10 of 100); 0 = all.
  return d


def _model() -> ml_collections.ConfigDict:
  """`config.model`: the network."""
  m = ml_collections.ConfigDict()
  m.name = "mlp"  # One of MODELS ("linear" = the toy's bias-free classifier).
  m.mlp_features = (300, 100)  # mlp: hidden widths (paper: 784-300-100-10).
  m.cnn_conv_features = (32, 64)  # cnn: conv widths.
  m.cnn_dense_features = 1024  # cnn: width of the dense layer.
  m.vgg_norm = "batch"  # vgg16: "batch", "group" or "none".
  # vgg16: multiplier on every convolution's width (1.0 = VGG-16; the smoke
  # run's 1/16 keeps the 13 convolutions and 5 pools at a CPU-friendly size).
  m.vgg_width = 1.0
  m.vgg_classifier_features = (256, 256)  # vgg16: classifier widths.
  return m


def _search() -> ml_collections.ConfigDict:
  """`config.search`: the ticket search (AWT/NTT) and every mask's density and layer spread."""
  s = ml_collections.ConfigDict()
  s.density = 0.1  # Fraction of prunable weights kept, in (0, 1].
  # MTK estimator for the AWT/NTT search (estimators.NAMES); "exact" validates on
  # MLP/CNN, the scalable ones are for large models (docs/estimators.md).
  s.estimator = "exact"
  s.num_samples = 0  # Estimator's k (probes/directions/positions); 0 = its default.
  # Probes/directions per pass for random_projection* and output_probes*
  # (0 = all k at once). Smaller chunks bound memory (one chunk's residuals,
  # rematerialised in the backward pass) for one extra forward pass.
  s.estimator_chunk_size = 0
  s.epochs = 20  # Search epochs (paper: 20; 10 for VGG-16). Used by awt/ntt.
  s.batch_size = 64  # Search batch size (paper and NTT: 64).
  s.learning_rate = 5e-4  # Adam step of the student (NTT: 5e-4).
  s.kernel_weight = 1e-3  # gamma: weight of the kernel distance (NTT: 1e-3).
  s.l2_weight = 1e-4  # L2 on the kept weights, scaled by 1/density (NTT).
  # Examples of each batch whose MTK is matched: a (k x k x C x C) kernel
  # between their clean inputs and their adversarial examples (NTT: 32 of 64).
  s.kernel_batch = 32
  # How both distances enter the loss: "mean" over entries (NTT), "sum", or
  # "normalized" by the dense teacher's own norms.
  s.reduction = "mean"
  s.mask_update_period = 100  # Recompute the mask by magnitude every T steps.
  # "constant": target density from the start (NTT); "cubic": from 1 down to
  # the target over the first `prune_until_fraction` of the search.
  s.density_schedule = "constant"
  s.prune_until_fraction = 0.5
  # How the kept weights spread over layers, for every masked method (the
  # searched tickets and the random/magnitude/SNIP baselines alike): the
  # same density in each layer ("uniform"), Erdős–Rényi-Kernel ("erk"), one
  # threshold over all prunable weights ("global"), or Lottery-Ticket pruning's
  # ("lth": the output layer pruned at half the rate of the others, the
  # allocation behind the paper's Table 1 densities; masks.lth_densities).
  s.mask_distribution = "uniform"
  s.attack_steps = 10  # PGD steps for the teacher's and student's examples.
  s.attack_step_size = 0.0  # PGD step; 0 = 2.5 * epsilon / attack_steps.
  s.log_every_steps = 10  # Distance curves to TensorBoard / JSONL every N steps.
  # Compute the kernel term every N search steps; the other steps use the
  # target distance + L2 only (1 = every step, the paper's search).
  s.kernel_period = 1
  # Compute the teacher's adversarial examples and outputs once per training
  # example (a deterministic PGD) and reuse them in every epoch, instead of
  # attacking the fixed dense teacher again at every step.
  s.teacher_cache = False
  s.teacher_cache_gb = 2.0  # Bound of that cache (GiB); examples beyond it are recomputed each visit.
  # Precision of the kernel term's activations: "float32" or "bfloat16".
  s.precision = "float32"
  return s


def _attack() -> ml_collections.ConfigDict:
  """`config.attack`: the threat model of training and evaluation."""
  a = ml_collections.ConfigDict()
  a.epsilon = 0.1  # Attack radius for training and evaluation (>= 0).
  a.norm = "linf"  # "linf" or "l2".
  a.train_steps = 10  # PGD steps inside adversarial training.
  a.train_step_size = 0.025  # PGD step inside adversarial training.
  a.random_start = True  # PGD random start in training.
  # Input box for attacks: "auto" (from the data set: [0, 1] for images,
  # none for gaussian_toy), "unit" ([0, 1]) or "none".
  a.domain = "auto"
  return a


def _train() -> ml_collections.ConfigDict:
  """`config.train`: adversarial training of every ticket."""
  t = ml_collections.ConfigDict()
  t.epochs = 10  # Adversarial-training epochs per ticket.
  t.batch_size = 64  # Global batch (split over all devices).
  t.optimizer = "adam"  # "adam" or "sgd".
  t.learning_rate = 1e-3  # Peak learning rate.
  t.schedule = "constant"  # "constant", "cosine" or "piecewise".
  t.warmup_steps = 0  # Linear learning-rate warm-up steps from 0.
  # Ramp the training attack's epsilon linearly from 0 over the first N epochs
  # (0 = full epsilon from the start); MNIST at eps = 0.3 needs it, or
  # sparse networks collapse to a constant prediction.
  t.epsilon_warmup_epochs = 0
  t.weight_decay = 0.0  # AdamW decoupled / SGD coupled weight decay.
  t.momentum = 0.9  # SGD momentum.
  t.log_every_steps = 50  # Scalars to TensorBoard / JSONL every N steps.
  # Accuracy curve: natural and PGD accuracy on `curve_examples` test
  # examples after every `curve_every_epochs` epochs (0 = never).
  t.curve_every_epochs = 1
  t.curve_examples = 256
  t.curve_pgd_steps = 10  # PGD steps for the curve's robust accuracy.
  return t


def _eval() -> ml_collections.ConfigDict:
  """`config.eval`: the final evaluation's attack suite."""
  e = ml_collections.ConfigDict()
  # Any of evaluation.ATTACKS: pgd, cw, apgd_ce, apgd_t, square, fgsm. The
  # headline robust accuracy is the per-example worst case over all of them.
  e.attacks = ("pgd", "apgd_ce")
  e.pgd_steps = 50  # PGD / CW iterations.
  e.pgd_restarts = 1  # Random restarts (PGD, CW, APGD).
  e.apgd_steps = 100  # APGD-CE / APGD-T iterations.
  e.apgd_t_targets = 9  # APGD-T: target classes tried (the top ones after the label).
  e.square_queries = 5000  # Square attack: model queries per example (black box).
  # Also evaluate the validation split (natural + PGD only), stored under
  # "validation" in results.json; recipe choices are made on those numbers.
  e.validation = True
  # Which split the attack suite above runs on and the results report:
  # "test" (final models: the test set once per model), or "validation" (a
  # recipe study: the held-out split only, the test set never touched).
  e.split = "test"
  e.step_size = -1.0  # PGD step; -1 = 2.5 * epsilon / pgd_steps.
  e.batch_size = 256  # Examples per evaluation call.
  e.num_examples = -1  # Evaluate on the first N test examples; -1 = all.
  return e


def _checkpoint() -> ml_collections.ConfigDict:
  """`config.checkpoint`: checkpoints of every loop."""
  k = ml_collections.ConfigDict()
  k.every_steps = 200  # Save every N training steps (and at each phase end).
  k.keep = 3  # Keep the last K checkpoints per ticket.
  return k


def get_config() -> ml_collections.ConfigDict:
  """The defaults: a dense and a random-mask MLP on scikit-learn's digits."""
  c = ml_collections.ConfigDict()
  c.seed = 0  # One seed drives init, masks, data order, PGD starts and eval.
  # Tickets to train and evaluate, by name (`tickets.MASK_FNS`): "dense" (no
  # mask), "random" (uniform random mask at `search.density`), "magnitude"
  # (largest |w| at init), "snip" (Lee et al. 2019), "awt" (the adversarial
  # winning ticket search), "awt_no_kernel" (the same search with
  # search.kernel_weight taken as 0: target distance + L2 only, the ablation
  # of the kernel term) and "ntt" (the AWT search with eps = 0).
  c.methods = ("dense", "random")
  # Phases to run, in this order; leave one out to skip it (its results are
  # then taken from the workdir if an earlier run produced them).
  c.phases = PHASES
  # Wall-clock budget of the whole run in seconds (0 = none), e.g. a GPU lease:
  # searches stop by 30% of it, training by 85%, evaluation gets the rest; a
  # phase cut short keeps what it reached and the results say so (budget.py).
  c.time_budget_s = 0.0
  c.data = _data()
  c.model = _model()
  c.search = _search()
  c.attack = _attack()
  c.train = _train()
  c.eval = _eval()
  c.checkpoint = _checkpoint()
  return c


def apply_smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks any config to a run of well under a minute on 2 CPU cores."""
  c.data.num_train = min(c.data.num_train, 512) if c.data.num_train > 0 else 512
  c.data.num_test = min(c.data.num_test, 128) if c.data.num_test > 0 else 128
  c.data.toy_num_train = min(c.data.toy_num_train, 512)
  c.data.toy_num_test = min(c.data.toy_num_test, 256)
  c.train.epochs = min(c.train.epochs, 2)
  c.train.epsilon_warmup_epochs = min(c.train.epsilon_warmup_epochs, c.train.epochs)
  c.train.batch_size = min(c.train.batch_size, 64)
  c.train.curve_examples = min(c.train.curve_examples, 64)
  c.train.curve_pgd_steps = min(c.train.curve_pgd_steps, 3)
  c.attack.train_steps = min(c.attack.train_steps, 3)
  c.eval.pgd_steps = min(c.eval.pgd_steps, 5)
  c.eval.apgd_steps = min(c.eval.apgd_steps, 5)
  c.eval.square_queries = min(c.eval.square_queries, 20)
  c.eval.apgd_t_targets = min(c.eval.apgd_t_targets, 2)
  c.eval.num_examples = 128
  c.search.epochs = min(c.search.epochs, 1)
  c.search.mask_update_period = min(c.search.mask_update_period, 4)
  c.search.attack_steps = min(c.search.attack_steps, 3)
  c.search.log_every_steps = 2
  c.checkpoint.every_steps = 4
  c.train.log_every_steps = 4
  return c


# The cheap search: the levers measured by benchmarks/search_cost.py and held
# against the exact search's tickets (docs/reproduction/estimators.md).
# Output probes (Hutch++-deflated, k = 8) on 8 examples of the batch, every
# 8th step, the teacher's adversarial examples computed once per example.
CHEAP_SEARCH = dict(estimator="output_probes_deflated", num_samples=8, kernel_batch=8,
                    kernel_period=8, teacher_cache=True)
# Config-file arguments every config takes (`configs/x.py:smoke,cheap`).
SHARED_WORDS = ("smoke", "cheap")


def apply_cheap_search(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Sets `config.search` to the cheap search (CHEAP_SEARCH)."""
  c.search.update(CHEAP_SEARCH)
  return c


def parse_arg(arg: str | None) -> set[str]:
  """Config-file arguments (`configs/x.py:smoke,cheap`): SHARED_WORDS only."""
  words = {w for w in (arg or "").split(",") if w}
  unknown = words - set(SHARED_WORDS)
  if unknown:
    raise ValueError(
        f"Unknown config argument(s) {sorted(unknown)}; this config takes "
        f"{list(SHARED_WORDS)} (e.g. --config configs/mlp_digits.py:smoke).")
  return words


def finish(c: ml_collections.ConfigDict, words: set[str]) -> ml_collections.ConfigDict:
  """Applies the shared words: the cheap search, then smoke (which shrinks last)."""
  if "cheap" in words:
    apply_cheap_search(c)
  if "smoke" in words:
    apply_smoke(c)
  return c
