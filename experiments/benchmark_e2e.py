r"""The README's main job end to end against the same recipe in a plain PyTorch loop (and Keras 3 on JAX when
installed): simple_cnn, Adam 1e-3, batch 32, 5 epochs, real MNIST, the test set evaluated after every epoch.
The sides run one after the other, alternately, ``--repeats`` times, each in a fresh process.

CNN_DATA_DIR=../shared/datasets python -m experiments.benchmark_e2e --repeats 2 --json docs/benchmarks/e2e.json

- ours: ``python -m experiments.train --config experiments/configs/mnist_simple_cnn.py`` in a fresh workdir
  (the prepared array_record files are made once, before the timing); ``train_seconds`` from results.json,
  the wall time of the whole command, and the median of its logged windows' img/s.
- bare: just before and just after each of our runs, the bare train step of the same network and batch
  (``python -m experiments.benchmark --models simple_cnn --batch-sizes 32``: resident batches, 7 windows of
  200 steps each time); the whole run's throughput is reported as a share of the median of those 14
  windows, repeat by repeat.
- torch: the same network (``experiments.torch_reference.simple_cnn``) and recipe as a plain loop over
  tensors held in memory (a random permutation per epoch, batches by slicing: the fastest plain loop, no
  DataLoader), PyTorch's default threads; train seconds exclude the import and the file reading.
- keras (``--keras``, needs ``pip install keras``): the seed's Keras code, ``model.fit`` with
  ``validation_data``, ``KERAS_BACKEND=jax``.

Prints a table (medians over repeats, and the ratio of medians against torch) and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

from experiments import cli

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = "experiments/configs/mnist_simple_cnn.py"


def load_mnist(data_dir: pathlib.Path):
    """``(train_images uint8 [60000, 28, 28], train_labels, test_images, test_labels)`` from the official files."""
    from cnn.data.formats import read_idx_pair

    folder = data_dir / "mnist"
    train = read_idx_pair(folder / "train-images-idx3-ubyte.gz", folder / "train-labels-idx1-ubyte.gz")
    test = read_idx_pair(folder / "t10k-images-idx3-ubyte.gz", folder / "t10k-labels-idx1-ubyte.gz")
    return (*train, *test)


def torch_side(data_dir: pathlib.Path, epochs: int, batch: int, seed: int) -> dict:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP waits collapse on a shared machine
    import torch

    from experiments.torch_reference import simple_cnn

    torch.manual_seed(seed)
    x_train, y_train, x_test, y_test = load_mnist(data_dir)
    x_train = torch.from_numpy(x_train).float().div_(255).reshape(-1, 1, 28, 28)
    x_test = torch.from_numpy(x_test).float().div_(255).reshape(-1, 1, 28, 28)
    y_train, y_test = torch.from_numpy(y_train).long(), torch.from_numpy(y_test).long()
    model = simple_cnn(10)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    started = time.perf_counter()
    steps = len(x_train) // batch
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x_train))
        for step in range(steps):
            rows = order[step * batch:(step + 1) * batch]
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(x_train[rows]), y_train[rows])
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            correct = sum(int((model(x_test[i:i + 1000]).argmax(1) == y_test[i:i + 1000]).sum())
                          for i in range(0, len(x_test), 1000))
    seconds = time.perf_counter() - started
    return {"train_seconds": seconds, "test_accuracy": correct / len(x_test), "steps": epochs * steps,
            "threads": torch.get_num_threads(), "version": torch.__version__}


def keras_side(data_dir: pathlib.Path, epochs: int, batch: int, seed: int) -> dict:
    os.environ["KERAS_BACKEND"] = "jax"
    import keras

    keras.utils.set_random_seed(seed)
    x_train, y_train, x_test, y_test = load_mnist(data_dir)
    x_train, x_test = x_train[..., None].astype("float32") / 255, x_test[..., None].astype("float32") / 255
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(32, 3, activation="relu"), keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(64, 3, activation="relu"), keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(), keras.layers.Dense(128, activation="relu"), keras.layers.Dense(10),
    ])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    started = time.perf_counter()
    model.fit(x_train, y_train, batch_size=batch, epochs=epochs, validation_data=(x_test, y_test), verbose=0)
    seconds = time.perf_counter() - started
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    return {"train_seconds": seconds, "test_accuracy": float(accuracy), "steps": epochs * (len(x_train) // batch),
            "version": keras.__version__}


def ours(data_dir: pathlib.Path, epochs: int, workdir: pathlib.Path, extra: list) -> dict:
    command = [sys.executable, "-m", "experiments.train", f"--config={CONFIG}", f"--workdir={workdir}",
               f"--config.training.epochs={epochs}", "--config.training.progress_bar=False", *extra]
    env = dict(os.environ, CNN_DATA_DIR=str(data_dir))
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"our run failed: {done.stderr[-2000:]}")
    results = json.loads((workdir / "results.json").read_text())
    logged = [json.loads(line).get("train_images_per_second") for line in (workdir / "metrics.jsonl").open()]
    logged = [v for v in logged if v is not None][1:]  # the first window holds the compilation
    return {"train_seconds": results["train_seconds"], "wall_seconds": wall, "test_accuracy": results["test_accuracy"],
            "steps": results["steps"], "median_logged_images_per_second": statistics.median(logged) if logged else None}


def bare_step(windows: int = 7, steps: int = 200) -> dict:
    """The bare step's throughput (experiments.benchmark, ours only) in a fresh process."""
    with tempfile.TemporaryDirectory() as tmp:
        record_path = pathlib.Path(tmp) / "bare.json"
        command = [sys.executable, "-m", "experiments.benchmark", "--models=simple_cnn", "--batch-sizes=32",
                   f"--windows={windows}", f"--steps-per-window={steps}", f"--json={record_path}"]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"the bare step failed: {done.stderr[-2000:]}")
        record = json.loads(record_path.read_text())["runs"][-1]["results"][0]
    return {"images_per_second": record["ours_images_per_s"], "windows": record["ours_windows"]}


def side_in_subprocess(side: str, args) -> dict:
    command = [sys.executable, "-m", "experiments.benchmark_e2e", f"--side={side}", f"--data-dir={args.data_dir}",
               f"--epochs={args.epochs}", f"--seed={args.seed}"]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{side} failed: {done.stderr[-2000:]}")
    record = json.loads(done.stdout.strip().splitlines()[-1])
    record["wall_seconds"] = time.perf_counter() - started
    return record


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get("CNN_DATA_DIR", ""), help="folder with mnist/ (official files)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keras", action="store_true", help="also Keras 3 with the JAX backend")
    parser.add_argument("--ours-flag", action="append", default=[], help="extra flag for experiments.train, repeatable")
    parser.add_argument("--side", default="", choices=("", "torch", "keras"), help=argparse.SUPPRESS)
    parser.add_argument("--json", default="", help="write the records here")
    args = parser.parse_args(argv)
    data_dir = pathlib.Path(args.data_dir).absolute()
    if not (data_dir / "mnist" / "train-images-idx3-ubyte.gz").exists():
        print(f"error: --data-dir={args.data_dir!r} has no mnist/train-images-idx3-ubyte.gz", file=sys.stderr)
        return 2
    if args.side:  # one side, in this (fresh) process
        run = torch_side if args.side == "torch" else keras_side
        print(json.dumps(run(data_dir, args.epochs, 32, args.seed)))
        return 0

    import cnn.data

    os.environ["CNN_DATA_DIR"] = str(data_dir)
    cnn.data.source("mnist", "train")  # prepared before any timing
    sides = ["ours", "torch"] + (["keras"] if args.keras else [])
    records = {side: [] for side in sides}
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for side in sides:
                if side == "ours":
                    before = bare_step()
                    record = ours(data_dir, args.epochs, pathlib.Path(tmp) / f"run{repeat}", args.ours_flag)
                    after = bare_step()
                    windows = before["windows"] + after["windows"]
                    record["bare_step_images_per_second"] = statistics.median(windows)
                    record["bare_step_windows"] = windows
                    record["share_of_bare_step"] = record["steps"] * 32 / record["train_seconds"] / statistics.median(windows)
                else:
                    record = side_in_subprocess(side, args)
                records[side].append(record)
                load.append(os.getloadavg()[0])
                print(f"{side:6s} repeat {repeat}: {record['train_seconds']:.1f} s training, "
                      f"{record['wall_seconds']:.1f} s wall, {100 * record['test_accuracy']:.2f}%", file=sys.stderr)
    median = lambda side, key: statistics.median(r[key] for r in records[side])  # noqa: E731
    reference = median("torch", "train_seconds")
    print(f"| side | training s (median of {args.repeats}) | wall s | images/s | test accuracy | vs torch |")
    print("|---|---:|---:|---:|---:|---:|")
    for side in sides:
        train = median(side, "train_seconds")
        images = records[side][0]["steps"] * 32 / train
        print(f"| {side} | {train:.1f} | {median(side, 'wall_seconds'):.1f} | {images:,.0f} | "
              f"{100 * median(side, 'test_accuracy'):.2f}% | {reference / train:.2f}x |")
    shares = [r["share_of_bare_step"] for r in records["ours"]]
    bares = ", ".join(f"{r['bare_step_images_per_second']:,.0f}" for r in records["ours"])
    percents = ", ".join(f"{100 * v:.0f}%" for v in shares)
    print(f"\nours against the bare step measured around each run ({bares} img/s): the whole run reaches "
          f"{percents} of it (median {100 * statistics.median(shares):.0f}%); its logged windows' median "
          f"{median('ours', 'median_logged_images_per_second'):,.0f} img/s")
    cpu = cli.cpu_name()
    print(f"{cpu} | {os.cpu_count()} cores | load {min(load):.1f} to {max(load):.1f}")
    if args.json:
        payload = {"command": "python -m experiments.benchmark_e2e " + " ".join(sys.argv[1:] if argv is None else argv),
                   "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "cpu": cpu, "cores": os.cpu_count(),
                   "platform": platform.platform(), "load_average": load, "records": records}
        pathlib.Path(args.json).write_text(json.dumps(payload, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
