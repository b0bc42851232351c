"""Offline Fashion-MNIST from the Debian package ``dataset-fashion-mnist``.

Example:
    >>> import tf_sparse_prune as tsp
    >>> (x, y), (xt, yt) = tsp.load_fashion_mnist()   # doctest: +SKIP
    >>> x.shape, x.dtype                              # doctest: +SKIP
    ((60000, 28, 28, 1), dtype('float32'))
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["FASHION_MNIST_FILES", "link_fashion_mnist", "load_fashion_mnist"]

FASHION_MNIST_FILES = (
    "train-labels-idx1-ubyte.gz",
    "train-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
)
_DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"


def _keras_cache_dir() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets" / "fashion-mnist"


def link_fashion_mnist(source: str | os.PathLike | None = None) -> Path:
    """Links the dataset files where ``keras.datasets.fashion_mnist.load_data()`` looks.

    Args:
        source: Folder with the four ``.gz`` files (default: ``$TSP_FASHION_MNIST_DIR``
            or the Debian package's ``/usr/share/datasets/fashion-mnist``).

    Returns:
        The Keras cache folder now holding the files.

    Raises:
        FileNotFoundError: if neither the cache nor the source has the files (the
            message says how to install them).
    """
    dest = _keras_cache_dir()
    if all((dest / f).exists() for f in FASHION_MNIST_FILES):
        return dest
    src = Path(source or os.environ.get("TSP_FASHION_MNIST_DIR", _DEBIAN_DIR))
    missing = [f for f in FASHION_MNIST_FILES if not (src / f).exists()]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST files {missing} are not in {src}; install the Debian package "
            "(apt-get install dataset-fashion-mnist, or `make data`), or set "
            "TSP_FASHION_MNIST_DIR to a folder holding the four .gz files"
        )
    dest.mkdir(parents=True, exist_ok=True)
    for f in FASHION_MNIST_FILES:
        target = dest / f
        if target.is_symlink() or target.exists():
            target.unlink()
        target.symlink_to(src / f)
    return dest


def load_fashion_mnist() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Fashion-MNIST, offline: ``(x_train, y_train), (x_test, y_test)``.

    Images are float32 in [0, 1], NHWC ``(N, 28, 28, 1)``; labels are uint8.
    """
    import keras

    link_fashion_mnist()
    (x, y), (xt, yt) = keras.datasets.fashion_mnist.load_data()
    prep = lambda a: (a.astype(np.float32) / 255.0)[..., None]  # noqa: E731
    return (prep(x), y), (prep(xt), yt)
