r"""Compression on real MNIST: magnitude pruning, structured pruning, int8 (PTQ and QAT), and their ONNX files.

CNN_DATA_DIR=../shared/datasets nice -n 10 python -m experiments.compress_mnist --workdir runs/compress \
    --json docs/benchmarks/compress_mnist.json

For each model (simple_cnn, lenet5, resnet8 = resnet20_cifar with one block per stage) it trains the dense
baseline with the project's training loop (``--epochs``, the model's MNIST config otherwise), then from those
weights: one-shot global magnitude pruning at 50/75/90/95% sparsity, and gradual pruning (Zhu & Gupta,
sparsity ramped over the first half of ``--finetune-epochs``, then fine-tuned); structured L1 filter
pruning to 2x and 4x fewer multiply-adds, fine-tuned; int8 post-training quantisation calibrated on
``--calibration`` training images, and QAT (``--finetune-epochs``) followed by the same calibration. The
90%-sparse, 4x-structured and int8 models are exported to ONNX and their test accuracy under ONNX Runtime
recorded. Every fine-tuned figure has a dense reference trained the same extra steps ("dense fine-tuned").
Prints the tables of docs/results.md ("Compression"); ``--json`` writes every figure.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import subprocess
import sys
import time

import jax
import numpy as np
import optax

import cnn.data
from cnn.analysis import runs, summary
from cnn.export import onnx_model, pruning, quantize, structured
from cnn.export.finetune import accuracy, finetune
from cnn.export.forward import forward
from cnn.train.loop import train_and_evaluate
from experiments.configs import mnist_lenet5, mnist_simple_cnn

SPARSITIES = (0.5, 0.75, 0.9, 0.95)
MAC_FACTORS = (2.0, 4.0)


def baseline_config(name: str, epochs: float):
    if name == "lenet5":
        config = mnist_lenet5.get_config()
    else:
        config = mnist_simple_cnn.get_config()
        if name == "resnet8":
            config.model.name = "resnet20_cifar"
            config.model.overrides.stage_sizes = (1, 1, 1)
    config.training.epochs = epochs
    config.training.progress_bar = False
    return config


def arrays(run, split_source, limit=None):
    images, labels = [], []
    total = len(split_source) if limit is None else min(limit, len(split_source))
    for start in range(0, total, 2000):
        records = split_source.__getitems__(list(range(start, min(start + 2000, total))))
        images.append(run.preprocess(np.stack([r["image"] for r in records])))
        labels.append(np.asarray([r["label"] for r in records]))
    return np.concatenate(images), np.concatenate(labels)


def model_accuracy(model, variables, images, labels):
    return accuracy(jax.jit(forward(model, variables)), images, labels)


def onnx_accuracy(model, variables, path, input_shape, images, labels):
    path = onnx_model.to_onnx(model, variables, path, input_shape=input_shape)
    return accuracy(onnx_model.run_onnx(path), images, labels), path.stat().st_size


def compress(name: str, args, key) -> dict:
    workdir = pathlib.Path(args.workdir) / name
    config = baseline_config(name, args.epochs)
    started = time.perf_counter()
    results = train_and_evaluate(config, workdir)
    run = runs.load_run(workdir)
    model, variables = run.model, run.variables
    shape = tuple(run.test_source.image_shape)
    train_source = cnn.data.source(config.data.name, "train", data_dir=config.data.get("data_dir") or None)
    train_images, train_labels = arrays(run, train_source)
    test_images, test_labels = arrays(run, run.test_source)
    steps = int(args.finetune_epochs * len(train_images) / args.batch_size)
    tune = lambda m, v, tx, k: finetune(m, v, tx, train_images, train_labels, steps=steps, batch_size=args.batch_size, key=k)
    adam = lambda: optax.adam(args.learning_rate)
    full = summary(model, shape)
    record = {"model": name, "train": {k: results[k] for k in ("test_accuracy", "steps", "epochs", "train_seconds")},
              "dense": {"accuracy": model_accuracy(model, variables, test_images, test_labels), "params": full.params,
                        "macs": full.macs, "weight_bytes": quantize.weight_bytes(variables)}}

    key, subkey = jax.random.split(key)  # the reference for every fine-tuned figure: the same extra training, dense
    record["dense"]["finetuned_accuracy"] = model_accuracy(model, tune(model, variables, adam(), subkey), test_images, test_labels)
    record["unstructured"] = []
    for sparsity in SPARSITIES:
        masks = pruning.magnitude_masks(variables["params"], sparsity, scope="global")
        oneshot = dict(variables, params=pruning.apply_masks(variables["params"], masks))
        schedule = pruning.Schedule(sparsity, start=0, end=steps // 2, every=max(steps // 20, 1), scope="global")
        key, subkey = jax.random.split(key)
        tuned = tune(model, variables, optax.chain(adam(), pruning.prune(schedule)), subkey)
        entry = {"sparsity": sparsity, "oneshot_accuracy": model_accuracy(model, oneshot, test_images, test_labels),
                 "gradual_accuracy": model_accuracy(model, tuned, test_images, test_labels),
                 "layers": pruning.layer_sparsity(tuned["params"])}
        if sparsity == 0.9:
            entry["onnx_accuracy"], entry["onnx_bytes"] = onnx_accuracy(
                model, tuned, workdir / "pruned90.onnx", shape, test_images, test_labels)
        record["unstructured"].append(entry)

    record["structured"] = []
    if name in ("simple_cnn", "lenet5"):
        for factor in MAC_FACTORS:
            keep = structured.keep_for_macs(model, variables["params"], shape, factor)
            kept = structured.kept_filters(model, variables["params"], keep)
            small, small_variables = structured.shrink(model, variables, kept)
            key, subkey = jax.random.split(key)
            tuned = tune(small, small_variables, adam(), subkey)
            reduced = summary(small, shape)
            entry = {"factor": factor, "keep": keep, "widths": list(small.widths),
                     "hidden": small.hidden if isinstance(small.hidden, int) else list(small.hidden),
                     "params": reduced.params, "macs": reduced.macs, "macs_ratio": full.macs / reduced.macs,
                     "pruned_accuracy": model_accuracy(small, small_variables, test_images, test_labels),
                     "finetuned_accuracy": model_accuracy(small, tuned, test_images, test_labels)}
            if factor == 4.0:
                entry["onnx_accuracy"], entry["onnx_bytes"] = onnx_accuracy(
                    small, tuned, workdir / "structured4x.onnx", shape, test_images, test_labels)
            record["structured"].append(entry)

    calibration = [train_images[i:i + 100] for i in range(0, args.calibration, 100)]
    stats = quantize.calibrate(model, variables, calibration)
    int8_model, int8_variables = quantize.ptq(model, variables, stats, input_shape=shape)
    int8_forward = lambda x: int8_model.apply(int8_variables, x, train=False)
    ptq_onnx, ptq_bytes = onnx_accuracy(int8_model, int8_variables, workdir / "int8.onnx", shape, test_images, test_labels)
    qat = quantize.qat_model(model)
    qat_variables = dict(variables, quant_stats=quantize.calibrate(model, variables, calibration[:1]))
    key, subkey = jax.random.split(key)
    qat_tuned = tune(qat, qat_variables, optax.adam(args.learning_rate / 10), subkey)
    qat_tuned = {k: v for k, v in qat_tuned.items() if k != "quant_stats"}
    qat_int8_model, qat_int8_variables = quantize.ptq(model, qat_tuned, quantize.calibrate(model, qat_tuned, calibration),
                                                      input_shape=shape)
    products = quantize.int8_products(int8_forward, calibration[0])
    record["int8"] = {
        "ptq_accuracy": accuracy(jax.jit(int8_forward), test_images, test_labels),
        "ptq_onnx_accuracy": ptq_onnx, "onnx_bytes": ptq_bytes,
        "qat_accuracy": accuracy(jax.jit(lambda x: qat_int8_model.apply(qat_int8_variables, x, train=False)), test_images, test_labels),
        "qat_float_accuracy": model_accuracy(model, qat_tuned, test_images, test_labels),
        "weight_bytes": quantize.weight_bytes(int8_variables),
        "products": [list(p) for p in products],
    }
    record["seconds"] = time.perf_counter() - started
    return record


def tables(records) -> str:
    lines = ["| model | dense | dense fine-tuned | " + " | ".join(f"{int(s * 100)}% one-shot | {int(s * 100)}% gradual" for s in SPARSITIES) + " |",
             "|---|---|---|" + "---|---|" * len(SPARSITIES)]
    for r in records:
        cells = [f"{e['oneshot_accuracy']:.4f} | {e['gradual_accuracy']:.4f}" for e in r["unstructured"]]
        lines.append(f"| {r['model']} | {r['dense']['accuracy']:.4f} | {r['dense']['finetuned_accuracy']:.4f} | " + " | ".join(cells) + " |")
    lines += ["", "| model | MACs | widths / hidden | params | MAC reduction | accuracy pruned | fine-tuned | ONNX Runtime |",
              "|---|---|---|---|---|---|---|---|"]
    for r in records:
        lines.append(f"| {r['model']} | {r['dense']['macs']:,.0f} | dense | {r['dense']['params']:,} | 1.00x | {r['dense']['accuracy']:.4f} "
                     f"| {r['dense']['finetuned_accuracy']:.4f} | |")
        for e in r["structured"]:
            lines.append(f"| {r['model']} | {e['macs']:,.0f} | {e['widths']} / {e['hidden']} | {e['params']:,} | {e['macs_ratio']:.2f}x "
                         f"| {e['pruned_accuracy']:.4f} | {e['finetuned_accuracy']:.4f} | {e.get('onnx_accuracy', float('nan')):.4f} |")
    lines += ["", "| model | float | int8 PTQ | int8 PTQ (ONNX Runtime) | float fine-tuned | QAT weights in float | int8 after QAT "
              "| float bytes | int8 bytes | int8 products in XLA |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        q = r["int8"]
        kinds = sorted({f"{p[0]} {p[1]}x{p[2]}->{p[3]}" for p in q["products"]})
        lines.append(f"| {r['model']} | {r['dense']['accuracy']:.4f} | {q['ptq_accuracy']:.4f} | {q['ptq_onnx_accuracy']:.4f} "
                     f"| {r['dense']['finetuned_accuracy']:.4f} | {q['qat_float_accuracy']:.4f} | {q['qat_accuracy']:.4f} "
                     f"| {r['dense']['weight_bytes']:,} | {q['weight_bytes']:,} | {', '.join(kinds)} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--models", default="simple_cnn,lenet5,resnet8")
    parser.add_argument("--epochs", type=float, default=2.0, help="dense baseline training epochs")
    parser.add_argument("--finetune-epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--calibration", type=int, default=1000, help="training images that calibrate int8")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default="")
    args = parser.parse_args(argv)
    key = jax.random.key(args.seed)
    records = []
    for name in args.models.split(","):
        key, subkey = jax.random.split(key)
        records.append(compress(name, args, subkey))
        print(tables(records), flush=True)
    if args.json:
        load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        out = {"command": " ".join(["python -m experiments.compress_mnist", *(argv if argv is not None else sys.argv[1:])]),
               "machine": platform.processor() or platform.machine(), "uptime": load, "records": records}
        pathlib.Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
