"""``tsp-bench``: dense TFLite/XNNPACK vs the 1xN sparse delegate, latency on this machine.

Example:
    $ tsp-bench model.tflite --threads 1 2 --runs 50

For each thread count the stock interpreter (XNNPACK) and the delegate
interpreter are built, warmed up, then invoked alternately (A/B interleaved, so
frequency or load drift hits both equally); the medians are printed with their
ratio and the nodes the delegate claimed. ``--profile`` adds the delegate's own
time per claimed node (which layers gain, and at what GFLOP/s):

    $ tsp-bench model.tflite --threads 1 --profile
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "DelegateProfile",
    "LatencyResult",
    "NodeProfile",
    "PartitionProfile",
    "compare_latency",
    "interleaved_times",
    "main",
    "profile_delegate",
]


@dataclass
class LatencyResult:
    """One A/B latency comparison.

    Attributes:
        threads: Threads given to both interpreters.
        runs: Timed invocations of each interpreter.
        dense_ms: Median latency of the stock interpreter (XNNPACK), ms.
        sparse_ms: Median latency with the delegate, ms.
        speedup: ``dense_ms / sparse_ms``.
        max_rel_diff: Largest output difference between the two, relative to
            the largest output magnitude.
        isa: Delegate micro-kernel path.
        claimed: ``"node op N sparsity filter"`` for each claimed node.
        declined: ``"node op: reason"`` for each declined node.
        dense_all_ms: All dense timings.
        sparse_all_ms: All delegate timings.
    """

    threads: int
    runs: int
    dense_ms: float
    sparse_ms: float
    speedup: float
    max_rel_diff: float
    isa: str | None
    claimed: list[str] = field(default_factory=list)
    declined: list[str] = field(default_factory=list)
    dense_all_ms: list[float] = field(default_factory=list)
    sparse_all_ms: list[float] = field(default_factory=list)
    profile: DelegateProfile | None = None


@dataclass
class NodeProfile:
    """The delegate's own time on one claimed CONV_2D / FULLY_CONNECTED node.

    Attributes:
        node: Node index in the model's execution plan.
        op: ``"CONV_2D"`` or ``"FULLY_CONNECTED"``.
        kernel: ``(kh, kw)``.
        cin: Input channels.
        cout: Output channels.
        n: Block width N of its 1xN pattern.
        sparsity: Its 1xN block sparsity.
        pixels: Output pixels per invocation (batch x height x width).
        calls: Timed invocations (all but the first, which runs on cold caches).
        ms: Mean milliseconds per invocation, including a residual ADD fused
            into it.
        kept_gflops: Effective GFLOP/s on the kept (non-zero) multiply-adds.
        fused_add: The ADD node run in its epilogue, or None.
        winograd: Whether it ran as Winograd F(2x2, 3x3) (``kept_gflops``
            then counts the direct kernel's multiply-adds).
    """

    node: int
    op: str
    kernel: tuple[int, int]
    cin: int
    cout: int
    n: int
    sparsity: float
    pixels: int
    calls: int
    ms: float
    kept_gflops: float
    fused_add: int | None
    winograd: bool = False


@dataclass
class PartitionProfile:
    """Wall time of one delegate partition (a run of consecutive claimed nodes).

    Attributes:
        first_node: Its first node's index.
        nodes: Claimed nodes in it (convolutions and fused ADDs).
        calls: Timed invocations (all but the first).
        ms: Mean milliseconds per invocation.
        arena_bytes: Memory of the tensors internal to the partition, which the
            delegate keeps in its own arena, reusing it between tensors whose
            lifetimes do not overlap.
        tensor_bytes: Those tensors' total size (the memory without reuse).
        in_place_adds: Residual ADDs that write their result over the residual.
    """

    first_node: int
    nodes: int
    calls: int
    ms: float
    arena_bytes: int = 0
    tensor_bytes: int = 0
    in_place_adds: int = 0


@dataclass
class DelegateProfile:
    """Where one invocation's time goes, from inside the delegate.

    Attributes:
        threads: Delegate and interpreter threads.
        invoke_ms: Mean wall time of ``Interpreter.invoke`` (first call excluded).
        delegate_ms: Mean time inside the delegate's partitions per invocation.
        rest_ms: ``invoke_ms - delegate_ms``: the nodes left to TFLite/XNNPACK and
            the interpreter's own overhead.
        partitions: One entry per delegate partition.
        nodes: One entry per claimed CONV_2D / FULLY_CONNECTED node, in node order.
    """

    threads: int
    invoke_ms: float
    delegate_ms: float
    rest_ms: float
    partitions: list[PartitionProfile]
    nodes: list[NodeProfile]


def _model_source(model: bytes | str | os.PathLike) -> dict[str, Any]:
    """``model_content=`` for flatbuffer bytes, ``model_path=`` for a path."""
    if isinstance(model, bytes | bytearray):
        return {"model_content": bytes(model)}
    return {"model_path": os.fspath(model)}


def _make_input(interp: Any, batch: int | None, rng: np.random.Generator) -> np.ndarray:
    det = interp.get_input_details()[0]
    shape = [int(d) for d in det["shape_signature"]] or [int(d) for d in det["shape"]]
    shape = [max(d, 1) for d in shape]
    if batch is not None:
        shape[0] = batch
    if np.issubdtype(det["dtype"], np.integer):  # quantized input: the whole range
        info = np.iinfo(det["dtype"])
        return rng.integers(info.min, info.max, shape, endpoint=True).astype(det["dtype"])
    return rng.standard_normal(shape).astype(det["dtype"])


def _prepare(interp: Any, x: np.ndarray) -> None:
    det = interp.get_input_details()[0]
    if list(det["shape"]) != list(x.shape):
        interp.resize_tensor_input(det["index"], list(x.shape))
        interp.allocate_tensors()
    interp.set_tensor(det["index"], x)


def _describe(node: Any) -> str:
    if node.op == "ADD":
        return f"{node.node} ADD in the epilogue of node {node.conv_node} {node.output}"
    dtype = " int8" if node.dtype == "int8" else ""
    return (
        f"{node.node} {node.op}{dtype} 1x{node.n} sparsity={node.block_sparsity:.3f} {node.filter}"
    )


def interleaved_times(
    interps: dict[str, Any],
    runs: int,
    warmup: int = 0,
    progress: Any = None,
    gap_ms: float = 1.0,
) -> dict[str, list[float]]:
    """Milliseconds of each ``invoke()`` of every interpreter, run in turn.

    Each round invokes every interpreter once; the one that goes first rotates from
    round to round, so none always runs on a warm (or cold) cache. ``warmup`` untimed
    rounds come first; ``progress.update(1)`` is called after each timed round.
    Invocations are ``gap_ms`` apart: the delegate's pool workers spin up to 100 us
    after an invocation, and must not take a core from the next timed one.

    Args:
        interps: Name -> an interpreter with its input set.
        runs: Timed rounds.
        warmup: Untimed rounds first.
        progress: Optional tqdm-like object.
        gap_ms: Pause after each invocation, in milliseconds (not timed).

    Returns:
        Name -> the ``runs`` times in milliseconds.
    """
    for _ in range(warmup):
        for interp in interps.values():
            interp.invoke()
    order = list(interps)
    times: dict[str, list[float]] = {k: [] for k in order}
    for i in range(runs):
        shift = i % len(order)
        for key in order[shift:] + order[:shift]:
            t0 = time.perf_counter()
            interps[key].invoke()
            times[key].append((time.perf_counter() - t0) * 1e3)
            if gap_ms > 0:
                time.sleep(gap_ms / 1e3)
        if progress is not None:
            progress.update(1)
    return times


def compare_latency(
    model: bytes | str | os.PathLike,
    threads: int = 1,
    runs: int = 50,
    warmup: int = 5,
    min_sparsity: float | None = None,
    isa: str = "auto",
    min_sparsity_int8: float | None = None,
    width_aware: bool = True,
    cost_model: bool = True,
    fuse_residual: bool = True,
    winograd: bool = True,
    batch: int | None = None,
    fuse_residual_int8: bool | None = None,
    progress: Any = None,
    seed: int = 0,
) -> LatencyResult:
    """Times the stock interpreter against the delegate, A/B interleaved.

    Args:
        model: Flatbuffer bytes or a ``.tflite`` path.
        threads: Threads for both interpreters.
        runs: Timed invocations of each (the median is reported).
        warmup: Untimed invocations of each first.
        min_sparsity: Delegate claiming threshold (``None``: its default).
        min_sparsity_int8: Its threshold for int8 nodes (``None``: its default).
        isa: Delegate micro-kernel path.
        width_aware: Delegate's narrow-N threshold rule (False: claim every N
            at ``min_sparsity``).
        cost_model: Delegate's short-row rule (False: claim short rows too).
        fuse_residual: Let the delegate run residual ADDs in its convolutions.
        winograd: Let the delegate run 3x3 layers with long rows as Winograd
            F(2x2, 3x3).
        fuse_residual_int8: The same as ``fuse_residual`` for int8 ADDs
            (``None``: the delegate's default).
        batch: Batch size to resize the input to (default: the model's, or 1).
        progress: Optional tqdm-like object; ``update(1)`` per A/B pair.
        seed: Seed of the random input.

    Returns:
        A :class:`LatencyResult`.
    """
    from ai_edge_litert.interpreter import Interpreter

    from tf_sparse_prune.export.delegate import SparseInterpreter, delegated_nodes

    source = _model_source(model)
    dense = Interpreter(**source, num_threads=threads)
    dense.allocate_tensors()
    sparse = SparseInterpreter(
        **source,
        num_threads=threads,
        min_sparsity=min_sparsity,
        min_sparsity_int8=min_sparsity_int8,
        isa=isa,
        width_aware=width_aware,
        cost_model=cost_model,
        fuse_residual=fuse_residual,
        fuse_residual_int8=fuse_residual_int8,
        winograd=winograd,
    )
    x = _make_input(dense, batch, np.random.default_rng(seed))
    _prepare(dense, x)
    _prepare(sparse, x)
    for _ in range(warmup):
        dense.invoke()
        sparse.invoke()
    out_d = dense.get_tensor(dense.get_output_details()[0]["index"]).astype(np.float64)
    out_s = sparse.get_tensor(sparse.get_output_details()[0]["index"]).astype(np.float64)
    scale = max(float(np.abs(out_d).max()), 1e-30)
    max_rel = float(np.abs(out_d - out_s).max()) / scale
    times = interleaved_times({"dense": dense, "sparse": sparse}, runs, progress=progress)
    dense_t, sparse_t = times["dense"], times["sparse"]
    report = delegated_nodes(sparse)
    d_ms, s_ms = statistics.median(dense_t), statistics.median(sparse_t)
    return LatencyResult(
        threads=threads,
        runs=runs,
        dense_ms=d_ms,
        sparse_ms=s_ms,
        speedup=d_ms / s_ms,
        max_rel_diff=max_rel,
        isa=report.isa,
        claimed=[_describe(n) for n in report.claimed],
        declined=[f"{n.node} {n.op}: {n.reason}" for n in report.declined],
        dense_all_ms=dense_t,
        sparse_all_ms=sparse_t,
    )


def profile_delegate(
    model: bytes | str | os.PathLike,
    threads: int = 1,
    runs: int = 50,
    min_sparsity: float | None = None,
    isa: str = "auto",
    min_sparsity_int8: float | None = None,
    width_aware: bool = True,
    cost_model: bool = True,
    fuse_residual: bool = True,
    winograd: bool = True,
    batch: int | None = None,
    fuse_residual_int8: bool | None = None,
    seed: int = 0,
) -> DelegateProfile:
    """Times every node and partition the delegate runs, from inside the delegate.

    The delegate accumulates each claimed node's and each partition's invoke
    time (the first invocation, on cold caches, left out) and writes them out
    when the interpreter's partitions are freed; this runs ``runs + 1``
    invocations (timing each from Python too), then deletes the interpreter and
    reads the profile.

    Example:
        >>> prof = profile_delegate("model.tflite", threads=1, runs=20)  # doctest: +SKIP
        >>> prof.rest_ms  # time in the nodes left to XNNPACK  # doctest: +SKIP
        >>> max(prof.nodes, key=lambda p: p.ms).node  # doctest: +SKIP

    Args:
        model: Flatbuffer bytes or a ``.tflite`` path.
        threads: Delegate and interpreter threads.
        runs: Timed invocations (>= 1).
        min_sparsity: Delegate claiming threshold (``None``: its default).
        min_sparsity_int8: Its threshold for int8 nodes (``None``: its default).
        isa: Delegate micro-kernel path.
        width_aware: Delegate's narrow-N threshold rule.
        cost_model: Delegate's short-row rule.
        fuse_residual: Let the delegate run residual ADDs in its convolutions.
        winograd: Let the delegate run 3x3 layers with long rows as Winograd
            F(2x2, 3x3).
        fuse_residual_int8: The same as ``fuse_residual`` for int8 ADDs
            (``None``: the delegate's default).
        batch: Batch size to resize the input to (default: the model's, or 1).
        seed: Seed of the random input.

    Returns:
        A :class:`DelegateProfile`.

    Raises:
        ValueError: If ``runs`` < 1.
        RuntimeError: If the delegate wrote no profile.
    """
    from ai_edge_litert.interpreter import Interpreter

    from tf_sparse_prune.export.delegate import load_sparse_delegate

    if runs < 1:
        raise ValueError(f"profile_delegate: runs must be >= 1, got {runs}")
    source = _model_source(model)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "profile.json")
        delegate = load_sparse_delegate(
            threads,
            min_sparsity,
            min_sparsity_int8=min_sparsity_int8,
            isa=isa,
            width_aware=width_aware,
            cost_model=cost_model,
            fuse_residual=fuse_residual,
            fuse_residual_int8=fuse_residual_int8,
            winograd=winograd,
            profile_path=path,
        )
        interp = Interpreter(**source, num_threads=threads, experimental_delegates=[delegate])
        interp.allocate_tensors()
        _prepare(interp, _make_input(interp, batch, np.random.default_rng(seed)))
        interp.invoke()  # cold: left out, as in the delegate
        invoke_s = []
        for _ in range(runs):
            t0 = time.perf_counter()
            interp.invoke()
            invoke_s.append(time.perf_counter() - t0)
        del interp  # frees the delegate's partitions, which write the profile
        gc.collect()
        if not os.path.isfile(path):
            raise RuntimeError(
                "the sparse delegate wrote no profile (it claimed no node, or the "
                "interpreter was not freed)"
            )
        with open(path) as f:
            data = json.load(f)
        del delegate
    nodes = [
        NodeProfile(
            node=int(e["node"]),
            op=str(e["op"]),
            kernel=(int(e["kernel"][0]), int(e["kernel"][1])),
            cin=int(e["cin"]),
            cout=int(e["cout"]),
            n=int(e["n"]),
            sparsity=float(e["sparsity"]),
            pixels=int(e["pixels"]),
            calls=int(e["calls"]),
            ms=float(e["ms_per_call"]),
            kept_gflops=float(e["kept_gflops"]),
            fused_add=None if int(e["fused_add"]) < 0 else int(e["fused_add"]),
            winograd=bool(int(e.get("winograd", 0))),
        )
        for e in data["nodes"]
    ]
    parts = [
        PartitionProfile(
            first_node=int(e["first_node"]),
            nodes=int(e["nodes"]),
            calls=int(e["calls"]),
            ms=float(e["ms_per_call"]),
            arena_bytes=int(e.get("arena_bytes", 0)),
            tensor_bytes=int(e.get("tensor_bytes", 0)),
            in_place_adds=int(e.get("in_place_adds", 0)),
        )
        for e in data.get("partitions", [])
    ]
    invoke_ms = 1e3 * sum(invoke_s) / len(invoke_s)
    delegate_ms = sum(p.ms for p in parts)
    return DelegateProfile(
        threads=threads,
        invoke_ms=invoke_ms,
        delegate_ms=delegate_ms,
        rest_ms=invoke_ms - delegate_ms,
        partitions=sorted(parts, key=lambda p: p.first_node),
        nodes=sorted(nodes, key=lambda p: p.node),
    )


def _print_profile(prof: DelegateProfile) -> None:
    total = sum(p.ms for p in prof.nodes)
    print(
        f"delegate profile, {prof.threads} thread(s): invoke {prof.invoke_ms:.3f} ms = "
        f"{len(prof.partitions)} delegate partition(s) {prof.delegate_ms:.3f} ms + the rest "
        f"(TFLite/XNNPACK) {prof.rest_ms:.3f} ms; {total:.3f} ms in {len(prof.nodes)} nodes"
    )
    arena = sum(p.arena_bytes for p in prof.partitions)
    tensors = sum(p.tensor_bytes for p in prof.partitions)
    in_place = sum(p.in_place_adds for p in prof.partitions)
    print(
        f"partition tensors: {arena / 2**20:.1f} MiB in the delegate's arenas "
        f"({tensors / 2**20:.1f} MiB without reuse), {in_place} ADD(s) in place"
    )
    print(
        f"{'node':>5} {'op':<15} {'kernel':<7} {'cin->cout':>11} {'1xN':>4} "
        f"{'sparsity':>8} {'ms':>8} {'share':>6} {'kept GF/s':>9}  fused ADD"
    )
    winograd = [p.node for p in prof.nodes if p.winograd]
    for p in sorted(prof.nodes, key=lambda p: -p.ms):
        kern = f"{p.kernel[0]}x{p.kernel[1]}"
        io = f"{p.cin}->{p.cout}"
        share = p.ms / total if total > 0 else 0.0
        print(
            f"{p.node:>5} {p.op:<15} {kern:<7} {io:>11} {p.n:>4} {p.sparsity:>8.3f} "
            f"{p.ms:>8.3f} {share:>6.1%} {p.kept_gflops:>9.1f}  "
            f"{'' if p.fused_add is None else p.fused_add}"
        )
    if winograd:
        print(f"run as Winograd F(2x2, 3x3): nodes {', '.join(map(str, winograd))}")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tsp-bench",
        description="Median latency of a .tflite model: stock TFLite/XNNPACK vs the 1xN "
        "block-sparse delegate (A/B interleaved).",
    )
    p.add_argument("model", help="path of a .tflite model")
    p.add_argument("--threads", type=int, nargs="+", default=[1], help="thread counts to try")
    p.add_argument("--runs", type=int, default=50, help="timed invocations of each (>= 1)")
    p.add_argument("--warmup", type=int, default=5, help="untimed invocations first")
    p.add_argument("--min-sparsity", type=float, default=None, help="delegate threshold")
    p.add_argument(
        "--min-sparsity-int8", type=float, default=None, help="delegate threshold of int8 nodes"
    )
    p.add_argument("--isa", default="auto", help="auto, scalar, avx2, avx512 or neon")
    p.add_argument(
        "--no-width-aware",
        action="store_true",
        help="claim narrow N (1x4, 1x8) at min_sparsity too (measures those kernels)",
    )
    p.add_argument(
        "--no-cost-model",
        action="store_true",
        help="claim 1x16 layers with rows too short to beat XNNPACK too",
    )
    p.add_argument(
        "--no-fuse-residual",
        action="store_true",
        help="leave residual ADDs to TFLite instead of running them in the delegate's convs",
    )
    p.add_argument(
        "--no-winograd",
        action="store_true",
        help="run every 3x3 layer with the direct kernel (no Winograd F(2x2, 3x3))",
    )
    p.add_argument("--batch", type=int, default=None, help="resize the input batch")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--quiet-nodes", action="store_true", help="do not list the claimed nodes")
    p.add_argument(
        "--profile",
        action="store_true",
        help="also time each claimed node inside the delegate (ms, kept GFLOP/s)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tsp-bench``.

    Args:
        argv: Arguments (default ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    args = _parser().parse_args(argv)
    if args.runs < 1:
        print(f"tsp-bench: --runs must be >= 1, got {args.runs}", file=sys.stderr)
        return 2
    if any(t < 1 for t in args.threads):
        print(f"tsp-bench: --threads must all be >= 1, got {args.threads}", file=sys.stderr)
        return 2
    if not os.path.isfile(args.model):
        print(f"tsp-bench: model file {args.model!r} not found", file=sys.stderr)
        return 2
    try:
        from tqdm import tqdm
    except ImportError:
        print(
            "tsp-bench: the progress bar needs tqdm: pip install 'tf_sparse_prune[bench]'",
            file=sys.stderr,
        )
        return 2

    # The delegate set-up shared by the latency comparison and the profile.
    setup: dict[str, Any] = {
        "min_sparsity": args.min_sparsity,
        "min_sparsity_int8": args.min_sparsity_int8,
        "isa": args.isa,
        "width_aware": not args.no_width_aware,
        "cost_model": not args.no_cost_model,
        "fuse_residual": not args.no_fuse_residual,
        "winograd": not args.no_winograd,
        "batch": args.batch,
    }
    results = []
    with tqdm(total=args.runs * len(args.threads), desc="A/B runs", unit="pair") as bar:
        for t in args.threads:
            results.append(
                compare_latency(
                    args.model, threads=t, runs=args.runs, warmup=args.warmup, progress=bar, **setup
                )
            )
    first = results[0]
    print(f"model: {args.model}   delegate path: {first.isa}   runs: {args.runs}")
    print(f"{'threads':>7} {'dense ms':>10} {'delegate ms':>12} {'speedup':>8} {'max rel':>9}")
    for r in results:
        print(
            f"{r.threads:>7} {r.dense_ms:>10.3f} {r.sparse_ms:>12.3f} {r.speedup:>7.2f}x "
            f"{r.max_rel_diff:>9.1e}"
        )
    print(f"claimed nodes: {len(first.claimed)}   declined: {len(first.declined)}")
    if not args.quiet_nodes:
        for line in first.claimed:
            print(f"  + {line}")
        for line in first.declined:
            print(f"  - {line}")
    if args.profile:
        for r in results:
            r.profile = profile_delegate(args.model, threads=r.threads, runs=args.runs, **setup)
            _print_profile(r.profile)
    if args.json:
        with open(args.json, "w") as f:
            json.dump([asdict(r) for r in results], f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
