"""Images per second of the whole input path against simple_cnn's training throughput on this machine.

COMMAND: CNN_DATA_DIR=../shared/datasets python -m experiments.benchmark_data --output=docs/benchmarks/data.json
(docs/data.md holds the figures and the exact command they came from.)

The input path is everything a training step waits for: the prepared array_record source, grain's
per-epoch shuffle and sharding, batching, the transfer to the device and the jitted augmentation
chain. It is timed for MNIST (28x28x1) and a synthetic 32x32x3 set, with 0 and 2 grain worker
processes; the same table times one jitted simple_cnn training step as a run compiles it (CPU kernels
and XLA options on the CPU; Adam, the same batch, the same image shape), before and after the input
path's windows (the best of both counts, so a busy moment cannot flatter the ratio), and reports the ratio. The input
path must be at least 5x faster than training. Each
figure is the best of --repeats timed windows (a shared machine slows some windows down); the load
average is recorded, and without workers the CPU time per image of both sides too (less sensitive to
other processes than wall time). Prints a table; writes JSON (machine, versions, command, numbers).
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import platform
import sys
import time

from absl import app, flags

from experiments import cli

flags.DEFINE_list("datasets", ["mnist", "synthetic"], "mnist and/or synthetic (32x32x3, 10 classes).")
flags.DEFINE_integer("global_batch", 128, "Examples per step.")
flags.DEFINE_integer("steps", 200, "Timed input steps per window.")
flags.DEFINE_integer("warmup_steps", 20, "Untimed steps first (compilation, worker start, page cache).")
flags.DEFINE_integer("train_steps", 60, "Timed simple_cnn training steps per window.")
flags.DEFINE_integer("repeats", 3, "Timed windows per measurement; the best counts (the machine may be shared).")
flags.DEFINE_list("worker_counts", ["0", "2"], "grain worker processes to try.")
flags.DEFINE_bool("in_memory", True, "Also time the split held in RAM (cnn.data.in_memory), without workers.")
flags.DEFINE_string("mnist_chain", "crop(2)|rotate(10)", "Augmentation chain for MNIST.")
flags.DEFINE_string("synthetic_chain", "crop(4)|flip|cutout(8)", "Augmentation chain for the synthetic set.")
flags.DEFINE_integer("synthetic_train", 50_000, "Training examples of the synthetic set.")
flags.DEFINE_string("data_dir", None, "Raw files folder (default $CNN_DATA_DIR, else the cache).")
flags.DEFINE_string("prepared_dir", None, "Prepared array_record folder (default $CNN_PREPARED_DIR, else the cache).")
flags.DEFINE_string("output", "docs/benchmarks/data.json", "Where the JSON goes ('' for nowhere).")
FLAGS = flags.FLAGS

TARGET_RATIO = 5.0


def machine() -> dict:
    import jax

    return {
        "cpu": cli.cpu_name() or "unknown",
        "cpu_count": os.cpu_count(),
        "load_average_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "devices": [str(d) for d in jax.devices()],
    }


def make_source(name: str):
    import cnn.data

    if name == "mnist":
        return cnn.data.source("mnist", "train", data_dir=FLAGS.data_dir, prepared_dir=FLAGS.prepared_dir)
    if name == "synthetic":
        return cnn.data.source(
            "synthetic", "train", prepared_dir=FLAGS.prepared_dir, image_shape=(32, 32, 3), num_classes=10,
            num_train=FLAGS.synthetic_train, num_test=1000,
        )
    raise app.UsageError(f"--datasets: unknown {name!r}; expected mnist or synthetic")


def time_input_path(source, chain_text: str, worker_count: int) -> dict:
    """Best of --repeats windows: images/s of iterate -> device_put -> jitted augmentation, and of the host part alone."""
    import jax

    import cnn.data

    chain = jax.jit(cnn.data.augmentation(chain_text, num_classes=source.num_classes, mean=source.mean, std=source.std))
    iterator = cnn.data.train_iterator(
        source, global_batch=FLAGS.global_batch, seed=0, process_index=0, process_count=1, worker_count=worker_count
    )
    key = jax.random.key(0)
    step = 0

    def run(steps: int, augment: bool) -> tuple:
        """(images per wall second, images per CPU second of this process) over ``steps`` batches."""
        nonlocal step
        start, cpu_start, images = time.perf_counter(), time.process_time(), None
        for _ in range(steps):
            batch = next(iterator)
            if augment:
                images, _ = chain(jax.random.fold_in(key, step), jax.device_put(batch["image"]), jax.device_put(batch["label"]))
            step += 1
        if images is not None:
            images.block_until_ready()
        count = steps * FLAGS.global_batch
        return count / (time.perf_counter() - start), count / (time.process_time() - cpu_start)

    run(FLAGS.warmup_steps, augment=True)  # compilation, worker start, page cache
    full = [run(FLAGS.steps, augment=True) for _ in range(FLAGS.repeats)]
    host = [run(FLAGS.steps, augment=False) for _ in range(FLAGS.repeats)]
    iterator.close()
    return {
        "input_images_per_second": max(wall for wall, _ in full),
        "host_images_per_second": max(wall for wall, _ in host),
        # CPU time of this process only: meaningful without worker processes (theirs is not counted).
        "input_images_per_cpu_second": max(cpu for _, cpu in full) if worker_count == 0 else None,
    }


def time_training(image_shape: tuple) -> tuple:
    """Best of --repeats windows: (images per wall second, per CPU second) of a jitted simple_cnn training step,
    compiled as a run compiles it (the CPU kernels and XLA options of ``cnn.layers.cpu_kernels`` on the CPU)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import cnn.models
    from cnn.layers import cpu_kernels

    model = cnn.models.create("simple_cnn", num_classes=10)
    kernels = cpu_kernels.enabled("auto")
    model = cpu_kernels.use_cpu_kernels(model) if kernels else model
    images = jnp.asarray(np.random.default_rng(0).normal(size=(FLAGS.global_batch, *image_shape)), jnp.float32)
    labels = jnp.arange(FLAGS.global_batch) % 10
    params = model.init(jax.random.key(0), images, train=False)["params"]
    optimizer = optax.adam(1e-3)
    opt_state = optimizer.init(params)

    @functools.partial(jax.jit, compiler_options=cpu_kernels.compiler_options() if kernels else None)
    def train_step(params, opt_state, images, labels):
        def loss_fn(params):
            logits = model.apply({"params": params}, images, train=True)
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    for _ in range(3):
        params, opt_state, loss = train_step(params, opt_state, images, labels)
    loss.block_until_ready()
    rates, cpu_rates = [], []
    for _ in range(FLAGS.repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        for _ in range(FLAGS.train_steps):
            params, opt_state, loss = train_step(params, opt_state, images, labels)
        loss.block_until_ready()
        count = FLAGS.train_steps * FLAGS.global_batch
        rates.append(count / (time.perf_counter() - start))
        cpu_rates.append(count / (time.process_time() - cpu_start))
    return max(rates), max(cpu_rates)


def main(argv):
    del argv
    import cnn.data

    variables = ("CNN_DATA_DIR", "CNN_PREPARED_DIR", "JAX_NUM_CPU_DEVICES", "XLA_FLAGS")
    environment = {k: os.environ[k] for k in variables if k in os.environ}
    command = " ".join([*(f"{k}={v}" for k, v in environment.items()), "python -m experiments.benchmark_data", *sys.argv[1:]])
    results = {"command": command, "machine": machine(), "rows": []}
    for name in FLAGS.datasets:
        source = make_source(name)
        chain_text = FLAGS.mnist_chain if name == "mnist" else FLAGS.synthetic_chain
        before = time_training(source.image_shape)
        rows = []
        configurations = [(source, worker_count, False) for worker_count in map(int, FLAGS.worker_counts)]
        if FLAGS.in_memory:
            configurations.append((cnn.data.in_memory(source), 0, True))
        for reader, worker_count, held_in_memory in configurations:
            rows.append({"dataset": name, "image_shape": list(source.image_shape), "examples": len(source),
                         "chain": chain_text, "global_batch": FLAGS.global_batch, "worker_count": worker_count,
                         "in_memory": held_in_memory, **time_input_path(reader, chain_text, worker_count)})
            rate = rows[-1]["input_images_per_second"]
            print(f"{name} workers={worker_count} in_memory={held_in_memory}: {rate:,.0f} img/s", flush=True)
        # The step before and after the input path, the best of both: a busy moment must not flatter the ratio.
        after = time_training(source.image_shape)
        train_rate, train_cpu_rate = max(before[0], after[0]), max(before[1], after[1])
        for row in rows:
            row["simple_cnn_train_images_per_second"] = train_rate
            row["simple_cnn_train_images_per_cpu_second"] = train_cpu_rate
            row["ratio"] = row["input_images_per_second"] / train_rate
            if row["input_images_per_cpu_second"]:
                # How many times less CPU an image costs in the input path than in a training step.
                row["cpu_cost_ratio"] = row["input_images_per_cpu_second"] / train_cpu_rate
        results["rows"].extend(rows)
    results["machine"]["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    header = (f"{'dataset':<10} {'shape':<10} {'chain':<24} {'workers':>7} {'input img/s':>12} {'host img/s':>11} "
              f"{'train img/s':>12} {'ratio':>6} {'cpu cost ratio':>14}")
    print(header)
    print("-" * len(header))
    for row in results["rows"]:
        workers = f"{row['worker_count']}{' RAM' if row['in_memory'] else ''}"
        print(f"{row['dataset']:<10} {'x'.join(map(str, row['image_shape'])):<10} {row['chain']:<24} {workers:>7} "
              f"{row['input_images_per_second']:>12,.0f} {row['host_images_per_second']:>11,.0f} "
              f"{row['simple_cnn_train_images_per_second']:>12,.0f} {row['ratio']:>5.1f}x "
              f"{(format(row['cpu_cost_ratio'], '13.1f') + 'x') if 'cpu_cost_ratio' in row else '-':>14}")
    best = {}
    for row in results["rows"]:
        best[row["dataset"]] = max(best.get(row["dataset"], 0.0), row["ratio"])
    results["target_ratio"] = TARGET_RATIO
    results["meets_target"] = {name: ratio >= TARGET_RATIO for name, ratio in best.items()}
    print(f"best ratio per dataset: {', '.join(f'{k} {v:.1f}x' for k, v in best.items())} (target >= {TARGET_RATIO:.0f}x)")
    if FLAGS.output:
        path = pathlib.Path(FLAGS.output)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    app.run(main)
