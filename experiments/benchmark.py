r"""Training throughput: images/s (median of timed windows after warm-up), compile time and peak memory per
model, batch size and parallel mode; with ``--reference torch``, the same network, optimizer and batch trained
by PyTorch in the same process, its windows interleaved with ours (A B A B ...) so that machine noise hits both.

python -m experiments.benchmark --models simple_cnn,resnet18_cifar --batch-sizes 128 --parallel single \
    --reference torch --windows 5 --steps-per-window 20 --json docs/benchmarks/train.json

On a GPU: ResNet-50 in bfloat16 against PyTorch with AMP and channels-last, and the fraction of the card's
peak FLOP/s (989 for an H100 SXM's dense bfloat16) reached by 3x the forward FLOPs of cnn.analysis.summary:
python -m experiments.benchmark --models resnet50 --batch-sizes 256 --dtype bfloat16 --reference torch --peak-tflops 989

Batches are synthetic uint8 images resident on the device (no input pipeline, no tfds/grain); both sides cast
them to float and divide by 255 inside the step. Ours is the library's ``train_step`` as ``Parallel(mode)``
compiles it (metrics included). ``--threads N`` pins the process to N cores and gives PyTorch N threads;
``--xla-flags`` and ``--compiler-option`` tune XLA (docs/performance.md). Prints a table; ``--json`` appends
this run (command, machine, one record per configuration) to the file's ``runs``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

from experiments import cli

OPTIMIZERS = {"adam": 1e-3, "sgd": 0.1}  # default learning rates; "auto": Adam for simple_cnn, else SGD momentum


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="simple_cnn",
                        help="comma-separated registry names, or 'all' (every model with a PyTorch reference)")
    parser.add_argument("--batch-sizes", default="128", help="comma-separated global batch sizes")
    parser.add_argument("--parallel", default="single", help="comma-separated modes: single, pmap, sharded")
    parser.add_argument("--image-size", type=int, default=0,
                        help="height and width of the inputs of models registered larger (0: each model's usual "
                             "input, cnn.models.input_shape); never below a model's smallest input")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="compute dtype")
    parser.add_argument("--optimizer", default="auto", choices=("auto", "adam", "sgd"))
    parser.add_argument("--learning-rate", type=float, default=None)
    parser.add_argument("--reference", default="none", choices=("none", "torch"))
    parser.add_argument("--windows", type=int, default=5, help="timed windows per side")
    parser.add_argument("--steps-per-window", type=int, default=20)
    parser.add_argument("--warmup-steps", type=int, default=3, help="untimed steps after compilation")
    parser.add_argument("--threads", type=int, default=0, help="pin to this many cores; PyTorch threads (0: defaults)")
    parser.add_argument("--cpu-devices", type=int, default=0, help="JAX CPU devices for pmap/sharded (0: default)")
    parser.add_argument("--xla-flags", default="", help="appended to XLA_FLAGS before JAX starts")
    parser.add_argument("--compiler-option", action="append", default=[], metavar="KEY=VALUE",
                        help="XLA option for compiling our step, repeatable")
    parser.add_argument("--cpu-kernels", default="auto", choices=("auto", "on", "off"),
                        help="the library's CPU kernels and XLA options (cnn.layers.cpu_kernels), as model.cpu_kernels")
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="the device's peak, for the fraction of it reached")
    parser.add_argument("--json", default="", help="write the results here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name, least in (("image_size", 0), ("windows", 1), ("steps_per_window", 1), ("warmup_steps", 0), ("threads", 0), ("cpu_devices", 0)):
        if getattr(args, name) < least:
            parser.error(f"--{name.replace('_', '-')}={getattr(args, name)}; expected >= {least}")
    try:
        args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    except ValueError:
        parser.error(f"--batch-sizes={args.batch_sizes!r}; expected comma-separated integers such as 32,128")
    args.models, args.parallel = args.models.split(","), args.parallel.split(",")
    args.compiler_options = dict(_option(text, parser) for text in args.compiler_option)
    return args


def _option(text, parser):
    if "=" not in text:
        parser.error(f"--compiler-option={text!r}; expected KEY=VALUE")
    key, value = text.split("=", 1)
    if value.lower() in ("true", "false"):
        return key, value.lower() == "true"
    return key, int(value) if value.lstrip("-").isdigit() else value


def configure_process(args) -> None:
    """What must happen before JAX (and PyTorch) start: core pinning, XLA flags, CPU device count."""
    # PyTorch's OpenMP threads spin while they wait by default; on a shared, oversubscribed machine that
    # makes its steps erratic and up to 20x slower (docs/performance.md), which would flatter us.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if args.threads:
        cores = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, set(cores[: args.threads]))
    if args.xla_flags:
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {args.xla_flags}".strip()
    if args.cpu_devices:
        os.environ["JAX_NUM_CPU_DEVICES"] = str(args.cpu_devices)


# --- memory ------------------------------------------------------------------------------------------
def reset_peak_rss() -> None:
    try:  # Linux: "5" resets the high-water mark VmHWM
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def rss_mb(field: str = "VmRSS") -> float:
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith(field + ":"))
    except (OSError, StopIteration):
        import resource  # no /proc: the lifetime peak

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_phase(build_and_warm):
    """Runs ``build_and_warm()``; returns its result and the process's peak RSS and growth (MiB) meanwhile."""
    gc.collect()
    before = rss_mb()
    reset_peak_rss()
    result = build_and_warm()
    peak = rss_mb("VmHWM")
    return result, {"peak_rss_mb": round(peak, 1), "rss_growth_mb": round(max(peak - before, 0.0), 1)}


# --- the two sides -------------------------------------------------------------------------------------
def synthetic_batch(batch_size: int, shape, num_classes: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"image": rng.integers(0, 256, (batch_size, *shape), dtype=np.uint8),
            "label": rng.integers(0, num_classes, (batch_size,), dtype=np.int32)}


def optimizer_for(args, model_name):
    name = args.optimizer if args.optimizer != "auto" else ("adam" if model_name == "simple_cnn" else "sgd")
    return name, args.learning_rate if args.learning_rate is not None else OPTIMIZERS[name]


class Ours:
    """The library's train step for one (model, batch, mode): compiled ahead of time, then run in windows."""

    def __init__(self, args, name, batch_size, mode, host_batch, num_classes, overrides):
        import dataclasses
        import functools

        import jax
        import jax.numpy as jnp
        import ml_collections

        import cnn.models
        from cnn.layers import cpu_kernels
        from cnn.train import optim
        from cnn.train.parallel import Parallel
        from cnn.train.state import create_train_state
        from cnn.train.steps import StepOptions, one_hot_preprocess, train_step

        self.jax = jax
        kernels = cpu_kernels.enabled(args.cpu_kernels)
        parallel = Parallel(mode, compiler_options=cpu_kernels.compiler_options() if kernels else {})
        parallel.check_batch(batch_size)
        dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
        model = cnn.models.create(name, num_classes=num_classes, dtype=dtype, **overrides)
        if parallel.model_axis_name and "axis_name" in {f.name for f in dataclasses.fields(model)}:
            model = model.clone(axis_name=parallel.model_axis_name)
        if kernels:
            model = cpu_kernels.use_cpu_kernels(model)
        self.model, self.devices = model, parallel.num_devices
        opt_name, lr = optimizer_for(args, name)
        config = ml_collections.ConfigDict(dict(name=opt_name, learning_rate=lr, momentum=0.9))
        tx, _ = optim.build(config, steps_per_epoch=1, total_steps=1, global_batch=batch_size)
        shape = host_batch["image"].shape[1:]
        self.state = parallel.init(lambda rng: create_train_state(model, tx, rng, shape), jax.random.PRNGKey(args.seed))
        preprocess = one_hot_preprocess(num_classes)
        options = StepOptions(preprocess=preprocess, eval_preprocess=preprocess, axis_name=parallel.axis_name,
                              compute_dtype=dtype)
        step = parallel.compile_train_step(functools.partial(train_step, options=options))
        self.batch, self.rng = parallel.put_batch(host_batch), jax.random.PRNGKey(args.seed + 1)
        start = time.perf_counter()
        options = {**parallel.compiler_options, **args.compiler_options}
        self.step = step.lower(self.state, self.batch, self.rng).compile(options or None)
        self.compile_s = time.perf_counter() - start

    def run(self, steps: int) -> float:
        """Seconds for ``steps`` steps, the last result fetched (all work finished)."""
        start = time.perf_counter()
        state = self.state
        for _ in range(steps):
            state, metrics = self.step(state, self.batch, self.rng)
        self.jax.block_until_ready((state, metrics))
        self.state = state
        return time.perf_counter() - start

    def device_peak_mb(self):
        peak = (self.jax.local_devices()[0].memory_stats() or {}).get("peak_bytes_in_use")
        return None if peak is None else round(peak / 2**20, 1)


# --- one configuration ----------------------------------------------------------------------------------
def benchmark_one(args, name, batch_size, mode) -> dict:
    import cnn.models
    from cnn.analysis import summary

    entry = cnn.models.entry(name)
    shape, num_classes = entry.input_shape, entry.default_num_classes
    if args.image_size:  # height and width ([T, H, W, C] keeps T; a 1D [L, C] input gets length L)
        spatial = shape[:-1]
        # Smaller than registered, never below the model's smallest input (a 28x28 model stays 28x28).
        side = min(spatial[-1], max(args.image_size, entry.min_size))
        shape = (*spatial[:-2], *(side,) * min(2, len(spatial)), shape[-1])
    # Auxiliary heads off on both sides (torchvision's are on in training; ours add no loss here).
    overrides = {"aux_logits": False} if "aux_logits" in cnn.models.create(name, num_classes=1).__dataclass_fields__ else {}
    host_batch = synthetic_batch(batch_size, shape, num_classes, args.seed)
    record = {"model": name, "batch_size": batch_size, "parallel": mode, "dtype": args.dtype,
              "optimizer": "%s(lr=%g)" % optimizer_for(args, name)}

    def build_ours():
        ours = Ours(args, name, batch_size, mode, host_batch, num_classes, overrides)
        ours.run(max(args.warmup_steps, 1))
        return ours

    ours, memory = memory_phase(build_ours)
    described = summary(ours.model, shape)
    flops = described.flops  # forward FLOPs per example: 2 x multiply-adds, the published convention
    record.update(image_shape=list(shape), params=described.params, devices=ours.devices, compile_s=round(ours.compile_s, 2), ours_memory=memory,
                  ours_device_peak_mb=ours.device_peak_mb(), train_flops_per_example=3 * flops)
    sides = {"ours": ours}
    if args.reference == "torch":
        def build_torch():
            from experiments.torch_reference import TrainingRunner

            reference = TrainingRunner(name, host_batch, num_classes, *optimizer_for(args, name),
                                       threads=args.threads, seed=args.seed,
                                       bfloat16=args.dtype == "bfloat16", overrides=overrides)
            reference.run(max(args.warmup_steps, 1))
            return reference

        reference, memory = memory_phase(build_torch)
        sides["torch"] = reference
        record.update(torch_memory=memory, torch_device_peak_mb=reference.device_peak_mb(), torch_params=reference.params)

    images = {side: [] for side in sides}
    for _ in range(args.windows):  # A B A B ...: both sides see the same machine, window by window
        for side, runner in sides.items():
            images[side].append(args.steps_per_window * batch_size / runner.run(args.steps_per_window))
    for side, windows in images.items():
        record[f"{side}_images_per_s"] = round(statistics.median(windows), 1)
        record[f"{side}_windows"] = [round(w, 1) for w in windows]
        record[f"{side}_spread"] = round(max(windows) / min(windows), 2)  # > 1.5: the machine was busy
        record[f"{side}_tflops"] = round(statistics.median(windows) * 3 * flops / 1e12, 4)
        if args.peak_tflops:
            record[f"{side}_fraction_of_peak"] = round(record[f"{side}_tflops"] / args.peak_tflops, 4)
    if "torch" in images:  # the median of window-by-window ratios, and the ratio of the medians
        record["ratio"] = round(statistics.median(a / b for a, b in zip(images["ours"], images["torch"])), 3)
        record["ratio_of_medians"] = round(record["ours_images_per_s"] / record["torch_images_per_s"], 3)
    del sides, ours  # free both before the next configuration's memory is measured
    return record


def machine(args) -> dict:
    import flax
    import jax

    info = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "cores_used": len(os.sched_getaffinity(0)), "jax": jax.__version__, "flax": flax.__version__,
            "backend": jax.default_backend(), "devices": [d.device_kind for d in jax.devices()],
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "compiler_options": args.compiler_options, "cpu_kernels": args.cpu_kernels,
            "threads": args.threads or "default",
            "load_average_start": os.getloadavg()}
    info["cpu"] = cli.cpu_name()
    if args.reference == "torch":
        import torch

        info.update(torch=torch.__version__, torch_threads=args.threads or torch.get_num_threads(),
                    torch_device=torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")
    return info


def _noisy(record: dict, side: str) -> str:
    return "*" if record.get(f"{side}_spread", 1.0) > 1.5 else ""


def table(records) -> str:
    header = ("model", "batch", "parallel", "dtype", "ours img/s", "torch img/s", "ratio", "compile s", "peak MiB", "TFLOP/s")
    rows = []
    for r in records:  # peak memory: the device's where it reports one, else the process's RSS
        fraction = f" ({100 * r['ours_fraction_of_peak']:.1f}%)" if "ours_fraction_of_peak" in r else ""
        peak = r["ours_device_peak_mb"] or r["ours_memory"]["peak_rss_mb"]
        rows.append((r["model"], str(r["batch_size"]), f"{r['parallel']}/{r['devices']}", r["dtype"],
                     f"{r['ours_images_per_s']:,.0f}{_noisy(r, 'ours')}",
                     f"{r['torch_images_per_s']:,.0f}{_noisy(r, 'torch')}" if "torch_images_per_s" in r else "-",
                     f"{r['ratio']:.2f}" if "ratio" in r else "-", f"{r['compile_s']:.1f}",
                     f"{peak:,.0f}", f"{r['ours_tflops']:.3f}{fraction}"))
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    line = lambda row: "  ".join(c.rjust(w) if i >= 4 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
    return "\n".join([line(header), "-" * len(line(header)), *map(line, rows)])


def existing_runs(path: str) -> list:
    """The runs already in ``--json`` (none for a new file); anything else there is an error, found before any work."""
    if not os.path.exists(path):
        return []
    try:
        with open(path) as f:
            runs = json.load(f).get("runs")
    except (OSError, ValueError, AttributeError):
        runs = None
    if not isinstance(runs, list):
        raise ValueError(f"--json={path!r} exists but is not a benchmark file (no 'runs' list); choose another path")
    return runs


def write_json(path: str, run: dict) -> None:
    """Appends ``run`` to the file's ``runs`` (a new file holds one), atomically: never a half-written file."""
    runs = existing_runs(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = path + ".tmp"
    with open(temporary, "w") as f:
        json.dump({"runs": runs + [run]}, f, indent=1)
        f.write("\n")
    os.replace(temporary, path)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    configure_process(args)
    records = []
    try:
        import cnn.models
        from cnn.train.parallel import MODES

        if args.json:
            existing_runs(args.json)
        for mode in args.parallel:
            if mode not in MODES:
                raise ValueError(f"--parallel={mode!r}; expected one of {', '.join(MODES)}")
        if args.models == ["all"]:
            from experiments import torch_reference

            args.models = [n for n in cnn.models.names() if n in torch_reference.names()]
        for name in args.models:
            cnn.models.entry(name)  # unknown names fail before any work
            if args.reference == "torch":
                from experiments import torch_reference  # PyTorch must be importable

                if name not in torch_reference.names():
                    raise ValueError(f"no PyTorch reference for model {name!r}; references exist for: "
                                     f"{', '.join(torch_reference.names())}")
        info = machine(args)
        for name in args.models:
            for batch_size in args.batch_sizes:
                for mode in args.parallel:
                    records.append(benchmark_one(args, name, batch_size, mode))
                    print(json.dumps(records[-1]), file=sys.stderr, flush=True)
    except (ValueError, ImportError) as error:
        print(f"error: {str(error).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    info["load_average_end"] = os.getloadavg()
    print(table(records))
    print(f"\n{info.get('cpu', '')} | cores used {info['cores_used']}/{info['cpus']} | backend {info['backend']} | "
          f"load {info['load_average_start'][0]:.1f} -> {info['load_average_end'][0]:.1f} | "
          f"ratio = median over windows of ours/torch | * windows differ by more than 1.5x (a busy machine)")
    if args.json:
        command = "python -m experiments.benchmark " + " ".join(sys.argv[1:] if argv is None else argv)
        write_json(args.json, {"command": command, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": info,
                               "results": records})
    return 0


if __name__ == "__main__":
    sys.exit(main())
