"""Export: strip the wrappers, convert to TFLite, load the sparse delegate."""

from tf_sparse_prune.export.strip import strip_pruning
from tf_sparse_prune.export.tflite import TFLiteSparsityCheck, check_tflite_sparsity, export_tflite

__all__ = ["TFLiteSparsityCheck", "check_tflite_sparsity", "export_tflite", "strip_pruning"]
