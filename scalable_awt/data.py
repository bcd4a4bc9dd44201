"""Input pipeline: whole data sets as numpy arrays, deterministic batches.

Every data set this project uses fits in host memory, so `load(config.data)`
reads the train and test splits into numpy arrays once (uint8 images stay
uint8 until a batch is cut) and `Batches` cuts global batches from a
permutation that depends only on `(seed, epoch)`. Training step `s` therefore
always sees the same examples, which is what makes a resumed run identical to
an uninterrupted one: the data position saved in a checkpoint is just the step.

Sources (`data.source`, "auto" picks from what `data.data_dir` holds): MNIST
IDX files, image folders, a .npz, tensorflow-datasets, and the in-memory
"digits" and "gaussian_toy"; their readers live in `data_sources`.

Validation split: the last `data.validation_examples` training examples
(-1 = the standard: 10,000 for mnist, 5,000 for cifar10/cifar100, none for
the others) are held out as `Dataset.validation_images/labels` before
`data.num_train` cuts the training set, so training never sees them.

Errors are `DataError`s with a one-line fix: a data folder that does not
exist or holds nothing readable (`DataNotFoundError`), images whose shape is
not the named data set's (28x28x1 for mnist, 32x32x3 for cifar10/cifar100)
or a validation split as large as the training set (`DataMismatchError`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator

import jax
import numpy as np

# The readers, and the names callers import from here.
from scalable_awt.data_sources import (  # noqa: F401  pylint: disable=unused-import
    DataError, DataMismatchError, DataNotFoundError, IDX_FILES, has_idx,
    has_image_folder, import_tensorflow, load_digits, load_gaussian_toy,
    load_idx, load_image_folder_split, load_npz, load_tfds, read_idx,
    tensorflow_available)

NUM_CLASSES = {"mnist": 10, "cifar10": 10, "cifar100": 100, "digits": 10,
               "gaussian_toy": 2}
# The image shape (H, W, C) each named data set must have.
EXPECTED_IMAGE_SHAPE = {"mnist": (28, 28, 1), "cifar10": (32, 32, 3),
                        "cifar100": (32, 32, 3)}
NICE_NAMES = {"mnist": "MNIST", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}
# `data.validation_examples=-1`: the usual held-out part of the training set
# (the last examples); other data sets hold out nothing by default.
STANDARD_VALIDATION = {"mnist": 10000, "cifar10": 5000, "cifar100": 5000}


@dataclasses.dataclass
class Dataset:
  """Train and test splits in memory. Images are uint8 (0..255) or float32."""
  name: str
  source: str  # How it was read, for logs and results.json.
  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  num_classes: int
  domain: tuple[float, float] | None = (0.0, 1.0)
  # Held out of training (the last `data.validation_examples` training
  # examples); empty arrays (0 rows) when there is no validation split.
  validation_images: np.ndarray | None = None
  validation_labels: np.ndarray | None = None

  def __post_init__(self):
    if self.validation_images is None:
      self.validation_images = self.train_images[:0]
      self.validation_labels = self.train_labels[:0]

  @property
  def image_shape(self) -> tuple[int, ...]:
    return tuple(self.train_images.shape[1:])

  def info(self) -> dict:
    return {"name": self.name, "source": self.source,
            "num_train": int(len(self.train_labels)),
            "num_test": int(len(self.test_labels)),
            "num_validation": int(len(self.validation_labels)),
            "image_shape": list(self.image_shape),
            "num_classes": int(self.num_classes),
            "domain": list(self.domain) if self.domain else None}


def to_float(images: np.ndarray) -> np.ndarray:
  """uint8 -> float32 in [0, 1]; float arrays pass through as float32."""
  if images.dtype == np.uint8:
    return images.astype(np.float32) / np.float32(255.0)
  return images.astype(np.float32)


# ----------------------------------------------------------------- entry


def standard_validation_examples(name: str) -> int:
  """The held-out validation size that `data.validation_examples=-1` means."""
  return STANDARD_VALIDATION.get(name, 0)


def validation_count(cfg, num_train_examples: int) -> int:
  """How many of the last training examples `cfg` holds out for validation."""
  requested = int(cfg.get("validation_examples", -1))
  count = standard_validation_examples(cfg.name) if requested == -1 else requested
  if count and count >= num_train_examples:
    what = f"{count} ({cfg.name}'s standard)" if requested == -1 else count
    raise DataMismatchError(
        f"data.validation_examples={requested} holds out {what} examples, but "
        f"the training split has only {num_train_examples}; the validation "
        "split must leave training examples. Pass "
        "--config.data.validation_examples=N with N < "
        f"{num_train_examples} (0 = no validation split).")
  return count


def expected_layout(name: str) -> str:
  """What a data folder for data set `name` holds, for error messages."""
  layouts = []
  if name in ("mnist", "idx"):
    layouts.append("the four MNIST IDX files (train-images-idx3-ubyte, "
                   "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
                   "t10k-labels-idx1-ubyte, each optionally .gz)")
  if name not in ("idx", "npz"):
    layouts.append("an image folder ROOT/<split>/<label>/<image> (e.g. "
                   "ROOT/train/cat/0001.png, ROOT/test/cat/0002.png)")
  if name not in ("idx", "image_folder"):
    layouts.append("a .npz file with x_train, y_train, x_test, y_test")
  if name in ("mnist", "cifar10", "cifar100"):
    layouts.append(f"a tensorflow-datasets data_dir holding {name}/ (needs "
                   "the [tfds] extra)")
  return "; or ".join(layouts)


def check_data_dir(cfg) -> None:
  """Raises `DataNotFoundError` if `data.data_dir` names nothing that exists.

  Cheap (no data is read), so main calls it before touching the workdir.
  TFDS with `data.download=True` may create the folder itself.
  """
  if cfg.name in ("digits", "gaussian_toy") or not cfg.data_dir:
    return
  data_dir = os.path.expanduser(cfg.data_dir)
  if os.path.exists(data_dir):
    return
  if cfg.download and cfg.source in ("auto", "tfds"):
    return
  raise DataNotFoundError(
      f"data folder not found: {os.path.abspath(data_dir)} "
      f"(config.data.data_dir={cfg.data_dir!r}); expected "
      f"{expected_layout(cfg.name)}. Fix the path in --config.data.data_dir.")


def resolve_source(cfg) -> str:
  """Which reader serves `cfg` (a `config.data`)."""
  name, source, data_dir = cfg.name, cfg.source, cfg.data_dir
  if name in ("digits", "gaussian_toy"):
    return name
  if name in ("idx", "image_folder", "npz"):
    return name
  if source != "auto":
    return source
  data_dir = os.path.expanduser(data_dir) if data_dir else ""
  if data_dir and os.path.isfile(data_dir) and data_dir.endswith(".npz"):
    return "npz"
  if has_idx(data_dir):
    return "idx"
  if has_image_folder(data_dir, cfg.train_split):
    return "image_folder"
  if (data_dir and os.path.isdir(data_dir) and not cfg.download
      and not os.path.isdir(os.path.join(data_dir, name))):
    # Nothing this reader knows is there, and no TFDS copy of `name` either:
    # say so instead of a TFDS "data set not found" error.
    raise DataNotFoundError(
        f"no {name} data in {os.path.abspath(data_dir)} (config.data.data_dir"
        f"={cfg.data_dir!r}); expected {expected_layout(name)}.")
  return "tfds"


def _read_arrays(cfg, source: str, data_dir: str, seed: int) -> dict:
  """The full train and test arrays of `source` (before any cut)."""
  if source == "digits":
    return load_digits(cfg.digits_test_fraction)
  if source == "gaussian_toy":
    return load_gaussian_toy(seed, cfg.toy_dim, cfg.toy_num_train,
                             cfg.toy_num_test, cfg.toy_mu_over_sigma,
                             cfg.toy_support)
  if source == "idx":
    return load_idx(data_dir)
  if source == "npz":
    return load_npz(data_dir)
  if source == "image_folder":
    if not data_dir or not os.path.isdir(data_dir):
      raise DataNotFoundError(
          f"data folder not found: {os.path.abspath(data_dir or '.')} "
          f"(config.data.data_dir={cfg.data_dir!r}); expected "
          f"{expected_layout('image_folder')}.")
    xtr, ytr, names = load_image_folder_split(data_dir, cfg.train_split)
    xte, yte, _ = load_image_folder_split(data_dir, cfg.test_split, names)
    return {"train_images": xtr, "train_labels": ytr,
            "test_images": xte, "test_labels": yte}
  if source == "tfds":
    if cfg.name not in ("mnist", "cifar10", "cifar100"):
      raise ValueError(f"data.source='tfds' serves mnist, cifar10, cifar100, "
                       f"not {cfg.name!r}.")
    return load_tfds(cfg.name, data_dir, cfg.download,
                     (cfg.train_split, cfg.test_split))
  raise ValueError(f"Unknown data source {source!r}.")


def _as_split(images, labels, limit: int, add_channel: bool):
  """uint8 or float32 images (NHWC), int32 labels, the first `limit` (>0)."""
  images, labels = np.asarray(images), np.asarray(labels).astype(np.int32)
  if limit > 0:
    images, labels = images[:limit], labels[:limit]
  if images.dtype != np.uint8:
    images = images.astype(np.float32)
  if add_channel and images.ndim == 3:
    images = images[..., None]
  return images, labels


def _shape_text(shape) -> str:
  return "x".join(str(int(d)) for d in shape)


def check_image_shape(name: str, shape: tuple[int, ...], where: str) -> None:
  """Stops when the images do not have the shape of data set `name`."""
  expected = EXPECTED_IMAGE_SHAPE.get(name)
  if expected is None or tuple(shape) == expected:
    return
  found_name = next((NICE_NAMES[n] for n, s in EXPECTED_IMAGE_SHAPE.items()
                     if s == tuple(shape)), None)
  article = "an" if name == "mnist" else "a"  # "an MNIST", "a CIFAR-10".
  hint = (f" ({article} {NICE_NAMES[name]} config pointed at {found_name} "
          "data?)" if found_name else "")
  raise DataMismatchError(
      f"data.name={name!r} expects {_shape_text(expected)} images, but the data "
      f"in {where} are {_shape_text(shape)}{hint}. Point "
      f"--config.data.data_dir at {NICE_NAMES[name]} data, or use a config "
      "made for the data you have (--config.data.name and the model).")


def load(cfg, *, seed: int = 0) -> Dataset:
  """Loads `config.data` into a `Dataset` (see the module docstring).

  The last `validation_count(cfg, ...)` training examples become the
  validation split; `data.num_train` then cuts the remaining training set.
  """
  check_data_dir(cfg)
  source = resolve_source(cfg)
  data_dir = os.path.expanduser(cfg.data_dir) if cfg.data_dir else ""
  arrays = _read_arrays(cfg, source, data_dir, seed)
  add_channel = source != "gaussian_toy"
  train_images, train_labels = arrays["train_images"], arrays["train_labels"]
  first_held_out = len(train_labels) - validation_count(cfg, len(train_labels))
  xva, yva = _as_split(train_images[first_held_out:],
                       train_labels[first_held_out:], 0, add_channel)
  xtr, ytr = _as_split(train_images[:first_held_out],
                       train_labels[:first_held_out], cfg.num_train, add_channel)
  xte, yte = _as_split(arrays["test_images"], arrays["test_labels"],
                       cfg.num_test, add_channel)
  where = data_dir or ("in memory" if source in ("digits", "gaussian_toy")
                       else "tfds default")
  check_image_shape(cfg.name, xtr.shape[1:],
                    os.path.abspath(data_dir) if data_dir else where)
  num_classes = NUM_CLASSES.get(cfg.name) or int(max(ytr.max(), yte.max()) + 1)
  return Dataset(name=cfg.name, source=f"{source}:{where}", train_images=xtr,
                 train_labels=ytr, test_images=xte, test_labels=yte,
                 validation_images=xva, validation_labels=yva,
                 num_classes=num_classes, domain=None if source ==
                 "gaussian_toy" else (0.0, 1.0))


# ----------------------------------------------------------------- batches


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  steps = num_examples // batch_size
  if steps < 1:
    raise ValueError(f"batch_size={batch_size} exceeds the {num_examples} "
                     "training examples; lower train.batch_size.")
  return steps


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
  """The example order of `epoch`: a function of (seed, epoch) only."""
  return np.random.default_rng((int(seed), int(epoch))).permutation(n)


class Batches:
  """Global batches for steps `start_step, start_step + 1, ...`.

  Step `s` is batch `s % steps_per_epoch` of epoch `s // steps_per_epoch`
  under `epoch_permutation(seed, epoch)` (the last partial batch of an epoch
  is dropped). A batch is `{"image": float32, "label": int32, "index":
  int32}`, "index" being the examples' positions in `images`. With a
  `sharding`, every process cuts only its own rows of the
  global batch and the result is one global `jax.Array` sharded over the
  mesh's "data" axis.
  """

  def __init__(self, images, labels, batch_size: int, *, seed: int,
               start_step: int = 0, sharding=None):
    self.images, self.labels = images, labels
    self.batch_size = int(batch_size)
    self.seed = int(seed)
    self.step = int(start_step)
    self.sharding = sharding
    self.steps_per_epoch = steps_per_epoch(len(labels), batch_size)
    self._perm_epoch, self._perm = None, None

  def indices(self, step: int) -> np.ndarray:
    epoch, index = divmod(int(step), self.steps_per_epoch)
    if epoch != self._perm_epoch:
      self._perm = epoch_permutation(self.seed, epoch, len(self.labels))
      self._perm_epoch = epoch
    return self._perm[index * self.batch_size:(index + 1) * self.batch_size]

  def get(self, step: int) -> dict:
    idx = self.indices(step)
    nproc, pid = jax.process_count(), jax.process_index()
    if self.sharding is not None and nproc > 1:
      per = self.batch_size // nproc
      idx = idx[pid * per:(pid + 1) * per]
    batch = {"image": to_float(self.images[idx]),
             "label": self.labels[idx].astype(np.int32),
             "index": idx.astype(np.int32)}
    if self.sharding is None:
      return batch
    return {k: jax.make_array_from_process_local_data(
        self.sharding, v, (self.batch_size,) + v.shape[1:])
            for k, v in batch.items()}

  def __iter__(self) -> Iterator[tuple[int, dict]]:
    while True:
      yield self.step, self.get(self.step)
      self.step += 1
