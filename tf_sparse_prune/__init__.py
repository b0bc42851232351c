"""tf_sparse_prune: pruning for Keras 3 CNNs during ``model.fit``, with fast sparse TFLite export.

Example:
    >>> import keras, numpy as np, tf_sparse_prune as tsp
    >>> model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32)])
    >>> pruner = tsp.Magnitude(sparsity=0.75, structure=tsp.OneByN(16))
    >>> pruned = tsp.prune_model(model, pruner, layers="all")   # a lone Dense is the classifier
    >>> pruned.compile("adam", "mse")
    >>> _ = pruned.fit(np.random.rand(64, 16), np.random.rand(64, 32), epochs=3,
    ...                verbose=0, callbacks=pruner.callbacks())
    >>> final = tsp.strip_pruning(pruned)
    >>> float(np.mean(final.layers[0].kernel.numpy() == 0))
    0.75
"""

from tf_sparse_prune import (
    layer_rules,
    models,
    modeltools,
    ops,
    prunable,
    schedules,
    scoring,
    structures,
)
from tf_sparse_prune.algorithms import PDP, SMART, SUBP, Magnitude, OCSPruner, PruningAlgorithm
from tf_sparse_prune.callbacks import PruningCallback
from tf_sparse_prune.datasets import load_fashion_mnist
from tf_sparse_prune.export import (
    DelegationReport,
    SparseInterpreter,
    TFLiteSparsityCheck,
    check_tflite_sparsity,
    delegated_nodes,
    export_tflite,
    strip_pruning,
)
from tf_sparse_prune.floors import Floor
from tf_sparse_prune.graph import DependencyGraph, count_flops, count_params, remove_channels
from tf_sparse_prune.ops import soft_topk
from tf_sparse_prune.pruning import get_pruner, prune_model
from tf_sparse_prune.report import LayerSparsity, SparsityReport, sparsity_report
from tf_sparse_prune.schedules import ConstantSparsity, PolynomialDecay, PruningSchedule
from tf_sparse_prune.structures import NM, Block, OneByN, OutputChannel, Structure, Unstructured
from tf_sparse_prune.wrappers import PruneWrapper

__version__ = "0.1.0"

__all__ = [
    "NM",
    "PDP",
    "SMART",
    "SUBP",
    "Block",
    "ConstantSparsity",
    "DelegationReport",
    "DependencyGraph",
    "Floor",
    "LayerSparsity",
    "Magnitude",
    "OCSPruner",
    "OneByN",
    "OutputChannel",
    "PolynomialDecay",
    "PruneWrapper",
    "PruningAlgorithm",
    "PruningCallback",
    "PruningSchedule",
    "SparseInterpreter",
    "SparsityReport",
    "Structure",
    "TFLiteSparsityCheck",
    "Unstructured",
    "check_tflite_sparsity",
    "count_flops",
    "count_params",
    "delegated_nodes",
    "export_tflite",
    "get_pruner",
    "layer_rules",
    "load_fashion_mnist",
    "models",
    "modeltools",
    "ops",
    "prunable",
    "prune_model",
    "remove_channels",
    "schedules",
    "scoring",
    "soft_topk",
    "sparsity_report",
    "strip_pruning",
    "structures",
]
