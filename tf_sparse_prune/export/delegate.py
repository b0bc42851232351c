"""The 1xN block-sparse TFLite delegate: loading it and building interpreters with it.

The delegate is a TFLite external-delegate plugin (``libtsp_delegate.so``, built
from ``tflite_kernels/`` by CMake during ``pip install`` and installed in
``tf_sparse_prune/_native``). It claims CONV_2D and FULLY_CONNECTED nodes with
constant float32 filters whose zeros form 1xN blocks (N consecutive output
channels x one input channel x the whole kernel window, N in {4, 8, 16, 32})
at a block sparsity of at least ``min_sparsity``, and runs them with packed
micro-kernels; every other node stays with TFLite and XNNPACK.

int8 models (``export_tflite(..., quantize="int8")``): int8 CONV_2D nodes (filters
quantized per output channel or per tensor) and FULLY_CONNECTED nodes (per output
channel) with constant int8 filters and 1xN zero blocks are claimed at a block
sparsity of at least ``min_sparsity_int8``. Their output is **bit-exact** with
TFLite's reference int8 kernels (the same int32 accumulation and fixed-point
requantization: rounded twice for CONV_2D and once for FULLY_CONNECTED, as those
kernels do; ``reference_kernels=True`` runs every other node on those
kernels too, for a comparison without XNNPACK, whose int8 kernels round
differently by up to one unit). Residual ADDs, Winograd and the cost model are
float32 only.

N is read from the weights **(our rule)**: the largest N in {32, 16, 8, 4}
dividing C_out whose block sparsity is within 0.02 of the 1x4 block sparsity
(i.e. whose zero blocks cover almost all the zeros the finest pattern sees).
A filter pruned 1x16 is therefore run 1x16, and an unstructured zero pattern
(no zero 1x4 blocks) is declined.

Residual ADDs (``fuse_residual``, default on, **our choice**): a float32 ADD of
two same-shape tensors, one of which is the output of a claimed CONV_2D with no
activation and read by nothing else, is claimed too and computed in that
convolution's epilogue (the residual is added to the accumulators before the
ADD's activation), so the convolution's output is never written and read back.
This is the ``conv -> BatchNorm -> Add -> ReLU`` end of a ResNet block after
conversion. Where TFLite puts the two in different partitions, or the
convolution's output is also read elsewhere, the ADD runs on its own.
int8 ADDs after int8 convolutions are fused the same way, bit-exact with TFLite's
reference int8 ADD, only with ``fuse_residual_int8=True`` (default off: the exact
int8 ADD costs more in the epilogue than XNNPACK's ADD pass, see
``docs/performance.md``, int8).

Narrow N (``width_aware``, default on, **our choice**): a kernel whose N is
narrower than its vector registers (1x4 and 1x8 on AVX-512, 1x4 on AVX2) does
proportionally less work per instruction, so its threshold is raised to
``1 - (1 - min_sparsity) * lane_fraction`` (AVX-512 at the default 0.4: 0.85 for
1x4, 0.7 for 1x8), which keeps such layers on XNNPACK where they would be slower.

Short rows (``cost_model``, default on, **our choice**): a 1x16 layer whose rows
keep so few entries (kept input channels x taps) that the kernel's fixed cost per
row dominates is estimated slower than XNNPACK's dense kernel and declined, with
the estimate in its reason (e.g. MobileNetV2's first 1x1 layers, 16->96 and
32->16, at 0.5: measured 1.9x and 2.3x XNNPACK's time). The model and its fit
are in ``tflite_kernels/src/sparse_conv.h`` (``EstimatedCostRatio``).

Winograd (``winograd``, default on, **our choice**): a claimed 3x3 stride-1
convolution runs as Winograd F(2x2, 3x3) when its rows keep at least 20 input
channels and its output has at least 32 2x2 tiles (a layer whose transformed
tensors exceed 4 MiB runs in chunks of tile rows). A 1xN block spans the whole
3x3 window, so it stays a block of the transformed filter and the layer becomes
16 sparse 1x1 products over the same kept channels: 16 instead of 36
multiply-adds per kept (input, output) pair and 2x2 tile, for two additions-only
transforms and 16/9 of the weights. Results differ from the direct kernel by
rounding only (relative ~1e-6). Where it pays, and why only there, is measured in
``tflite_kernels/src/winograd.h`` (ResNet-50 1x16, 1 thread: 12% / 7% / 1% less
time end to end at 0.5 / 0.8 / 0.9; layers with short rows or 7x7 images stay
direct).

Example:
    >>> import keras, numpy as np, tf_sparse_prune as tsp
    >>> model = keras.Sequential([keras.Input((8, 8, 32)), keras.layers.Conv2D(32, 1, name="pw")])
    >>> kernel = model.get_layer("pw").kernel.numpy()
    >>> kernel[:, :, :24, :16] = 0.0  # 24 of the 32 1x16 blocks of row 0 ...
    >>> kernel[:, :, 8:, 16:] = 0.0   # ... and of row 1: 75% block sparsity
    >>> _ = model.get_layer("pw").kernel.assign(kernel)
    >>> interp = tsp.SparseInterpreter(model_content=tsp.export_tflite(model), num_threads=2)
    >>> x = np.random.rand(1, 8, 8, 32).astype(np.float32)
    >>> interp.set_tensor(interp.get_input_details()[0]["index"], x)
    >>> interp.invoke()
    >>> bool(np.allclose(interp.get_tensor(interp.get_output_details()[0]["index"]),
    ...                  model.predict(x, verbose=0), rtol=1e-5, atol=1e-5))
    True
    >>> [(n.op, n.n, n.block_sparsity) for n in tsp.delegated_nodes(interp).claimed]
    [('CONV_2D', 16, 0.75)]
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.resources
import json
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_MIN_SPARSITY",
    "DEFAULT_MIN_SPARSITY_INT8",
    "TESTED_LITERT_VERSION",
    "DelegateUnavailableError",
    "DelegatedNode",
    "DelegationReport",
    "SparseInterpreter",
    "available_isas",
    "delegate_library_path",
    "delegated_nodes",
    "lane_fraction",
    "load_sparse_delegate",
]

#: ai-edge-litert version whose TFLite struct layouts the delegate was built
#: against (tflite_kernels/include/tsp_tflite/tflite_abi.h).
TESTED_LITERT_VERSION = "2.3.0"

#: Default minimum block sparsity for a node to be claimed: the lowest 1x16 block
#: sparsity (steps of 0.1) at which the delegate beat XNNPACK on every ResNet-50
#: layer shape at 1 thread (benchmarks/results/latency_layers_threshold.json,
#: Winograd on: 0.3 -> 0.86-1.63x, 0.4 -> 1.02-1.82x, 0.5 -> 1.06-2.21x; the 1x1
#: layers set it) on AVX-512 (Zen 5). On AVX2 (Zen 3) every shape already wins at
#: 0.2 (1.12-2.02x, latency_layers_threshold_zen3.json): 0.4 is the portable choice.
DEFAULT_MIN_SPARSITY = 0.4
#: The claiming threshold of int8 nodes (``min_sparsity_int8``), see
#: ``docs/performance.md`` (int8).
DEFAULT_MIN_SPARSITY_INT8 = 0.5

LIBRARY_ENV = "TSP_DELEGATE_LIBRARY"
ALLOW_UNTESTED_ENV = "TSP_ALLOW_UNTESTED_LITERT"
_LIBRARY_NAME = "libtsp_delegate.so"
_ISAS = ("auto", "scalar", "avx2", "avx512", "neon")
_REPORT_ATTR = "_tsp_delegation_report"


class DelegateUnavailableError(RuntimeError):
    """The delegate library is missing, cannot be loaded, or refused its options."""


@dataclass(frozen=True)
class DelegatedNode:
    """One CONV_2D / FULLY_CONNECTED / ADD (or DEPTHWISE_CONV_2D) node the delegate examined.

    Attributes:
        node: Node index in the TFLite graph.
        op: Builtin op name, e.g. ``"CONV_2D"``.
        claimed: Whether the delegate runs it.
        filter: Name of the filter tensor (carries the Keras layer name).
        output: Name of the output tensor.
        n: Block width N used (0 when declined).
        block_sparsity: Fraction of zero 1xN blocks at that N (claimed nodes).
        reason: Why it was declined (empty when claimed).
        conv_node: For a claimed ADD: the CONV_2D node in whose epilogue it runs.
        dtype: ``"float32"`` or ``"int8"``: the kernels a claimed convolution runs on.
    """

    node: int
    op: str
    claimed: bool
    filter: str
    output: str
    n: int = 0
    block_sparsity: float | None = None
    reason: str = ""
    conv_node: int | None = None
    dtype: str = "float32"


@dataclass(frozen=True)
class DelegationReport:
    """What the delegate did with a model.

    Attributes:
        claimed: Nodes run by the delegate.
        declined: Nodes examined and left to TFLite, with the reason.
        isa: Micro-kernel path in use (``"avx512"``, ``"avx2"``, ``"neon"``,
            ``"scalar"``), or ``None`` when the delegate is not in use.
        num_threads: Threads of the delegate's pool.
        min_sparsity: The claiming threshold used.
        fallback_reason: Set when the interpreter fell back to dense TFLite.
    """

    claimed: list[DelegatedNode] = field(default_factory=list)
    declined: list[DelegatedNode] = field(default_factory=list)
    isa: str | None = None
    num_threads: int = 1
    min_sparsity: float = DEFAULT_MIN_SPARSITY
    fallback_reason: str | None = None


def delegate_library_path() -> Path:
    """Locates ``libtsp_delegate.so``.

    The environment variable ``TSP_DELEGATE_LIBRARY`` overrides the search;
    otherwise the library installed in the package (``tf_sparse_prune/_native``)
    is found through ``importlib.resources``.

    Returns:
        The path of the library.

    Raises:
        DelegateUnavailableError: If no library is found.
    """
    override = os.environ.get(LIBRARY_ENV)
    if override:
        path = Path(override)
        if not path.is_file():
            raise DelegateUnavailableError(
                f"{LIBRARY_ENV}={override!r} does not name an existing file; unset it or "
                f"point it at a built {_LIBRARY_NAME}"
            )
        return path
    candidates: list[Path] = []
    try:
        res = importlib.resources.files("tf_sparse_prune").joinpath("_native", _LIBRARY_NAME)
        with importlib.resources.as_file(res) as p:
            candidates.append(Path(p))
    except (ModuleNotFoundError, FileNotFoundError, TypeError):
        pass
    import tf_sparse_prune

    for base in getattr(tf_sparse_prune, "__path__", []):
        candidates.append(Path(base) / "_native" / _LIBRARY_NAME)
    for path in candidates:
        if path.is_file():
            return path
    searched = ", ".join(str(c) for c in candidates) or "(no package path)"
    raise DelegateUnavailableError(
        f"{_LIBRARY_NAME} not found (searched {searched}). It is built by CMake during "
        f"`pip install .` (or `make install`); or set {LIBRARY_ENV} to a built library."
    )


def check_litert_version(allow_untested: bool = False) -> str:
    """Checks that the installed ai-edge-litert is the version the delegate was tested with.

    The delegate declares TFLite's C structs itself; another runtime version may
    lay them out differently and crash.

    Args:
        allow_untested: Accept another version (at the user's risk). The
            environment variable ``TSP_ALLOW_UNTESTED_LITERT=1`` does the same.

    Returns:
        The installed version.

    Raises:
        DelegateUnavailableError: On a version mismatch without the override.
    """
    try:
        version = importlib.metadata.version("ai-edge-litert")
    except importlib.metadata.PackageNotFoundError as e:
        raise DelegateUnavailableError(
            f"ai-edge-litert is not installed; install ai-edge-litert=={TESTED_LITERT_VERSION}"
        ) from e
    allowed = allow_untested or os.environ.get(ALLOW_UNTESTED_ENV, "") not in ("", "0")
    if version != TESTED_LITERT_VERSION and not allowed:
        raise DelegateUnavailableError(
            f"the sparse delegate was built and tested against ai-edge-litert "
            f"{TESTED_LITERT_VERSION}, but {version} is installed; its TFLite struct layouts "
            f"may differ and crash. Install ai-edge-litert=={TESTED_LITERT_VERSION}, or pass "
            f"allow_untested_litert=True (or set {ALLOW_UNTESTED_ENV}=1) at your own risk."
        )
    return version


def lane_fraction(isa: str, n: int, library: str | os.PathLike | None = None) -> float:
    """Fraction of its vector lanes the 1xN kernel of a path fills (1.0 for N >= 16).

    Args:
        isa: ``"auto"``, ``"scalar"``, ``"avx2"``, ``"avx512"`` or ``"neon"``.
        n: Block width.
        library: Library path; default :func:`delegate_library_path`.

    Returns:
        E.g. 0.25 for 1x4 on AVX-512.
    """
    lib = ctypes.CDLL(str(library or delegate_library_path()))
    fn = lib.tsp_delegate_lane_fraction
    fn.argtypes = [ctypes.c_char_p, ctypes.c_int]
    fn.restype = ctypes.c_double
    return float(fn(isa.encode(), int(n)))


def available_isas(library: str | os.PathLike | None = None) -> list[str]:
    """Micro-kernel paths the library has and this CPU runs (``"auto"`` excluded).

    Args:
        library: Library path; default :func:`delegate_library_path`.

    Returns:
        E.g. ``["scalar", "avx2", "avx512"]``.
    """
    lib = ctypes.CDLL(str(library or delegate_library_path()))
    fn = lib.tsp_delegate_isa_available
    fn.argtypes = [ctypes.c_char_p]
    fn.restype = ctypes.c_int
    return [isa for isa in _ISAS[1:] if fn(isa.encode())]


def _validate(num_threads: Any, min_sparsity: Any, isa: Any) -> tuple[int, float, str]:
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
        raise ValueError(f"num_threads must be an int >= 1, got {num_threads!r}")
    if min_sparsity is None:
        min_sparsity = DEFAULT_MIN_SPARSITY
    if isinstance(min_sparsity, bool) or not isinstance(min_sparsity, int | float):
        raise ValueError(f"min_sparsity must be a number in [0, 1] or None, got {min_sparsity!r}")
    if not 0.0 <= float(min_sparsity) <= 1.0:
        raise ValueError(f"min_sparsity must be in [0, 1], got {min_sparsity!r}")
    if isa not in _ISAS:
        raise ValueError(f"isa must be one of {', '.join(_ISAS)}; got {isa!r}")
    return num_threads, float(min_sparsity), isa


def _validate_int8_threshold(min_sparsity_int8: Any) -> float:
    if min_sparsity_int8 is None:
        return DEFAULT_MIN_SPARSITY_INT8
    if isinstance(min_sparsity_int8, bool) or not isinstance(
        min_sparsity_int8, int | float | np.integer | np.floating
    ):
        raise ValueError(
            f"min_sparsity_int8 must be a number in [0, 1] or None, got {min_sparsity_int8!r}"
        )
    if not 0.0 <= float(min_sparsity_int8) <= 1.0:
        raise ValueError(f"min_sparsity_int8 must be in [0, 1], got {min_sparsity_int8!r}")
    return float(min_sparsity_int8)


def load_sparse_delegate(
    num_threads: int = 1,
    min_sparsity: float | None = None,
    *,
    min_sparsity_int8: float | None = None,
    isa: str = "auto",
    width_aware: bool = True,
    cost_model: bool = True,
    fuse_residual: bool = True,
    fuse_residual_int8: bool | None = None,
    winograd: bool = True,
    report_path: str | os.PathLike | None = None,
    profile_path: str | os.PathLike | None = None,
    library: str | os.PathLike | None = None,
    allow_untested_litert: bool = False,
) -> Any:
    """Loads the delegate with ``ai_edge_litert.interpreter.load_delegate``.

    Args:
        num_threads: Threads of the delegate's pool (created once per delegate).
        min_sparsity: Minimum 1xN block sparsity for a node to be claimed;
            ``None`` means :data:`DEFAULT_MIN_SPARSITY`.
        min_sparsity_int8: The same for int8 nodes; ``None`` means
            :data:`DEFAULT_MIN_SPARSITY_INT8`.
        isa: Micro-kernel path: ``"auto"`` (best for this CPU), ``"scalar"``,
            ``"avx2"``, ``"avx512"`` or ``"neon"``.
        width_aware: Raise the threshold for N narrower than the kernel's
            vectors (see the module docstring); False applies ``min_sparsity``
            to every N.
        cost_model: Decline 1x16 layers whose rows are too short for the kernel
            to beat XNNPACK (see the module docstring); False claims them.
        fuse_residual: Also claim residual ADDs and run them in the epilogue of
            the convolution that produces one of their inputs (see the module
            docstring).
        fuse_residual_int8: The same for int8 ADDs after int8 convolutions
            (bit-exact with TFLite's int8 ADD; only with ``fuse_residual``);
            ``None`` keeps the library's default.
        winograd: Run 3x3 stride-1 layers with long rows as Winograd
            F(2x2, 3x3) (see the module docstring); False keeps every layer on
            the direct kernel.
        report_path: If given, the delegate writes its JSON claim report there.
        profile_path: If given, the delegate times every claimed node's
            invocations (the first one, with cold caches, left out) and writes
            them there as JSON when the interpreter's partitions are freed
            (complete once the interpreter is deleted); see
            :func:`tf_sparse_prune.export.bench_cli.profile_delegate`.
        library: Library path; default :func:`delegate_library_path`.
        allow_untested_litert: Accept an ai-edge-litert other than
            :data:`TESTED_LITERT_VERSION`.

    Returns:
        An ``ai_edge_litert.interpreter.Delegate``.

    Raises:
        ValueError: On an invalid argument.
        DelegateUnavailableError: If the library is missing, cannot be loaded,
            refuses the options, or the ai-edge-litert version is untested.
    """
    num_threads, min_sparsity, isa = _validate(num_threads, min_sparsity, isa)
    min_sparsity_int8 = _validate_int8_threshold(min_sparsity_int8)
    check_litert_version(allow_untested_litert)
    path = Path(library) if library is not None else delegate_library_path()
    if not path.is_file():
        raise DelegateUnavailableError(f"delegate library {str(path)!r} does not exist")
    try:  # load_delegate's own error path leaves a broken Delegate behind
        ctypes.CDLL(str(path))
    except OSError as e:
        raise DelegateUnavailableError(
            f"could not load the sparse delegate from {str(path)!r}: {e}"
        ) from e
    from ai_edge_litert.interpreter import load_delegate

    options = {
        "num_threads": str(num_threads),
        "min_sparsity": repr(min_sparsity),
        "min_sparsity_int8": repr(min_sparsity_int8),
        "isa": isa,
        "width_aware": "1" if width_aware else "0",
        "cost_model": "1" if cost_model else "0",
        "fuse_residual": "1" if fuse_residual else "0",
        "winograd": "1" if winograd else "0",
    }
    if fuse_residual_int8 is not None:
        options["fuse_residual_int8"] = "1" if fuse_residual_int8 else "0"
    if report_path is not None:
        options["report_path"] = os.fspath(report_path)
    if profile_path is not None:
        options["profile_path"] = os.fspath(profile_path)
    try:
        return load_delegate(str(path), options)
    except (OSError, ValueError, AttributeError) as e:
        raise DelegateUnavailableError(
            f"could not load the sparse delegate from {str(path)!r}: {e or type(e).__name__}"
        ) from e


def _parse_report(text: str) -> DelegationReport:
    data = json.loads(text)
    claimed, declined = [], []
    for entry in data.get("nodes", []):
        node = DelegatedNode(
            node=int(entry["node"]),
            op=str(entry["op"]),
            claimed=bool(entry["claimed"]),
            filter=str(entry.get("filter", "")),
            output=str(entry.get("output", "")),
            n=int(entry.get("n", 0)),
            block_sparsity=entry.get("block_sparsity"),
            reason=str(entry.get("reason", "")),
            conv_node=None if entry.get("conv_node") is None else int(entry["conv_node"]),
            dtype=str(entry.get("dtype", "float32")),
        )
        (claimed if node.claimed else declined).append(node)
    return DelegationReport(
        claimed=claimed,
        declined=declined,
        isa=data.get("isa"),
        num_threads=int(data.get("num_threads", 1)),
        min_sparsity=float(data.get("min_sparsity", DEFAULT_MIN_SPARSITY)),
    )


def SparseInterpreter(
    model_path: str | os.PathLike | None = None,
    model_content: bytes | None = None,
    num_threads: int = 1,
    min_sparsity: float | None = None,
    *,
    min_sparsity_int8: float | None = None,
    isa: str = "auto",
    width_aware: bool = True,
    cost_model: bool = True,
    fuse_residual: bool = True,
    fuse_residual_int8: bool | None = None,
    winograd: bool = True,
    reference_kernels: bool = False,
    fallback: bool = False,
    allow_untested_litert: bool = False,
    library: str | os.PathLike | None = None,
) -> Any:
    """Builds an ai-edge-litert interpreter with the sparse delegate applied first.

    The delegate sees the whole graph before XNNPACK (applied by the runtime at
    allocation) and claims the 1xN block-sparse CONV_2D / FULLY_CONNECTED nodes;
    the rest run on TFLite / XNNPACK with the same ``num_threads``. The returned
    interpreter has its tensors allocated. Use :func:`delegated_nodes` to see
    what was claimed.

    Args:
        model_path: Path of a ``.tflite`` file (or give ``model_content``).
        model_content: The flatbuffer bytes.
        num_threads: Threads for the delegate and for the interpreter.
        min_sparsity: Minimum block sparsity to claim a node; ``None`` means
            :data:`DEFAULT_MIN_SPARSITY`.
        min_sparsity_int8: The same for int8 nodes; ``None`` means
            :data:`DEFAULT_MIN_SPARSITY_INT8`.
        isa: Micro-kernel path (``"auto"``, ``"scalar"``, ``"avx2"``,
            ``"avx512"``, ``"neon"``).
        width_aware: Raise the threshold for N narrower than the kernel's
            vectors (see the module docstring).
        cost_model: Decline 1x16 layers whose rows are too short to beat
            XNNPACK (see the module docstring).
        fuse_residual: Run residual ADDs in the epilogue of the claimed
            convolution that feeds them (see the module docstring).
        fuse_residual_int8: The same for int8 ADDs (``None``: the library's
            default).
        winograd: Run 3x3 stride-1 layers with long rows as Winograd
            F(2x2, 3x3) (see the module docstring).
        reference_kernels: Run the nodes the delegate leaves on TFLite's
            reference kernels (``OpResolverType.BUILTIN_REF``, no XNNPACK): slow,
            for comparing an int8 model bit for bit with TFLite's reference.
        fallback: If the delegate cannot be loaded, warn and return the dense
            interpreter instead of raising.
        allow_untested_litert: Accept an ai-edge-litert version other than
            :data:`TESTED_LITERT_VERSION` (at your own risk).
        library: Path of the delegate library (default: the installed one, or
            ``TSP_DELEGATE_LIBRARY``).

    Returns:
        An ``ai_edge_litert.interpreter.Interpreter``.

    Raises:
        ValueError: On invalid arguments (both or neither model source, bad
            ``num_threads`` / ``min_sparsity`` / ``isa``).
        DelegateUnavailableError: If the delegate cannot be used and
            ``fallback`` is False.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    if (model_path is None) == (model_content is None):
        raise ValueError("give exactly one of model_path and model_content")
    num_threads, min_sparsity, isa = _validate(num_threads, min_sparsity, isa)
    source: dict[str, Any] = (
        {"model_path": os.fspath(model_path)}
        if model_path is not None
        else {"model_content": model_content}
    )
    if reference_kernels:
        source["experimental_op_resolver_type"] = OpResolverType.BUILTIN_REF
    with tempfile.TemporaryDirectory(prefix="tsp_delegate_") as tmp:
        report_file = Path(tmp) / "report.json"
        try:
            delegate = load_sparse_delegate(
                num_threads,
                min_sparsity,
                min_sparsity_int8=min_sparsity_int8,
                isa=isa,
                width_aware=width_aware,
                cost_model=cost_model,
                fuse_residual=fuse_residual,
                fuse_residual_int8=fuse_residual_int8,
                winograd=winograd,
                report_path=report_file,
                library=library,
                allow_untested_litert=allow_untested_litert,
            )
        except DelegateUnavailableError as e:
            if not fallback:
                raise
            warnings.warn(
                f"sparse delegate unavailable, using the dense TFLite interpreter: {e}",
                RuntimeWarning,
                stacklevel=2,
            )
            interp = Interpreter(**source, num_threads=num_threads)
            interp.allocate_tensors()
            setattr(
                interp,
                _REPORT_ATTR,
                DelegationReport(
                    num_threads=num_threads, min_sparsity=min_sparsity, fallback_reason=str(e)
                ),
            )
            return interp
        interp = Interpreter(**source, experimental_delegates=[delegate], num_threads=num_threads)
        interp.allocate_tensors()
        if report_file.is_file():
            report = _parse_report(report_file.read_text())
        else:  # the delegate's Prepare never ran
            report = DelegationReport(isa=None, num_threads=num_threads, min_sparsity=min_sparsity)
    setattr(interp, _REPORT_ATTR, report)
    return interp


def delegated_nodes(interp: Any) -> DelegationReport:
    """What the sparse delegate claimed and declined in an interpreter.

    Args:
        interp: An interpreter built by :func:`SparseInterpreter`.

    Returns:
        The :class:`DelegationReport` (claimed nodes, declined nodes with the
        reason, the kernel path and thread count).

    Raises:
        ValueError: If ``interp`` was not built by :func:`SparseInterpreter`.
    """
    report = getattr(interp, _REPORT_ATTR, None)
    if report is None:
        raise ValueError(
            "interp was not built by tf_sparse_prune.SparseInterpreter (no delegation report)"
        )
    return report
