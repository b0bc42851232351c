"""Latency of the 1xN block-sparse TFLite delegate against stock TFLite/XNNPACK.

Sections (each writes ``benchmarks/results/latency_<section>.json``):

* ``models``: Keras ResNet-50 and MobileNetV2 (``weights=None``, 224x224, batch 1)
  with every 1x1/3x3 Conv2D except the stem pruned 1x16 by block magnitude
  (L2 norm of each 16 x kh x kw block; layers whose C_out is not a multiple of 16
  stay dense and are listed), at the given sparsities.
* ``layers``: single Conv2D layers with the shapes of ResNet-50's stages, 1x16 at
  the given sparsities: per-layer GFLOP/s of XNNPACK (dense) and of the delegate
  (on kept MACs).
* ``subp``: the SUBP supplement's Figure 5 set-up: ResNet-18-shaped 3x3 layers
  (224x224 input, batch 4), uniform 1xN (every row of N output channels keeps the
  same number of input channels) vs non-uniform 1xN (one magnitude ranking per
  layer; the dense weights get a log-normal per-output-channel scale so rows
  differ, as in trained networks) vs dense, N in {4, 8, 16, 32}, sparsity
  0.5-0.9, 1 and 2 threads.
* ``fusion``: the ``models`` set-up for ResNet-50, three interpreters interleaved
  in one loop: stock, the delegate with residual ADDs left to XNNPACK
  (``fuse_residual=False``) and the delegate running them in its convolutions.
* ``scaling``: the ``models`` set-up for ResNet-50, stock and delegate at every
  ``--threads`` count, all interleaved in one loop, so the thread-scaling ratios
  (1-thread median / n-thread median) compare runs taken side by side.

``--quantize int8`` (``models`` and ``layers``): the same models exported with full-integer
post-training quantization (``tsp.export_tflite(quantize="int8")``, calibrated on 16 random
images), so stock XNNPACK runs its dense int8 kernels and the delegate its int8 1xN kernels;
the JSON files get an ``_int8`` suffix.

Every measurement is A/B interleaved in one process (stock, delegate, stock, ...)
after warm-up, and reports medians of ``--runs`` invocations, the ratio, and the
FLOP-limit ratio (dense FLOPs / FLOPs left after pruning). The machine's load
average is recorded: on a shared machine the absolute numbers move, the
interleaved ratios much less.

Example:
    .venv/bin/python benchmarks/latency.py --sections layers --runs 30
    .venv/bin/python benchmarks/latency.py --sections models --models resnet50 \
        --sparsities 0.8 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
CACHE = RESULTS / "tmp"


# ---- pruning ---------------------------------------------------------------------------


def prune_1xn(kernel: np.ndarray, n: int, sparsity: float, uniform: bool = False) -> np.ndarray:
    """Zeros the lowest-L2 1xN blocks of a Keras kernel (kh, kw, C_in, C_out).

    Args:
        kernel: The kernel; C_out must be a multiple of n.
        n: Block width (output channels per block).
        sparsity: Fraction of blocks to zero.
        uniform: Rank within each row (group of n output channels) so every row
            keeps the same number of blocks; otherwise one ranking per layer.

    Returns:
        The pruned kernel (float32).
    """
    k = kernel.reshape(-1, kernel.shape[-2], kernel.shape[-1])  # (taps, cin, cout)
    taps, cin, cout = k.shape
    if cout % n:
        raise ValueError(f"C_out={cout} is not a multiple of n={n}")
    norms = np.sqrt((k.reshape(taps, cin, cout // n, n) ** 2).sum(axis=(0, 3)))  # (cin, rows)
    if uniform:
        drop = round(sparsity * cin)
        keep = np.ones_like(norms, dtype=bool)
        order = np.argsort(norms, axis=0, kind="stable")[:drop]  # per row
        np.put_along_axis(keep, order, False, axis=0)
    else:
        drop = round(sparsity * norms.size)
        keep = np.ones(norms.size, dtype=bool)
        keep[np.argsort(norms.ravel(), kind="stable")[:drop]] = False
        keep = keep.reshape(norms.shape)
    mask = np.repeat(keep, n, axis=1)  # (cin, cout)
    return (kernel * mask).astype(np.float32)


def prune_plan(model: Any) -> tuple[list[Any], dict[str, Any]]:
    """The Conv2D layers to prune 1x16 (every 1x1/3x3 one but the stem whose
    C_out is a multiple of 16) and a summary of those left dense."""
    import keras

    convs = [
        layer
        for layer in model.layers
        if isinstance(layer, keras.layers.Conv2D)
        and not isinstance(layer, keras.layers.DepthwiseConv2D)
    ]
    pruned, skipped = [], []
    for layer in convs[1:]:
        shape = tuple(layer.kernel.shape)
        if shape[0] not in (1, 3) or shape[-1] % 16:
            skipped.append(f"{layer.name} {shape}")
        else:
            pruned.append(layer)
    info = {"pruned_layers": len(pruned), "dense_layers": [f"{convs[0].name} (stem)", *skipped]}
    return pruned, info


def prune_model_1x16(model: Any, sparsity: float) -> dict[str, Any]:
    """Prunes the layers of :func:`prune_plan` 1x16 by block magnitude, in place."""
    layers, info = prune_plan(model)
    for layer in layers:
        layer.kernel.assign(prune_1xn(layer.kernel.numpy(), 16, sparsity))
    return info


# ---- conversion and FLOPs ----------------------------------------------------------------


def convert_keras(model: Any, quantize: str | None = None) -> bytes:
    """The float32 flatbuffer, or with ``quantize="int8"`` the full-integer one (float
    input and output) calibrated on 16 random inputs."""
    if quantize is None:
        import tensorflow as tf

        return tf.lite.TFLiteConverter.from_keras_model(model).convert()
    import tf_sparse_prune as tsp

    shape = (16, *tuple(model.inputs[0].shape)[1:])
    data = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    return tsp.export_tflite(model, quantize=quantize, representative_data=data)


def conv_flatbuffer(
    batch: int,
    h: int,
    cin: int,
    kernel: np.ndarray,
    stride: int = 1,
    bias: bool = True,
    quantize: str | None = None,
) -> bytes:
    """A one-CONV_2D TFLite model (SAME padding, fused bias) from a tf.function, or
    with ``quantize="int8"`` the same layer as a Keras model quantized to int8."""
    import tensorflow as tf

    if quantize is not None:
        import keras

        layer = keras.layers.Conv2D(
            kernel.shape[-1], kernel.shape[:2], strides=stride, padding="same", use_bias=bias
        )
        model = keras.Sequential([keras.Input((h, h, cin), batch_size=batch), layer])
        b = np.linspace(-0.1, 0.1, kernel.shape[-1]).astype(np.float32)
        layer.set_weights([kernel, b] if bias else [kernel])
        return convert_keras(model, quantize)

    w = tf.constant(kernel)
    b = tf.constant(np.linspace(-0.1, 0.1, kernel.shape[-1]).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([batch, h, h, cin], tf.float32)])
    def f(x):
        y = tf.nn.conv2d(x, w, stride, "SAME")
        return y + b if bias else y

    conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], None)
    return conv.convert()


def tflite_conv_flops(flat: bytes) -> tuple[float, float]:
    """(dense FLOPs, FLOPs left after 1xN-zero pruning) of the CONV_2D / FC nodes.

    Counts every multiply-add of a weight that is not zero as 2 FLOPs (for the
    pruned count) and of every weight (dense); output sizes come from the model.
    """
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=flat)
    interp.allocate_tensors()
    dense = kept = 0.0
    for op in interp._get_ops_details():
        if op["op_name"] not in ("CONV_2D", "FULLY_CONNECTED", "DEPTHWISE_CONV_2D"):
            continue
        w = interp.get_tensor(int(op["inputs"][1]))
        out = interp.get_tensor_details()[int(op["outputs"][0])]["shape"]
        if op["op_name"] == "DEPTHWISE_CONV_2D":
            pixels = int(np.prod(out[:-1]))
            dense += 2.0 * pixels * w.size
            kept += 2.0 * pixels * np.count_nonzero(w)
            continue
        pixels = int(np.prod(out[:-1]))
        dense += 2.0 * pixels * w.size
        kept += 2.0 * pixels * np.count_nonzero(w)
    return dense, kept


# ---- measurement -------------------------------------------------------------------------


def library_commit() -> str | None:
    """The git commit of the tf_sparse_prune code being measured (``None`` outside a
    checkout), so a result says which code it timed."""
    import subprocess

    import tf_sparse_prune

    where = Path(tf_sparse_prune.__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def machine_info() -> dict[str, Any]:
    import importlib.metadata

    fields = {"model name": "", "cpu family": None, "model": None}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in fields and not fields[key]:
                fields[key] = value.strip()
            if line.strip() == "":  # the first processor's block is enough
                break
    except OSError:
        pass
    from tf_sparse_prune.export.delegate import available_isas

    return {
        "cpu": fields["model name"],
        # "AMD EPYC" names Zen 3 and Zen 5 VMs alike: family and model tell them apart
        "cpu_family": fields["cpu family"],
        "cpu_model": fields["model"],
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "ai_edge_litert": importlib.metadata.version("ai-edge-litert"),
        "delegate_isas": available_isas(),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "library_commit": library_commit(),
    }


def _winograd_nodes(flat: bytes, threads: int, **delegate_options: Any) -> int:
    """How many claimed convolutions the delegate runs as Winograd F(2x2, 3x3)
    (0 when it claims none)."""
    from tf_sparse_prune.export.bench_cli import profile_delegate

    try:
        prof = profile_delegate(flat, threads=threads, runs=1, **delegate_options)
    except RuntimeError:  # nothing claimed: no profile written
        return 0
    return sum(n.winograd for n in prof.nodes)


def measure(flat: bytes, threads: int, args: argparse.Namespace, **kw: Any) -> dict[str, Any]:
    from tf_sparse_prune.export.bench_cli import compare_latency

    load_before = os.getloadavg()[0]
    options = {
        "min_sparsity": args.min_sparsity,
        "min_sparsity_int8": args.min_sparsity_int8,
        "width_aware": args.width_aware,
        "cost_model": args.cost_model,
        "fuse_residual": args.fuse_residual,
        "winograd": args.winograd,
    }
    r = compare_latency(
        flat,
        threads=threads,
        runs=args.runs,
        warmup=args.warmup,
        fuse_residual_int8=args.fuse_residual_int8,
        **options,
        **kw,
    )
    return {
        "threads": threads,
        "xnnpack_ms": round(r.dense_ms, 4),
        "delegate_ms": round(r.sparse_ms, 4),
        "ratio": round(r.speedup, 3),
        "claimed_nodes": len(r.claimed),
        "declined_nodes": len(r.declined),
        "isa": r.isa,
        "max_rel_diff": r.max_rel_diff,
        "fuse_residual": args.fuse_residual,
        "fuse_residual_int8": args.fuse_residual_int8,
        "claimed_adds": sum(" ADD " in c for c in r.claimed),
        "winograd": args.winograd,
        "winograd_nodes": _winograd_nodes(flat, threads, **options) if r.claimed else 0,
        "loadavg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def write(section: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"latency_{section}.json"
    path.write_text(json.dumps(payload, indent=1))
    print(f"wrote {path}")
    return path


def log(msg: str) -> None:
    print(msg, flush=True)


# ---- sections ----------------------------------------------------------------------------


def bench_models(args: argparse.Namespace) -> dict[str, Any]:
    import keras

    builders = {
        "resnet50": keras.applications.ResNet50,
        "mobilenetv2": keras.applications.MobileNetV2,
    }
    rows = []
    CACHE.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        keras.utils.set_random_seed(0)
        _, info = prune_plan(builders[name](weights=None, input_shape=(224, 224, 3)))
        keras.backend.clear_session()
        for sparsity in args.sparsities:
            suffix = f"_{args.quantize}" if args.quantize else ""
            cached = CACHE / f"{name}_1x16_{sparsity:.2f}{suffix}.tflite"
            if cached.is_file():
                flat = cached.read_bytes()
            else:
                keras.utils.set_random_seed(0)
                model = builders[name](weights=None, input_shape=(224, 224, 3))
                prune_model_1x16(model, sparsity)
                flat = convert_keras(model, args.quantize)
                cached.write_bytes(flat)
                keras.backend.clear_session()
            dense_flops, kept_flops = tflite_conv_flops(flat)
            for threads in args.threads:
                m = measure(flat, threads, args)
                row = {
                    "model": name,
                    "pattern": "1x16",
                    "dtype": args.quantize or "float32",
                    "sparsity": sparsity,
                    **info,
                    **m,
                    "dense_gflop": round(dense_flops * 1e-9, 3),
                    "kept_gflop": round(kept_flops * 1e-9, 3),
                    "flop_limit_ratio": round(dense_flops / kept_flops, 3),
                }
                rows.append(row)
                log(
                    f"{name} s={sparsity} t={threads}: xnnpack {m['xnnpack_ms']:.2f} ms, "
                    f"delegate {m['delegate_ms']:.2f} ms, ratio {m['ratio']:.2f} "
                    f"(FLOP limit {row['flop_limit_ratio']:.2f}), {m['claimed_nodes']} claimed"
                )
    return {"rows": rows}


def _cached_resnet50(sparsity: float) -> bytes | None:
    """The ``models`` section's pruned ResNet-50 flatbuffer, or None (logged)."""
    cached = CACHE / f"resnet50_1x16_{sparsity:.2f}.tflite"
    if not cached.is_file():
        log(f"{cached} is missing: run --sections models first")
        return None
    return cached.read_bytes()


def _set_image(interps: dict[str, Any]) -> None:
    """The same random 224x224 image as every interpreter's input."""
    x = np.random.default_rng(0).standard_normal((1, 224, 224, 3)).astype(np.float32)
    for it in interps.values():
        it.set_tensor(it.get_input_details()[0]["index"], x)


def bench_fusion(args: argparse.Namespace) -> dict[str, Any]:
    """Stock vs delegate without / with fused residual ADDs, and with fused ADDs but
    Winograd off (every layer on the direct kernel), 4-way interleaved."""
    from ai_edge_litert.interpreter import Interpreter

    from tf_sparse_prune.export.bench_cli import interleaved_times
    from tf_sparse_prune.export.delegate import SparseInterpreter, delegated_nodes

    rows = []
    for sparsity in args.sparsities:
        flat = _cached_resnet50(sparsity)
        if flat is None:
            continue
        for threads in args.threads:
            interps = {"xnnpack": Interpreter(model_content=flat, num_threads=threads)}
            interps["xnnpack"].allocate_tensors()
            for key, fuse, wino in (
                ("unfused", False, True),
                ("fused", True, True),
                ("direct", True, False),
            ):
                interps[key] = SparseInterpreter(
                    model_content=flat, num_threads=threads, fuse_residual=fuse, winograd=wino
                )
            _set_image(interps)
            times = interleaved_times(interps, args.runs, args.warmup)
            med = {k: float(np.median(v)) for k, v in times.items()}
            row = {
                "model": "resnet50",
                "sparsity": sparsity,
                "threads": threads,
                "xnnpack_ms": round(med["xnnpack"], 4),
                "unfused_ms": round(med["unfused"], 4),
                "fused_ms": round(med["fused"], 4),
                "ratio_unfused": round(med["xnnpack"] / med["unfused"], 3),
                "ratio_fused": round(med["xnnpack"] / med["fused"], 3),
                "direct_ms": round(med["direct"], 4),
                "ratio_direct": round(med["xnnpack"] / med["direct"], 3),
                "winograd_nodes": _winograd_nodes(flat, threads, winograd=True),
                "claimed_adds": sum(
                    n.op == "ADD" for n in delegated_nodes(interps["fused"]).claimed
                ),
            }
            rows.append(row)
            log(
                f"resnet50 s={sparsity} t={threads}: xnnpack {row['xnnpack_ms']:.2f} ms, "
                f"unfused {row['unfused_ms']:.2f} ms ({row['ratio_unfused']:.2f}x), fused "
                f"{row['fused_ms']:.2f} ms ({row['ratio_fused']:.2f}x), Winograd off "
                f"{row['direct_ms']:.2f} ms ({row['ratio_direct']:.2f}x)"
            )
            del interps
    return {"rows": rows}


def bench_scaling(args: argparse.Namespace) -> dict[str, Any]:
    """Stock and delegate at every thread count, interleaved in one loop."""
    from ai_edge_litert.interpreter import Interpreter

    from tf_sparse_prune.export.bench_cli import interleaved_times
    from tf_sparse_prune.export.delegate import SparseInterpreter

    threads = sorted(set(args.threads))
    base = threads[0]
    rows = []
    for sparsity in args.sparsities:
        flat = _cached_resnet50(sparsity)
        if flat is None:
            continue
        interps = {}
        for t in threads:
            interps[f"xnnpack_{t}"] = Interpreter(model_content=flat, num_threads=t)
            interps[f"xnnpack_{t}"].allocate_tensors()
            interps[f"delegate_{t}"] = SparseInterpreter(
                model_content=flat,
                num_threads=t,
                fuse_residual=args.fuse_residual,
                winograd=args.winograd,
            )
        _set_image(interps)
        # Stock XNNPACK's own scaling tells whether the machine gave us its cores
        # during the loop (a shared VM sometimes loses one); retry if it did not.
        top = threads[-1]
        rejected = []
        for _attempt in range(args.scaling_attempts):
            times = interleaved_times(interps, args.runs, args.warmup)
            med = {k: float(np.median(v)) for k, v in times.items()}
            ref = med[f"xnnpack_{base}"] / med[f"xnnpack_{top}"]
            if top == base or ref >= args.min_reference_scaling:
                break
            rejected.append({k: round(v, 4) for k, v in med.items()})
            log(f"s={sparsity}: XNNPACK scaled only x{ref:.2f} at {top} threads: retrying")
        row = {
            "model": "resnet50",
            "sparsity": sparsity,
            "threads": threads,
            "rejected_loops": rejected,
            "xnnpack_ms": {str(t): round(med[f"xnnpack_{t}"], 4) for t in threads},
            "delegate_ms": {str(t): round(med[f"delegate_{t}"], 4) for t in threads},
            "ratio": {
                str(t): round(med[f"xnnpack_{t}"] / med[f"delegate_{t}"], 3) for t in threads
            },
            "xnnpack_scaling": {
                str(t): round(med[f"xnnpack_{base}"] / med[f"xnnpack_{t}"], 3) for t in threads
            },
            "delegate_scaling": {
                str(t): round(med[f"delegate_{base}"] / med[f"delegate_{t}"], 3) for t in threads
            },
        }
        rows.append(row)
        log(
            f"resnet50 s={sparsity}: "
            + ", ".join(
                f"{t} threads: xnnpack {row['xnnpack_ms'][str(t)]:.2f} ms "
                f"(x{row['xnnpack_scaling'][str(t)]:.2f}), delegate "
                f"{row['delegate_ms'][str(t)]:.2f} ms (x{row['delegate_scaling'][str(t)]:.2f}, "
                f"{row['ratio'][str(t)]:.2f}x faster)"
                for t in threads
            )
        )
        del interps
    return {"rows": rows}


# (name, input H=W, C_in, C_out, kernel, stride) from ResNet-50's stages.
RESNET50_LAYERS = [
    ("conv2_1x1_reduce", 56, 256, 64, 1, 1),
    ("conv2_3x3", 56, 64, 64, 3, 1),
    ("conv2_1x1_expand", 56, 64, 256, 1, 1),
    ("conv3_1x1_reduce", 28, 512, 128, 1, 1),
    ("conv3_3x3", 28, 128, 128, 3, 1),
    ("conv3_1x1_expand", 28, 128, 512, 1, 1),
    ("conv4_1x1_reduce", 14, 1024, 256, 1, 1),
    ("conv4_3x3", 14, 256, 256, 3, 1),
    ("conv4_1x1_expand", 14, 256, 1024, 1, 1),
    ("conv5_1x1_reduce", 7, 2048, 512, 1, 1),
    ("conv5_3x3", 7, 512, 512, 3, 1),
    ("conv5_1x1_expand", 7, 512, 2048, 1, 1),
]


def _layer_row(
    flat: bytes, threads: int, args: argparse.Namespace, dense_flops: float, kept_flops: float
) -> dict[str, Any]:
    m = measure(flat, threads, args)
    xnn_gflops = dense_flops / (m["xnnpack_ms"] * 1e-3) * 1e-9
    del_gflops = kept_flops / (m["delegate_ms"] * 1e-3) * 1e-9
    return {
        **m,
        "flop_limit_ratio": round(dense_flops / max(kept_flops, 1.0), 3),
        "xnnpack_gflops": round(xnn_gflops, 1),
        "delegate_kept_gflops": round(del_gflops, 1),
        "kept_gflops_over_xnnpack": round(del_gflops / xnn_gflops, 3),
    }


def bench_layers(args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    rows = []
    for name, h, cin, cout, k, stride in RESNET50_LAYERS:
        if args.layers and name not in args.layers:
            continue
        base = rng.standard_normal((k, k, cin, cout)).astype(np.float32) * 0.05
        for sparsity in args.sparsities:
            kernel = prune_1xn(base, 16, sparsity)
            flat = conv_flatbuffer(1, h, cin, kernel, stride, quantize=args.quantize)
            pixels = (h // stride) ** 2
            dense_flops = 2.0 * pixels * base.size
            kept_flops = 2.0 * pixels * np.count_nonzero(kernel)
            for threads in args.threads:
                row = {
                    "layer": name,
                    "input": [1, h, h, cin],
                    "kernel": [k, k, cin, cout],
                    "pattern": "1x16",
                    "dtype": args.quantize or "float32",
                    "sparsity": sparsity,
                    **_layer_row(flat, threads, args, dense_flops, kept_flops),
                }
                rows.append(row)
                log(
                    f"{name} s={sparsity} t={threads}: xnnpack {row['xnnpack_ms']:.3f} ms "
                    f"({row['xnnpack_gflops']} GFLOP/s), delegate {row['delegate_ms']:.3f} ms "
                    f"({row['delegate_kept_gflops']} GFLOP/s kept), ratio {row['ratio']:.2f} / "
                    f"limit {row['flop_limit_ratio']:.2f}"
                )
    return {"rows": rows}


# ResNet-18's 3x3 layer shapes at a 224x224 input: (name, H=W, channels).
RESNET18_LAYERS = [
    ("layer1_3x3", 56, 64),
    ("layer2_3x3", 28, 128),
    ("layer3_3x3", 14, 256),
    ("layer4_3x3", 7, 512),
]


def bench_subp(args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    rows = []
    batch = 4
    for name, h, c in RESNET18_LAYERS[: args.subp_layers]:
        # Per-output-channel scales make the block norms of rows differ.
        scale = np.exp(rng.normal(0.0, 0.5, size=c)).astype(np.float32)
        base = rng.standard_normal((3, 3, c, c)).astype(np.float32) * 0.05 * scale
        pixels = batch * h * h
        dense_flops = 2.0 * pixels * base.size
        configs: list[tuple[str, int, float]] = [("dense", 0, 0.0)]
        for n in args.block_sizes:
            for sparsity in args.sparsities:
                configs += [("uniform", n, sparsity), ("non-uniform", n, sparsity)]
        for pattern, n, sparsity in configs:
            kernel = (
                base
                if pattern == "dense"
                else prune_1xn(base, n, sparsity, uniform=pattern == "uniform")
            )
            flat = conv_flatbuffer(batch, h, c, kernel)
            kept_flops = 2.0 * pixels * np.count_nonzero(kernel)
            rows_kept = (kernel.reshape(-1, c, c // max(n, 1), max(n, 1)) != 0).any(axis=(0, 3))
            for threads in args.threads:
                row = {
                    "layer": name,
                    "input": [batch, h, h, c],
                    "kernel": [3, 3, c, c],
                    "pattern": pattern,
                    "n": n,
                    "sparsity": sparsity,
                    "row_kept_min_max": (
                        [int(rows_kept.sum(0).min()), int(rows_kept.sum(0).max())] if n else None
                    ),
                    **_layer_row(flat, threads, args, dense_flops, kept_flops),
                }
                rows.append(row)
                log(
                    f"{name} {pattern} 1x{n} s={sparsity} t={threads}: ratio {row['ratio']:.2f} "
                    f"(limit {row['flop_limit_ratio']:.2f}), delegate "
                    f"{row['delegate_kept_gflops']} GFLOP/s kept, {row['claimed_nodes']} claimed"
                )
    return {"rows": rows, "batch": batch}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--sections",
        nargs="+",
        default=["layers"],
        choices=["models", "layers", "subp", "fusion", "scaling"],
    )
    p.add_argument("--models", nargs="+", default=["resnet50", "mobilenetv2"])
    p.add_argument("--sparsities", type=float, nargs="+", default=None)
    p.add_argument("--block-sizes", type=int, nargs="+", default=[4, 8, 16, 32])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--min-sparsity", type=float, default=None)
    p.add_argument("--min-sparsity-int8", type=float, default=None)
    p.add_argument(
        "--quantize",
        choices=["int8"],
        default=None,
        help="models, layers: int8 models (XNNPACK's int8 against the delegate's int8 kernels)",
    )
    p.add_argument("--subp-layers", type=int, default=len(RESNET18_LAYERS))
    p.add_argument("--layers", nargs="+", default=None, help="subset of the ResNet-50 layers")
    p.add_argument("--tag", default="", help="suffix of the JSON file names")
    p.add_argument(
        "--min-reference-scaling",
        type=float,
        default=1.5,
        help="scaling: redo a loop in which stock XNNPACK's own speed-up at the largest "
        "thread count was below this (the machine did not give all its cores)",
    )
    p.add_argument("--scaling-attempts", type=int, default=3, help="scaling: loops at most")
    p.add_argument(
        "--no-fuse-residual",
        dest="fuse_residual",
        action="store_false",
        help="leave residual ADDs to TFLite (default: the delegate runs them in its convs)",
    )
    p.add_argument(
        "--fuse-residual-int8",
        choices=["on", "off"],
        default=None,
        help="int8 residual ADDs in the delegate's int8 convs (default: the delegate's "
        "default, off: its exact int8 ADD costs more than it saves)",
    )
    p.add_argument(
        "--no-winograd",
        dest="winograd",
        action="store_false",
        help="run every 3x3 layer on the direct kernel (default: Winograd where it pays)",
    )
    args = p.parse_args(argv)
    if args.fuse_residual_int8 is not None:
        args.fuse_residual_int8 = args.fuse_residual_int8 == "on"
    if args.runs < 30:
        print("note: fewer than 30 runs; the issue asks for medians of >= 30", file=sys.stderr)
    sections = {
        "models": bench_models,
        "layers": bench_layers,
        "subp": bench_subp,
        "fusion": bench_fusion,
        "scaling": bench_scaling,
    }
    default_sparsities = {
        "models": [0.5, 0.7, 0.8, 0.9],
        "layers": [0.5, 0.7, 0.8, 0.9],
        "subp": [0.5, 0.6, 0.7, 0.8, 0.9],
        "fusion": [0.5, 0.7, 0.8, 0.9],
        "scaling": [0.5, 0.7, 0.8, 0.9],
    }
    if args.quantize and set(args.sections) - {"models", "layers"}:
        p.error("--quantize applies to the models and layers sections only")
    for section in args.sections:
        sub = argparse.Namespace(**vars(args))
        if sub.sparsities is None:
            sub.sparsities = default_sparsities[section]
        sub.width_aware = True
        sub.cost_model = True
        if section in ("layers", "subp"):
            # Kernel speed at every sparsity and N: claim everything.
            if sub.min_sparsity is None:
                sub.min_sparsity = 0.0
            if sub.min_sparsity_int8 is None:
                sub.min_sparsity_int8 = 0.0
            sub.width_aware = False
            sub.cost_model = False
        t0 = time.time()
        result = sections[section](sub)
        payload = {
            "section": section,
            "machine": machine_info(),
            "settings": {
                "runs": args.runs,
                "warmup": args.warmup,
                "threads": args.threads,
                "sparsities": sub.sparsities,
                "min_sparsity": sub.min_sparsity,
                "min_sparsity_int8": sub.min_sparsity_int8,
                "quantize": sub.quantize,
                "width_aware": sub.width_aware,
                "cost_model": sub.cost_model,
                "fuse_residual": sub.fuse_residual,
                "winograd": sub.winograd,
                "ab_interleaved": True,
                "statistic": "median",
            },
            "seconds": round(time.time() - t0, 1),
            **result,
        }
        name = section + (f"_{args.quantize}" if args.quantize else "")
        write(name + (f"_{args.tag}" if args.tag else ""), payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
