r"""Where a train step's time goes, ours against PyTorch's twin: milliseconds per step by kind of work.

python -m experiments.profile_step --model resnet20_cifar --batch-size 128 --steps 5 --json docs/benchmarks/profile_resnet20.json

Both sides run the step of ``experiments/benchmark.py`` (the library's ``train_step`` compiled as a run compiles
it, CPU kernels included; the twin in PyTorch eager mode with the same optimizer) on one resident synthetic
batch, pinned to ``--threads`` cores (default 1, so that summed op times are the step's wall time on both
sides). Ours is traced with ``jax.profiler`` and read with ``jax.profiler.ProfileData``: every XLA thunk's
time, grouped by what its instruction does (the compiled HLO says which convolution is a forward pass, an
input gradient or a weight gradient). PyTorch's side is ``torch.profiler``'s self CPU time per aten op.
Prints both tables and each side's measured step time; ``--json`` writes them.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import sys
import tempfile
import time

from experiments import benchmark, cli

_CONVOLUTION = re.compile(r"^\s*(?:ROOT )?%(?P<name>[\w.\-]+) = \w+\[(?P<dims>[\d,]*)\]\S* convolution\(")


def convolution_kinds(hlo_text: str) -> dict:
    """HLO convolution name -> "forward", "input gradient" or "weight gradient". A weight gradient is the
    convolution whose output's spatial dims are smaller than its window (the output is the kernel, the window
    the activations); of the others, those JAX names ``transpose(...)`` are input gradients."""
    kinds = {}
    for line in hlo_text.splitlines():
        match = _CONVOLUTION.match(line)
        if not match:
            continue
        dims = [int(d) for d in match["dims"].split(",") if d]
        window = [int(w) for w in re.search(r"size=([\dx]+)", line)[1].split("x")] if "size=" in line else []
        output = re.search(r"dim_labels=\w+_\w+->(\w+)", line)[1]
        spatial = [dims[output.index(str(i))] for i in range(len(window)) if str(i) in output]
        if window and spatial and all(s < w for s, w in zip(spatial, window)):
            kinds[match["name"]] = "weight gradient"
        else:
            op_name = re.search(r'op_name="([^"]*)"', line)
            kinds[match["name"]] = "input gradient" if op_name and "transpose(" in op_name[1] else "forward"
    return kinds


def category(name: str, convolutions: dict) -> str:
    base = name.split(".")[0]
    if name in convolutions:
        return f"convolution, {convolutions[name]}"
    if "transpose" in base or base.startswith("copy"):
        return "transposes and copies"
    if "reduce" in base:
        return "reductions outside fusions"
    if "dot" in base:
        return "dense layers (dots)"
    return "other fusions (BatchNorm with its statistics, ReLU, adds, optimizer)"


def profile_ours(args, name: str, batch: dict, num_classes: int, overrides: dict) -> dict:
    import jax

    ours = benchmark.Ours(args, name, args.batch_size, "single", batch, num_classes, overrides)
    ours.run(args.warmup_steps)
    seconds = ours.run(args.steps)  # timed outside the trace
    folder = tempfile.mkdtemp(prefix="profile_step_")
    with jax.profiler.trace(folder):
        ours.run(args.steps)
    data = jax.profiler.ProfileData.from_file(glob.glob(f"{folder}/**/*.xplane.pb", recursive=True)[0])
    convolutions = convolution_kinds(ours.step.as_text())
    by_category, by_instruction = collections.Counter(), collections.Counter()
    for plane in data.planes:
        if plane.name != "/host:CPU":
            continue
        for line in plane.lines:
            if not line.name.startswith("tf_XLA"):  # XLA's threads: one event per thunk, named by its instruction
                continue
            for event in line.events:
                if event.name.startswith(("end: ", "ThunkExecutor", "ThreadpoolListener")):
                    continue
                by_category[category(event.name, convolutions)] += event.duration_ns
                by_instruction[event.name] += event.duration_ns
    per_step = lambda ns: round(ns / 1e6 / args.steps, 2)  # noqa: E731
    return {"step_ms": round(1e3 * seconds / args.steps, 1), "profiled_ms": per_step(sum(by_category.values())),
            "categories_ms": {k: per_step(v) for k, v in by_category.most_common()},
            "top_instructions_ms": {k: per_step(v) for k, v in by_instruction.most_common(args.top)}}


def profile_torch(args, name: str, batch: dict, num_classes: int, overrides: dict) -> dict:
    import torch

    from experiments.torch_reference import TrainingRunner

    runner = TrainingRunner(name, batch, num_classes, *benchmark.optimizer_for(args, name), threads=args.threads,
                            seed=args.seed, overrides=overrides)
    runner.run(args.warmup_steps)
    seconds = runner.run(args.steps)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        runner.run(args.steps)
    ops = sorted(((e.key, e.self_cpu_time_total) for e in profiler.key_averages()), key=lambda kv: -kv[1])
    return {"step_ms": round(1e3 * seconds / args.steps, 1),
            "profiled_ms": round(sum(us for _, us in ops) / 1e3 / args.steps, 2),
            "top_ops_ms": {k: round(us / 1e3 / args.steps, 2) for k, us in ops[:args.top] if us > 0}}


def print_table(title: str, rows: dict, step_ms: float, total: float) -> None:
    """``rows`` in ms per step; shares of ``total``, all the profiled time of a step."""
    print(f"\n{title} (measured step {step_ms} ms; profiled {total:.1f} ms)")
    print(f"| {'what':<60} | ms per step | share |\n|---|---:|---:|")
    for what, ms in rows.items():
        print(f"| {what:<60} | {ms:>11.2f} | {100 * ms / total:>4.0f}% |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet20_cifar")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5, help="profiled steps (and as many timed ones) per side")
    parser.add_argument("--warmup-steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="cores for both sides (1: op times add up to the step)")
    parser.add_argument("--reference", default="torch", choices=("torch", "none"))
    parser.add_argument("--top", type=int, default=12, help="rows of the per-instruction and per-op tables")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default="")
    args = parser.parse_args(argv)
    bench_args = benchmark.parse_args(["--models", args.model, "--threads", str(args.threads)])
    for key in ("batch_size", "steps", "warmup_steps", "top"):
        setattr(bench_args, key, getattr(args, key))
    benchmark.configure_process(bench_args)  # before JAX starts: the core pinning

    import cnn.models

    entry = cnn.models.entry(args.model)
    overrides = {"aux_logits": False} if "aux_logits" in cnn.models.create(args.model, num_classes=1).__dataclass_fields__ else {}
    batch = benchmark.synthetic_batch(args.batch_size, entry.input_shape, entry.default_num_classes, args.seed)
    load = [os.getloadavg()[0]]
    record = {"model": args.model, "batch_size": args.batch_size, "threads": args.threads, "steps": args.steps,
              "ours": profile_ours(bench_args, args.model, batch, entry.default_num_classes, overrides)}
    print_table(f"ours: {args.model}, batch {args.batch_size}, {args.threads} core(s), by kind of work",
                record["ours"]["categories_ms"], record["ours"]["step_ms"], record["ours"]["profiled_ms"])
    print_table("ours: the costliest XLA instructions", record["ours"]["top_instructions_ms"], record["ours"]["step_ms"],
                record["ours"]["profiled_ms"])
    if args.reference == "torch":
        record["torch"] = profile_torch(bench_args, args.model, batch, entry.default_num_classes, overrides)
        print_table("PyTorch: the costliest aten ops (self CPU time)", record["torch"]["top_ops_ms"],
                    record["torch"]["step_ms"], record["torch"]["profiled_ms"])
    load.append(os.getloadavg()[0])
    cpu = cli.cpu_name()
    print(f"\n{cpu} | load {load[0]:.1f} -> {load[1]:.1f} | {time.strftime('%Y-%m-%d %H:%M')}")
    if args.json:
        record.update(cpu=cpu, load_average=load, date=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                      command="python -m experiments.profile_step " + " ".join(sys.argv[1:] if argv is None else argv))
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
