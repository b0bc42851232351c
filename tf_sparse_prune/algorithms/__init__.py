"""Pruning methods, one module each, behind :class:`PruningAlgorithm`'s hooks."""

from tf_sparse_prune.algorithms.base import PruningAlgorithm
from tf_sparse_prune.algorithms.magnitude import Magnitude

__all__ = ["Magnitude", "PruningAlgorithm"]
