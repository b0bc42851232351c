"""Pruning methods, one module each, behind :class:`PruningAlgorithm`'s hooks."""

from tf_sparse_prune.algorithms.base import PruningAlgorithm
from tf_sparse_prune.algorithms.magnitude import Magnitude
from tf_sparse_prune.algorithms.ocspruner import OCSPruner
from tf_sparse_prune.algorithms.pdp import PDP
from tf_sparse_prune.algorithms.smart import SMART
from tf_sparse_prune.algorithms.subp import SUBP

__all__ = ["PDP", "SMART", "SUBP", "Magnitude", "OCSPruner", "PruningAlgorithm"]
