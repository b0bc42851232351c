"""The per-layer sparsity report: what is pruned, how much, and why a layer is not.

Example:
    >>> import keras, tf_sparse_prune as tsp
    >>> m = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, name="fc")])
    >>> rows = tsp.sparsity_report(tsp.prune_model(m, tsp.Magnitude(0.5), layers="all"))
    >>> rows[0].layer, rows[0].pruned, rows[0].structure
    ('fc', True, 'unstructured')
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import keras
import numpy as np

from tf_sparse_prune.modeltools import iter_layers
from tf_sparse_prune.prunable import prunable_weights, why_not_prunable
from tf_sparse_prune.wrappers import PruneWrapper, collect_wrappers

__all__ = ["LayerSparsity", "SparsityReport", "detect_structure", "sparsity_report"]


@dataclass(frozen=True)
class LayerSparsity:
    """One row of the report.

    Attributes:
        layer: The layer's name (the wrapped layer's own name for pruned layers).
        kind: The layer class.
        structure: The pruning structure, or ``"-"`` when the layer is not pruned. For
            a plain (e.g. stripped) model, the coarsest 1xN pattern its zeros form.
        sparsity: Fraction of zero weights in the prunable kernel(s).
        weights: Number of weights in the prunable kernel(s).
        pruned: Whether the layer is pruned (wrapped, or zeros found after stripping).
        reason: Why the layer is not pruned (empty when it is).
        warning: What is wrong with the layer, empty when nothing is: ``"all-zero
            kernel"`` (its output no longer depends on its input) or ``"cut off from the
            input"`` (every path from the model's input to it crosses an all-zero kernel).
    """

    layer: str
    kind: str
    structure: str
    sparsity: float
    weights: int
    pruned: bool
    reason: str = ""
    warning: str = ""


class SparsityReport(list):
    """A list of :class:`LayerSparsity` that prints as a table."""

    @property
    def warnings(self) -> list[str]:
        """``"layer: warning"`` for every layer with a warning (empty for a healthy model)."""
        return [f"{r.layer}: {r.warning}" for r in self if r.warning]

    @property
    def total_sparsity(self) -> float:
        """Zero weights over all prunable kernels, pruned or not."""
        total = sum(r.weights for r in self)
        return sum(r.sparsity * r.weights for r in self) / max(total, 1)

    def __str__(self) -> str:
        head = ("layer", "type", "structure", "sparsity", "weights", "pruned / why not")
        rows = [head] + [
            (
                r.layer,
                r.kind,
                r.structure,
                f"{r.sparsity:.3f}",
                str(r.weights),
                "yes" if r.pruned else f"no: {r.reason}",
            )
            for r in self
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(len(head) - 1)]
        lines = [
            "  ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
            for row in rows
        ]
        lines.insert(1, "-" * len(lines[0]))
        lines.append(f"total sparsity over prunable kernels: {self.total_sparsity:.3f}")
        lines.extend(f"WARNING {w}" for w in self.warnings)
        return "\n".join(lines)

    def _repr_pretty_(self, p, cycle):  # IPython
        p.text(str(self))


def detect_structure(kernel: np.ndarray, depthwise: bool = False) -> str:
    """The coarsest 1xN pattern (N in 32, 16, 8, 4) the zeros of ``kernel`` form, else
    ``"unstructured"`` (``"-"`` for a kernel without zeros)."""
    from tf_sparse_prune.structures import OneByN

    nonzero = kernel != 0
    if nonzero.all():
        return "-"
    for n in (32, 16, 8, 4):
        s = OneByN(n)
        if s.applies_to(kernel.shape, depthwise) is not None:
            continue
        alive = np.asarray(s.to_blocks(nonzero.astype(np.float32), depthwise)).max(-1)
        if np.array_equal(np.asarray(s.expand(alive, kernel.shape, depthwise)) != 0, nonzero):
            return f"1x{n}"
    return "unstructured"


def _zero_fraction(arrays) -> tuple[float, int]:
    total = sum(a.size for a in arrays)
    zeros = sum(int(a.size - np.count_nonzero(a)) for a in arrays)
    return zeros / max(total, 1), total


def sparsity_report(model: keras.Model) -> SparsityReport:
    """Per-layer sparsity of a pruned model, or of any plain model (e.g. stripped).

    Every layer with a kernel (a weight of 2 or more dimensions) is listed. For a
    pruned model, a layer left dense says why (unsupported type, a structure that
    does not fit its shape, or not selected by ``layers=``); sparsities of pruned
    layers come from the masks.

    Args:
        model: A Keras model, pruned or not.

    Returns:
        A :class:`SparsityReport` (a list of :class:`LayerSparsity`; ``print`` it).
    """
    from tf_sparse_prune.pruning import _classifiers, default_exclusion, prunability

    wrappers = collect_wrappers(model)
    algorithm = wrappers[0].algorithm if wrappers else None
    report = SparsityReport()
    classifiers = None
    left_dense = getattr(model, "_tsp_left_dense", {})
    for layer in iter_layers(model):
        if isinstance(layer, PruneWrapper):
            effective = [layer.algorithm.final_kernel(layer, i) for i in range(len(layer.targets))]
            sparsity, n = _zero_fraction(effective)
            report.append(
                LayerSparsity(
                    layer.layer.name,
                    type(layer.layer).__name__,
                    layer.structure.name(),
                    sparsity,
                    n,
                    True,
                )
            )
            continue
        if why_not_prunable(layer) is not None:
            kernels = [(w, False) for w in layer.trainable_weights if len(w.shape) >= 2]
            if not kernels:  # no kernel to prune (BatchNormalization, ...): not a candidate
                continue
        else:
            kernels = prunable_weights(layer)
        arrays = [k.numpy() for k, _ in kernels]
        sparsity, n = _zero_fraction(arrays)
        structure = "-"
        if algorithm is not None:
            reason = prunability(layer, algorithm) or left_dense.get(layer.name)
            if reason is None:
                classifiers = _classifiers(model) if classifiers is None else classifiers
                reason = default_exclusion(layer, algorithm, classifiers)
            reason = reason or "not selected by layers="
            pruned = False
        else:
            pruned = sparsity > 0
            reason = "" if pruned else (why_not_prunable(layer) or "dense")
            if pruned:  # e.g. a stripped model: name the pattern its zeros form
                structure = detect_structure(arrays[0], kernels[0][1])
        report.append(
            LayerSparsity(layer.name, type(layer).__name__, structure, sparsity, n, pruned, reason)
        )
    return _with_warnings(model, report)


def _with_warnings(model: keras.Model, report: SparsityReport) -> SparsityReport:
    """Flags all-zero kernels and the layers they cut off from the model's input."""
    empty = {r.layer for r in report if r.weights and r.sparsity >= 1.0}
    cut = _cut_off(model, empty) if empty else set()
    rows = SparsityReport()
    for r in report:
        warning = "all-zero kernel" if r.layer in empty else ""
        if r.layer in cut and not warning:
            warning = "cut off from the input (every path to it crosses an all-zero kernel)"
        rows.append(replace(r, warning=warning))
    return rows


def _cut_off(model: keras.Model, empty: set[str]) -> set[str]:
    """Names of the layers whose inputs all come through an all-zero kernel (a graph
    model's own graph, nested models taken as one; other models: none found)."""
    from tf_sparse_prune.graph._walk import is_graph_model, ordered_nodes

    if not is_graph_model(model):
        return set()

    def name(op):
        return op.layer.name if isinstance(op, PruneWrapper) else op.name

    alive: set[int] = set()
    cut: set[str] = set()
    for node in ordered_nodes(model):
        op = node.operation
        inputs = keras.tree.flatten(node.input_tensors)
        if isinstance(op, keras.layers.InputLayer) or not inputs:
            live = True
        else:
            live = any(id(t) in alive for t in inputs)
            if not live:
                cut.add(name(op))
        if live and name(op) not in empty:
            alive.update(id(t) for t in keras.tree.flatten(node.output_tensors))
    return cut
