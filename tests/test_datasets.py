"""Offline Fashion-MNIST linking."""

import gzip

import pytest

from tf_sparse_prune import datasets


def test_link_creates_symlinks_where_keras_looks(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    for f in datasets.FASHION_MNIST_FILES:
        with gzip.open(src / f, "wb") as fh:
            fh.write(b"x")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    dest = datasets.link_fashion_mnist(src)
    assert dest == tmp_path / "keras_home" / "datasets" / "fashion-mnist"
    for f in datasets.FASHION_MNIST_FILES:
        assert (dest / f).is_symlink() and (dest / f).resolve() == (src / f).resolve()


def test_missing_files_say_how_to_install_them(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty_home"))
    with pytest.raises(FileNotFoundError, match=r"dataset-fashion-mnist.*TSP_FASHION_MNIST_DIR"):
        datasets.link_fashion_mnist(tmp_path / "nowhere")
