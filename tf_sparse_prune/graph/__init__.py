"""Channel dependency graph, physical channel removal and FLOP counting.

``DependencyGraph`` finds the groups of channels that must be removed together,
``remove_channels`` builds the smaller model, ``count_flops`` and ``count_params`` measure a
model (``DependencyGraph.flops_after`` / ``params_after`` a removal, without building it).
This package never imports ``tf_sparse_prune.algorithms``.

Example:
    >>> from tf_sparse_prune.models import resnet20
    >>> model = resnet20()
    >>> graph = DependencyGraph(model)
    >>> conv1 = graph.group_of("s1b1_conv1")
    >>> small = remove_channels(model, {conv1.id: range(8)}, graph=graph)
    >>> count_params(model) - count_params(small)  # 8 filters, their BN entries, 8 input rows
    2336
"""

from tf_sparse_prune.graph.dependency import ChannelGroup, ChannelSlice, DependencyGraph
from tf_sparse_prune.graph.flops import count_flops, count_params
from tf_sparse_prune.graph.surgery import remove_channels

__all__ = [
    "ChannelGroup",
    "ChannelSlice",
    "DependencyGraph",
    "count_flops",
    "count_params",
    "remove_channels",
]
