"""Every docstring example in the library runs and prints what it claims."""

import doctest
import importlib
import pkgutil

import pytest

import tf_sparse_prune

MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(tf_sparse_prune.__path__, "tf_sparse_prune.")
    if not m.name.endswith("bench_cli")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(
        module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
