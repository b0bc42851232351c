"""Export: strip the wrappers, convert to TFLite, load the sparse delegate."""

from tf_sparse_prune.export.delegate import (
    DelegatedNode,
    DelegateUnavailableError,
    DelegationReport,
    SparseInterpreter,
    delegated_nodes,
    load_sparse_delegate,
)
from tf_sparse_prune.export.strip import strip_pruning
from tf_sparse_prune.export.tflite import TFLiteSparsityCheck, check_tflite_sparsity, export_tflite

__all__ = [
    "DelegateUnavailableError",
    "DelegatedNode",
    "DelegationReport",
    "SparseInterpreter",
    "TFLiteSparsityCheck",
    "check_tflite_sparsity",
    "delegated_nodes",
    "export_tflite",
    "load_sparse_delegate",
    "strip_pruning",
]
