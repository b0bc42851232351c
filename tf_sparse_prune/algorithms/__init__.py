"""Pruning methods, one module each, behind :class:`PruningAlgorithm`'s hooks."""

from tf_sparse_prune.algorithms.base import PruningAlgorithm
from tf_sparse_prune.algorithms.magnitude import Magnitude
from tf_sparse_prune.algorithms.subp import SUBP

__all__ = ["SUBP", "Magnitude", "PruningAlgorithm"]
