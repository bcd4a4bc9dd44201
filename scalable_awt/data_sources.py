"""Readers of the data sources: each returns the full splits as numpy arrays.

`data.load` picks the reader and post-processes its arrays (validation split,
cuts, checks); this module only reads.

Sources (`data.source`, "auto" picks from what `data.data_dir` holds):

* "idx": MNIST-style IDX files (`train-images-idx3-ubyte[.gz]`, ...), numpy.
* "image_folder": `root/<split>/<label>/<image>`; through
  `tfds.folder_dataset.ImageFolder` when TensorFlow is installed, else PIL.
  Labels are the sorted folder names; examples are in a fixed shuffled
  order (a function of the split name), so `num_train` picks all classes.
* "npz": a `.npz` with `x_train, y_train, x_test, y_test`.
* "tfds": `tfds.load(name, data_dir=..., download=...)` for mnist, cifar10,
  cifar100 (needs TensorFlow).
* "digits" (scikit-learn's 8x8 digits, fixed split) and "gaussian_toy" (the
  paper's App. C.1 problem) are generated in memory.

Images are uint8 (0..255) or float32 in [0, 1]. TensorFlow and tensorflow-datasets (the `.[tfds]` extra) are imported lazily,
for "tfds" and, when present, image folders only.
"""

from __future__ import annotations

import contextlib
import gzip
import importlib.util
import os
import struct
import sys
import tempfile
import zlib

import jax
import numpy as np

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


class DataError(Exception):
  """The data cannot serve this config; the message says why and what to do."""


class DataNotFoundError(DataError, FileNotFoundError):
  """A data set is missing; the message says where we looked and what to do."""


class DataMismatchError(DataError, ValueError):
  """The data exist but do not fit the config (image shape, split sizes)."""


def _open_maybe_gz(path: str):
  return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def read_idx(path: str) -> np.ndarray:
  """Reads one IDX file (raw or .gz) into a numpy array."""
  with _open_maybe_gz(path) as f:
    data = f.read()
  zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
  if zero != 0 or dtype_code != 0x08:
    raise ValueError(f"{path}: not an unsigned-byte IDX file "
                     f"(magic {data[:4].hex()}).")
  shape = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
  array = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
  if array.size != int(np.prod(shape)):
    raise ValueError(f"{path}: holds {array.size} values, header says {shape}.")
  return array.reshape(shape)


def _find_idx(data_dir: str, stem: str) -> str | None:
  for candidate in (stem, stem + ".gz", stem.replace("-idx", ".idx"),
                    stem.replace("-idx", ".idx") + ".gz"):
    path = os.path.join(data_dir, candidate)
    if os.path.isfile(path):
      return path
  return None


def has_idx(data_dir: str) -> bool:
  return bool(data_dir) and all(_find_idx(data_dir, s) for s in IDX_FILES.values())


def load_idx(data_dir: str) -> dict[str, np.ndarray]:
  paths = {k: _find_idx(data_dir, s) for k, s in IDX_FILES.items()}
  missing = [IDX_FILES[k] for k, p in paths.items() if p is None]
  if missing:
    raise DataNotFoundError(
        f"IDX files missing in {os.path.abspath(data_dir)!r}: {missing} (with "
        "or without .gz). Put the four MNIST-format files there (train-images-"
        "idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
        "t10k-labels-idx1-ubyte.gz) and pass --config.data.data_dir=THAT_DIR.")
  out = {k: read_idx(p) for k, p in paths.items()}
  for k in ("train_images", "test_images"):
    if out[k].ndim == 3:
      out[k] = out[k][..., None]  # NHWC with one channel.
  return out


def has_image_folder(root: str, split: str) -> bool:
  path = os.path.join(root, split) if root else ""
  return bool(root) and os.path.isdir(path) and any(
      os.path.isdir(os.path.join(path, d)) for d in os.listdir(path))


def _image_folder_listing(root: str, split: str):
  split_dir = os.path.join(root, split)
  if not os.path.isdir(split_dir):
    raise DataNotFoundError(
        f"No split folder {os.path.abspath(split_dir)!r}. An image folder data "
        "set is laid out as ROOT/<split>/<label>/<image> (e.g. ROOT/train/cat/"
        "0001.jpg, ROOT/test/cat/0002.jpg); pass --config.data.data_dir=ROOT.")
  labels = sorted(d for d in os.listdir(split_dir)
                  if os.path.isdir(os.path.join(split_dir, d)))
  files = []
  for index, label in enumerate(labels):
    folder = os.path.join(split_dir, label)
    files += [(os.path.join(folder, f), index) for f in sorted(os.listdir(folder))
              if f.lower().endswith(IMAGE_EXTENSIONS)]
  if not files:
    raise DataNotFoundError(f"No images under {os.path.abspath(split_dir)!r}.")
  # Folders list the examples class by class; a fixed shuffle (a function of
  # the split name only) mixes them so that "the first N" is a fair subset.
  order = np.random.default_rng(zlib.crc32(split.encode())).permutation(
      len(files))
  return labels, [files[i] for i in order]


def _pil_image(path: str, channels: int) -> np.ndarray:
  from PIL import Image
  with Image.open(path) as im:
    im = im.convert("L" if channels == 1 else "RGB")
    array = np.asarray(im, np.uint8)
  return array[..., None] if channels == 1 else array


def _channels_of(path: str) -> int:
  from PIL import Image
  with Image.open(path) as im:
    return 1 if im.mode in ("L", "1", "I;16", "I") else 3


def load_image_folder_split(root: str, split: str, labels_ref=None,
                            backend: str = "auto"):
  """`(images uint8 NHWC, labels int32, label_names)` of one split.

  backend: "tfds" (`tfds.folder_dataset.ImageFolder`), "pil", or "auto"
  (tfds when TensorFlow imports, else PIL). Both give the same arrays in the
  same order (a fixed shuffle of the sorted file paths).
  """
  labels, files = _image_folder_listing(root, split)
  if labels_ref is not None and labels != labels_ref:
    raise ValueError(f"Label folders of split {split!r} ({labels}) differ from "
                     f"the training split's ({labels_ref}).")
  channels = _channels_of(files[0][0])
  if backend == "auto":
    backend = "tfds" if tensorflow_available() and importlib.util.find_spec(
        "tensorflow_datasets") else "pil"
  if backend == "tfds":
    images, label_array = _image_folder_tfds(root, split, files, channels)
  else:
    images = np.stack([_pil_image(p, channels) for p, _ in files])
    label_array = np.asarray([l for _, l in files], np.int32)
  return images, label_array, labels


def _image_folder_tfds(root, split, files, channels):
  tf = import_tensorflow()
  import tensorflow_datasets as tfds
  builder = tfds.folder_dataset.ImageFolder(root, shape=(None, None, channels))
  ds = builder.as_dataset(split=split, shuffle_files=False)
  by_path = {}
  for batch in tfds.as_numpy(ds.batch(1024)):
    for name, image, label in zip(batch["image/filename"], batch["image"],
                                  batch["label"]):
      by_path[os.path.normpath(name.decode())] = (image, int(label))
  del tf
  images = np.stack([by_path[os.path.normpath(p)][0] for p, _ in files])
  labels = np.asarray([by_path[os.path.normpath(p)][1] for p, _ in files],
                      np.int32)
  return images.astype(np.uint8), labels


def load_npz(path: str) -> dict[str, np.ndarray]:
  if os.path.isdir(path):
    candidates = sorted(f for f in os.listdir(path) if f.endswith(".npz"))
    if len(candidates) != 1:
      raise DataNotFoundError(
          f"Expected exactly one .npz in {os.path.abspath(path)!r}, found "
          f"{candidates}; pass the file itself as data.data_dir.")
    path = os.path.join(path, candidates[0])
  if not os.path.isfile(path):
    raise DataNotFoundError(
        f"No .npz file at {os.path.abspath(path)!r}. Save one with "
        "np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...) "
        "(images NHWC uint8 0..255 or float in [0, 1]).")
  with np.load(path) as f:
    keys = set(f.files)
    names = {"train_images": ("x_train", "train_images"),
             "train_labels": ("y_train", "train_labels"),
             "test_images": ("x_test", "test_images"),
             "test_labels": ("y_test", "test_labels")}
    out = {}
    for k, options in names.items():
      found = [o for o in options if o in keys]
      if not found:
        raise ValueError(f"{path}: needs an array named one of {options}; has "
                         f"{sorted(keys)}.")
      out[k] = f[found[0]]
  return out


def tensorflow_available() -> bool:
  try:
    import_tensorflow()
    return True
  except ImportError:
    return False


@contextlib.contextmanager
def _stderr_to_file_if_quiet():
  """Holds back the C++ stderr lines that TensorFlow prints while it loads.

  TensorFlow's start-up notes (oneDNN, "could not find cuda drivers") are
  written before its logging reads TF_CPP_MIN_LOG_LEVEL, so they are caught
  at the file-descriptor level when that variable asks for silence (>= 3, as
  main sets it by default); replayed if the import fails.
  """
  level = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0")
  if not level.isdigit() or int(level) < 3 or "tensorflow" in sys.modules:
    yield
    return
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      yield
    except BaseException:
      os.dup2(saved, 2)
      captured.seek(0)
      sys.stderr.write(captured.read().decode(errors="replace"))
      raise
    finally:
      os.dup2(saved, 2)
      os.close(saved)


def import_tensorflow():
  """Imports TensorFlow (lazily) and hides every GPU from it."""
  with _stderr_to_file_if_quiet():
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    try:
      tf.config.set_visible_devices([], "GPU")  # Initialises its platforms.
    except (RuntimeError, ValueError):
      pass  # Already initialised; nothing to do.
  return tf


def load_tfds(name: str, data_dir: str, download: bool, splits) -> dict:
  try:
    import_tensorflow()
    import tensorflow_datasets as tfds
  except ImportError as e:
    raise DataNotFoundError(
        f"Reading {name!r} through tensorflow-datasets needs TensorFlow, which "
        f"is not installed ({e}). Provide the data in a form read without it: "
        "MNIST IDX files (--config.data.source=idx), an image folder "
        "ROOT/<split>/<label>/<image> (--config.data.source=image_folder) or a "
        ".npz (--config.data.source=npz), with --config.data.data_dir.") from e
  where = data_dir or os.path.expanduser("~/tensorflow_datasets")
  out = {}
  try:
    for key, split in zip(("train", "test"), splits):
      ds = tfds.load(name, split=split, data_dir=data_dir or None,
                     download=download, as_supervised=True,
                     shuffle_files=False)
      # Batched iteration, not batch_size=-1 (which aborts under mock_data).
      parts = list(tfds.as_numpy(ds.batch(4096)))
      out[f"{key}_images"] = np.concatenate([p[0] for p in parts])
      out[f"{key}_labels"] = np.concatenate([p[1] for p in parts])
  except Exception as e:  # TFDS raises several types for "not there".
    if "not found" not in str(e).lower() and not isinstance(
        e, (AssertionError, FileNotFoundError)):
      raise
    raise DataNotFoundError(
        f"Data set {name!r} not found by tensorflow-datasets in {where!r} "
        f"(download={download}). Either prepare it there (on a machine with "
        f"network: tfds.load({name!r}, data_dir={where!r}) or "
        "--config.data.download=True), or point --config.data.data_dir at "
        "IDX files (MNIST), an image folder ROOT/<split>/<label>/<image> or "
        f"a .npz. Original error: {type(e).__name__}: {str(e)[:300]}") from e
  return out


def load_digits(test_fraction: float) -> dict[str, np.ndarray]:
  from sklearn.datasets import load_digits as sk_load
  bunch = sk_load()
  images = (bunch.images.astype(np.float32) / 16.0)[..., None]  # (N, 8, 8, 1)
  labels = bunch.target.astype(np.int32)
  order = np.random.default_rng(0).permutation(len(labels))  # Fixed split.
  n_test = int(round(test_fraction * len(labels)))
  test, train = order[:n_test], order[n_test:]
  return {"train_images": images[train], "train_labels": labels[train],
          "test_images": images[test], "test_labels": labels[test]}


def load_gaussian_toy(seed: int, dim: int, num_train: int, num_test: int,
                      mu_over_sigma: float, support: int = 10
                      ) -> dict[str, np.ndarray]:
  """Two Gaussians N(±μ, I_dim); μ of norm `mu_over_sigma` on its first
  `support` coordinates (`data.toy_support`; 0 = all, see
  `gaussian_toy.mean_vector`)."""
  from scalable_awt import gaussian_toy
  mu = gaussian_toy.mean_vector(dim, mu_over_sigma, support)
  key = jax.random.fold_in(jax.random.PRNGKey(seed), 0xDA7A)
  k_train, k_test = jax.random.split(key)
  xtr, ytr = gaussian_toy.sample(k_train, num_train, mu)
  xte, yte = gaussian_toy.sample(k_test, num_test, mu)
  return {"train_images": np.asarray(xtr), "train_labels": np.asarray(ytr),
          "test_images": np.asarray(xte), "test_labels": np.asarray(yte)}
