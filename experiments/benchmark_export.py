r"""Inference latency on this CPU: JAX (jit) against ONNX Runtime, float32 and int8, at batch 1 and 32.

python -m experiments.benchmark_export --models simple_cnn,lenet5,resnet8 --batch-sizes 1,32 \
    --windows 7 --calls-per-window 50 --threads 2 --json docs/benchmarks/export_latency.json

For each model (random weights: latency does not depend on their values; resnet8 is resnet20_cifar with one
block per stage) and batch size it times four programs on the same images: the float model under
``jax.jit``, the int8 model (qwix PTQ, calibrated on random images) under ``jax.jit``, and the ONNX files of
both under an ONNX Runtime CPU session. The four run in turn inside every window (A B C D A B C D ...) so
that load on the machine hits all of them; a window's figure is its mean time per call, and the table
shows the median over windows in milliseconds and images/s. ``--threads N`` pins the process to N cores
and gives ONNX Runtime N intra-op threads (XLA uses the cores it is pinned to). ``--json`` writes the
command, the machine, its load average before and after, and every window.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import onnxruntime

import cnn.models
from cnn.export import onnx_model, quantize
from cnn.export.forward import forward

MODELS = {"simple_cnn": ("simple_cnn", {}, (28, 28, 1)), "lenet5": ("lenet5", {}, (28, 28, 1)),
          "resnet8": ("resnet20_cifar", {"stage_sizes": (1, 1, 1)}, (28, 28, 1))}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="simple_cnn,lenet5,resnet8", help=f"comma-separated: {', '.join(MODELS)}")
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--windows", type=int, default=7)
    parser.add_argument("--calls-per-window", type=int, default=50)
    parser.add_argument("--threads", type=int, default=0, help="pin to this many cores; ONNX Runtime threads (0: defaults)")
    parser.add_argument("--json", default="")
    args = parser.parse_args(argv)
    unknown = [m for m in args.models.split(",") if m not in MODELS]
    if unknown:
        parser.error(f"--models: unknown {', '.join(unknown)}; expected some of {', '.join(MODELS)}")
    if args.windows < 1 or args.calls_per_window < 1 or args.threads < 0:
        parser.error(f"--windows={args.windows}, --calls-per-window={args.calls_per_window}, --threads={args.threads}: "
                     f"expected >= 1, >= 1 and >= 0")
    return args


def programs(name: str, batch_size: int, threads: int, folder: pathlib.Path):
    """``{label: call(images)}`` for the four programs of model ``name``, each warmed up (compiled) once."""
    registry_name, overrides, shape = MODELS[name]
    model = cnn.models.create(registry_name, num_classes=10, **overrides)
    variables = jax.jit(lambda x: model.init(jax.random.key(0), x, train=False))(jnp.zeros((1, *shape)))
    calibration = [np.asarray(jax.random.uniform(jax.random.key(i), (32, *shape))) for i in range(4)]
    int8_model, int8_variables = quantize.ptq(model, variables, quantize.calibrate(model, variables, calibration),
                                              input_shape=shape)
    float_jit = jax.jit(forward(model, variables))
    int8_jit = jax.jit(forward(int8_model, int8_variables))
    float_file = onnx_model.to_onnx(model, variables, folder / f"{name}.onnx", input_shape=shape)
    int8_file = onnx_model.to_onnx(int8_model, int8_variables, folder / f"{name}_int8.onnx", input_shape=shape)
    calls = {
        "jax float32": lambda x: float_jit(x).block_until_ready(),
        "jax int8": lambda x: int8_jit(x).block_until_ready(),
        "onnxruntime float32": onnx_model.run_onnx(float_file, threads=threads),
        "onnxruntime int8": onnx_model.run_onnx(int8_file, threads=threads),
    }
    images = np.asarray(jax.random.uniform(jax.random.key(9), (batch_size, *shape)))
    for call in calls.values():
        call(images)
    return calls, images


def measure(name: str, batch_size: int, args, folder: pathlib.Path) -> list:
    calls, images = programs(name, batch_size, args.threads, folder)
    windows = {label: [] for label in calls}
    for _ in range(args.windows):
        for label, call in calls.items():
            start = time.perf_counter()
            for _ in range(args.calls_per_window):
                call(images)
            windows[label].append((time.perf_counter() - start) / args.calls_per_window)
    records = []
    for label, times in windows.items():
        median = statistics.median(times)
        records.append({"model": name, "batch_size": batch_size, "program": label, "median_ms": 1e3 * median,
                        "images_per_second": batch_size / median, "windows_ms": [1e3 * t for t in times],
                        "spread": (max(times) - min(times)) / median})
    return records


def table(records) -> str:
    lines = ["| model | batch | program | median ms / call | images/s | window spread |", "|---|---|---|---|---|---|"]
    for r in records:
        lines.append(f"| {r['model']} | {r['batch_size']} | {r['program']} | {r['median_ms']:.3f} | {r['images_per_second']:,.0f} "
                     f"| {100 * r['spread']:.0f}% |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        cores = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, set(cores[: args.threads]))
    load_start = os.getloadavg()
    records = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models.split(","):
            for batch_size in (int(b) for b in args.batch_sizes.split(",")):
                records += measure(name, batch_size, args, pathlib.Path(folder))
                print("\n".join(table(records[-4:]).splitlines()[2:]), flush=True)  # as they come
    print(table(records))
    if args.json:
        run = {"command": " ".join(["python -m experiments.benchmark_export", *(argv if argv is not None else sys.argv[1:])]),
               "machine": {"processor": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                           "threads": args.threads or "default", "load_average_start": load_start,
                           "load_average_end": os.getloadavg(), "jax": jax.__version__,
                           "onnxruntime": onnxruntime.__version__},
               "records": records}
        path = pathlib.Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(run, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
