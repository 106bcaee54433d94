"""Depthwise convolution on CPU: our JAX formulations against PyTorch, in the same run.

COMMAND: python -m experiments.benchmark_depthwise --output=docs/benchmarks/depthwise.json
(docs/performance.md, "Depthwise convolution", holds the figures and every attempt.)

XLA's CPU backend runs grouped convolutions with one channel per group slowly (google/flax#4207).
Three parts, the JAX figures next to PyTorch's, measured in the same process:
1. one depthwise conv layer, forward + backward (input and kernel gradients): XLA's grouped conv (NHWC,
   NCHW), shifted slices with autodiff gradients, shifted slices with ``cnn.layers.depthwise``'s
   written-out gradients (``cnn.layers.cpu_kernels``), patches + einsum; PyTorch's ``Conv2d(groups=C)``
   in NCHW and channels-last memory formats;
2. the kernel gradient alone (the costly part): one reduction per tap (autodiff), one variadic
   reduction, the variadic reduction over contiguous rows (ours), XLA's batch-group conv (native);
3. a training step (forward + backward of the cross-entropy, BatchNorm in training mode, dropout and
   stochastic depth on) of MobileNetV2 and ConvNeXt-T with XLA's grouped conv (``nn.Conv``) and the CPU kernels,
   against the same architectures written here from ``torch.nn`` primitives.
Each figure is the median seconds per step over --windows timed windows of --steps steps after
--warmup untimed ones (jit compilation included there), the windows of the compared implementations
interleaved; the best window, the process CPU time per step and the load average are recorded too,
since a shared machine slows some windows down. Prints a table, writes JSON.
"""

from __future__ import annotations

import os

# PyTorch's OpenMP threads spin while they wait, by default. On this shared, oversubscribed 2-core machine
# that made its steps erratic and up to 20x slower (ConvNeXt-T at 32x32: 0.7-3.6 s against 0.2 s with
# passive waiting or 1 thread), which would flatter us; so passive waiting, set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import copy  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import torch  # noqa: E402
from absl import app, flags  # noqa: E402
from jax import lax  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from cnn.layers import cpu_kernels  # noqa: E402
from cnn.layers.cpu_kernels import depthwise_kernel_gradient, shifted_depthwise  # noqa: E402
from cnn.models import create  # noqa: E402
from experiments import torch_reference  # noqa: E402

flags.DEFINE_integer("batch", 8, "Examples per step.")
flags.DEFINE_integer("layer_size", 56, "Height and width of the single-layer inputs.")
flags.DEFINE_integer("model_size", 112, "Image height and width of the model training steps.")
flags.DEFINE_integer("windows", 5, "Timed windows; the median is reported.")
flags.DEFINE_integer("steps", 2, "Steps per timed window.")
flags.DEFINE_integer("warmup", 3, "Untimed steps first (the first compiles).")
flags.DEFINE_list("parts", ["layer", "kernel_grad", "model"], "layer, kernel_grad and/or model.")
flags.DEFINE_string("output", "docs/benchmarks/depthwise.json", "Where to write the JSON results ('' for none).")
flags.DEFINE_string("xla_options", "{}", "JSON dict of XLA compiler options for every JAX step, e.g. "
                    '\'{"xla_cpu_use_xnnpack": true}\'.')
FLAGS = flags.FLAGS


def compiled(fn, *args):
    """``jax.jit(fn)`` compiled for ``args`` with --xla_options."""
    return jax.jit(fn).lower(*args).compile(compiler_options=json.loads(FLAGS.xla_options) or None)


def race(rows, candidates):
    """Times each candidate ``(step, block)`` into its row, windows interleaved (A B C A B C ...): median and
    best wall seconds, median CPU seconds per step. Over 1 s per step: 3 windows of 1 step (keeps it short)."""
    steps = []
    for step, block in candidates:
        for _ in range(FLAGS.warmup):
            start = time.perf_counter()
            block(step())
        steps.append(1 if time.perf_counter() - start > 1.0 else FLAGS.steps)
    walls, cpus = [[] for _ in candidates], [[] for _ in candidates]
    for window in range(FLAGS.windows):
        for i, (step, block) in enumerate(candidates):
            if steps[i] == 1 and window >= 3:
                continue
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(steps[i]):
                result = step()
            block(result)
            walls[i].append((time.perf_counter() - wall) / steps[i])
            cpus[i].append((time.process_time() - cpu) / steps[i])
    for row, wall, cpu, count in zip(rows, walls, cpus, steps):
        row.update(seconds=statistics.median(wall), best_seconds=min(wall), cpu_seconds=statistics.median(cpu),
                   windows=len(wall), steps_per_window=count)
    return rows


# ----------------------------------------------------------------------------- one layer
LAYERS = ((144, 3, 1), (144, 3, 2), (96, 7, 1))  # (channels, kernel, stride): MobileNetV2's and ConvNeXt's


def _pad(x, pad):
    return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))


def _slices(x, kernel, stride, pad, out):
    """The ``kernel * kernel`` shifted, strided ``[N, out, out, C]`` slices of the padded input."""
    xp, span = _pad(x, pad), (out - 1) * stride + 1
    return [xp[:, i:i + span:stride, j:j + span:stride] for i in range(kernel) for j in range(kernel)]


def xla_nhwc(x, w, stride, pad):
    return lax.conv_general_dilated(x, w[:, :, None, :], (stride, stride), ((pad, pad), (pad, pad)),
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=x.shape[-1])


def xla_nchw(x, w, stride, pad):
    y = lax.conv_general_dilated(jnp.transpose(x, (0, 3, 1, 2)), jnp.transpose(w, (2, 0, 1))[:, None],
                                 (stride, stride), ((pad, pad), (pad, pad)), dimension_numbers=("NCHW", "OIHW", "NCHW"),
                                 feature_group_count=x.shape[-1])
    return jnp.transpose(y, (0, 2, 3, 1))


def shifted_autodiff(x, w, stride, pad):
    k = w.shape[0]
    pieces = _slices(x, k, stride, pad, (x.shape[1] + 2 * pad - k) // stride + 1)
    return sum(piece * w[i // k, i % k] for i, piece in enumerate(pieces))


def shifted_custom_gradients(x, w, stride, pad):
    return shifted_depthwise(x, w, (stride, stride), ((pad, pad), (pad, pad)), (1, 1))


def patches_einsum(x, w, stride, pad):
    k, channels = w.shape[0], x.shape[-1]
    patches = lax.conv_general_dilated_patches(x, (k, k), (stride, stride), ((pad, pad), (pad, pad)),
                                               dimension_numbers=("NHWC", "HWIO", "NHWC"))
    patches = patches.reshape(patches.shape[:3] + (channels, k * k))  # features are channel-major
    return jnp.einsum("nhwck,kc->nhwc", patches, w.reshape(k * k, channels))


JAX_LAYERS = {
    "jax xla grouped conv NHWC (nn.Conv, 'xla')": xla_nhwc,
    "jax xla grouped conv NCHW": xla_nchw,
    "jax shifted slices, autodiff gradients": shifted_autodiff,
    "jax shifted slices, written gradients ('shifted')": shifted_custom_gradients,
    "jax patches + einsum": patches_einsum,
}


def layer_rows(channels, kernel, stride):
    n, size, pad, rng = FLAGS.batch, FLAGS.layer_size, (kernel - 1) // 2, np.random.default_rng(0)
    x_np = rng.standard_normal((n, size, size, channels), dtype=np.float32)
    w_np = (rng.standard_normal((kernel, kernel, channels)) / kernel).astype(np.float32)
    x, w = jnp.asarray(x_np), jnp.asarray(w_np)
    label = f"{kernel}x{kernel}/{stride} C={channels} {size}x{size} batch {n}"
    rows, candidates, skipped, reference = [], [], [], None
    for name, fn in JAX_LAYERS.items():
        if fn is patches_einsum and kernel > 3:
            # XLA's gradient of conv_general_dilated_patches took > 23 GB at 7x7, 56x56, C=96, batch 8 (OOM-killed).
            skipped.append({"layer": label, "impl": name, "skipped": "gradient needs > 23 GB at 7x7 (OOM)"})
            continue
        loss = lambda x, w, fn=fn: jnp.sum(jnp.sin(fn(x, w, stride, pad)))  # noqa: E731
        grad = compiled(jax.grad(loss, argnums=(0, 1)), x, w)
        grads = grad(x, w)
        reference = grads if reference is None else reference
        error = max(float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b))) for a, b in zip(grads, reference))
        rows.append({"layer": label, "impl": name, "max_rel_grad_diff_vs_xla": error})
        candidates.append((lambda grad=grad: grad(x, w), jax.block_until_ready))
    conv = nn.Conv2d(channels, channels, kernel, stride, pad, groups=channels, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(w_np).permute(2, 0, 1)[:, None])
    for fmt, memory_format in (("NCHW", torch.contiguous_format), ("channels_last", torch.channels_last)):
        layer = copy.deepcopy(conv).to(memory_format=memory_format)  # .to() converts in place
        tx = torch.from_numpy(x_np).permute(0, 3, 1, 2).contiguous(memory_format=memory_format).requires_grad_()

        def step(layer=layer, tx=tx):
            tx.grad, layer.weight.grad = None, None
            torch.sin(layer(tx)).sum().backward()
            return tx.grad

        rows.append({"layer": label, "impl": f"torch Conv2d(groups=C) {fmt}"})
        candidates.append((step, lambda r: None))
    return skipped + race(rows, candidates)


# ----------------------------------------------------------------------------- the kernel gradient alone
def _products(x, dy, kernel, stride, pad):
    return [piece * dy for piece in _slices(x, kernel, stride, pad, dy.shape[1])]


def grad_per_tap(x, dy, kernel, stride, pad):
    """What autodiff of the shifted slices computes: one reduction over (N, H, W) per tap."""
    return jnp.stack([jnp.sum(p, axis=(0, 1, 2)) for p in _products(x, dy, kernel, stride, pad)])


def grad_variadic_nhw(x, dy, kernel, stride, pad):
    """One variadic reduction over (N, H, W), one output per tap."""
    products = tuple(_products(x, dy, kernel, stride, pad))
    return jnp.stack(lax.reduce(products, (jnp.float32(0),) * len(products),
                                lambda a, b: tuple(u + v for u, v in zip(a, b)), (0, 1, 2)))


def grad_variadic_rows(x, dy, kernel, stride, pad):
    """``cnn.layers.depthwise``'s: one variadic reduction over contiguous rows, then a sum over W."""
    return depthwise_kernel_gradient(x, dy, (kernel, kernel), (stride, stride), ((pad, pad),) * 2, (1, 1))


def grad_batch_group_conv(x, dy, kernel, stride, pad):
    """XLA's own filter gradient of a grouped conv: a conv with ``batch_group_count = C``."""
    lhs, rhs = jnp.transpose(_pad(x, pad), (3, 1, 2, 0)), jnp.transpose(dy, (1, 2, 0, 3))  # [C,H,W,N], [H,W,N,C]
    out = lax.conv_general_dilated(lhs, rhs, (1, 1), "VALID", rhs_dilation=(stride, stride),
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"), batch_group_count=x.shape[-1])
    return out[:, :kernel, :kernel]  # a stride can leave room for one more (unused) tap


KERNEL_GRADIENTS = {
    "one reduction per tap (autodiff)": grad_per_tap,
    "variadic reduction over (N, H, W)": grad_variadic_nhw,
    "variadic reduction over rows ('shifted')": grad_variadic_rows,
    "XLA conv, batch_group_count=C (native)": grad_batch_group_conv,
}


def kernel_gradient_rows(channels, kernel, stride):
    n, size, pad, rng = FLAGS.batch, FLAGS.layer_size, (kernel - 1) // 2, np.random.default_rng(0)
    out = (size + 2 * pad - kernel) // stride + 1
    x = jnp.asarray(rng.standard_normal((n, size, size, channels), dtype=np.float32))
    dy = jnp.asarray(rng.standard_normal((n, out, out, channels), dtype=np.float32))
    label = f"{kernel}x{kernel}/{stride} C={channels} {size}x{size} batch {n}"
    rows, candidates, reference = [], [], None
    for name, fn in KERNEL_GRADIENTS.items():
        step = compiled(lambda x, dy, fn=fn: fn(x, dy, kernel, stride, pad).reshape(kernel * kernel, channels), x, dy)
        value = step(x, dy)
        reference = value if reference is None else reference
        error = float(jnp.max(jnp.abs(value - reference)) / jnp.max(jnp.abs(reference)))
        rows.append({"kernel_grad": label, "impl": f"jax {name}", "max_rel_diff_vs_per_tap": error})
        candidates.append((lambda step=step: step(x, dy), jax.block_until_ready))
    return race(rows, candidates)


# ----------------------------------------------------------------------------- whole models
def jax_train_step(name, impl, x, labels):
    model = create(name, num_classes=1000)
    model = cpu_kernels.use_cpu_kernels(model) if impl == "shifted" else model
    variables = jax.jit(lambda key: model.init(key, x[:1], train=False))(jax.random.key(0))
    params, batch_stats = variables["params"], variables.get("batch_stats", {})

    def loss_fn(params, batch_stats, rng):
        logits, updates = model.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                                      mutable=["batch_stats"], rngs={"dropout": rng})
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), updates

    rng = jax.random.key(1)
    grad = compiled(jax.value_and_grad(loss_fn, has_aux=True), params, batch_stats, rng)
    logits = jax.jit(lambda v: model.apply(v, x, train=False))(variables)
    return (lambda: grad(params, batch_stats, rng)), np.asarray(logits)


def model_rows(name, torch_model):
    n, size, rng = FLAGS.batch, FLAGS.model_size, np.random.default_rng(0)
    x_np, labels = rng.standard_normal((n, size, size, 3), dtype=np.float32), rng.integers(0, 1000, n)
    x, y = jnp.asarray(x_np), jnp.asarray(labels)
    label = f"{name} {size}x{size} batch {n}"
    rows, candidates, logits = [], [], {}
    for impl in ("xla", "shifted"):
        step, logits[impl] = jax_train_step(name, impl, x, y)
        rows.append({"model": label, "impl": "jax nn.Conv" if impl == "xla" else "jax CpuConv"})
        candidates.append((step, jax.block_until_ready))
    scale = float(np.max(np.abs(logits["xla"])))
    difference = float(np.max(np.abs(logits["xla"] - logits["shifted"]))) / scale
    rows[-1]["max_rel_logit_diff_vs_xla"] = difference
    for fmt, memory_format in (("NCHW", torch.contiguous_format), ("channels_last", torch.channels_last)):
        module = torch_model().train().to(memory_format=memory_format)
        tx = torch.from_numpy(x_np).permute(0, 3, 1, 2).contiguous(memory_format=memory_format)
        ty = torch.from_numpy(labels)

        def step(module=module, tx=tx):
            module.zero_grad(set_to_none=True)
            loss = F.cross_entropy(module(tx), ty)
            loss.backward()
            return loss

        rows.append({"model": label, "impl": f"torch {fmt}"})
        candidates.append((step, lambda r: None))
    return race(rows, candidates)


def add_ratios(rows, key):
    """``vs_torch_*``: PyTorch's seconds per step over ours (above 1 = we are faster)."""
    for group in {row[key] for row in rows}:
        members = [row for row in rows if row[key] == group]
        torch_rows = {row["impl"].split()[-1]: row for row in members if row["impl"].startswith("torch")}
        for row in members:
            if row["impl"].startswith("jax") and "seconds" in row:
                for fmt, reference in torch_rows.items():
                    row[f"vs_torch_{fmt}"] = reference["seconds"] / row["seconds"]
    return rows


def print_table(rows, key):
    print(f"\n{key:<34} {'implementation':<50} {'s/step':>8} {'cpu s':>7} {'vs NCHW':>8} {'vs CL':>7}")
    for row in rows:
        if "skipped" in row:
            print(f"{row[key]:<34} {row['impl']:<50} skipped: {row['skipped']}")
            continue
        ratios = [f"{row[k]:.2f}x" if k in row else "" for k in ("vs_torch_NCHW", "vs_torch_channels_last")]
        print(f"{row[key]:<34} {row['impl']:<50} {row['seconds']:8.4f} {row['cpu_seconds']:7.3f} "
              f"{ratios[0]:>8} {ratios[1]:>7}")


def main(argv):
    del argv
    start_load = os.getloadavg()
    results = {
        "command": "python -m experiments.benchmark_depthwise " + " ".join(sys.argv[1:]),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "jax": jax.__version__, "jax_backend": jax.default_backend(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
                    "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY")},
        "settings": {k: getattr(FLAGS, k) for k in ("batch", "layer_size", "model_size", "windows", "steps", "warmup",
                                                    "xla_options")},
        "load_average_start": start_load,
    }
    parts = {
        "layer": lambda: [row for config in LAYERS for row in layer_rows(*config)],
        "kernel_grad": lambda: [row for config in LAYERS for row in kernel_gradient_rows(*config)],
        "model": lambda: model_rows("mobilenet_v2", torch_reference.mobilenet_v2) + model_rows("convnext_tiny", torch_reference.convnext_tiny),
    }
    for part in FLAGS.parts:
        results[part] = add_ratios(parts[part](), part)
        print_table(results[part], part)
    results["load_average_end"] = os.getloadavg()
    print(f"\nload average {start_load[0]:.1f} at the start, {results['load_average_end'][0]:.1f} at the end "
          f"({os.cpu_count()} CPUs); torch threads {torch.get_num_threads()}")
    if FLAGS.output:
        pathlib.Path(FLAGS.output).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(FLAGS.output).write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {FLAGS.output}")


if __name__ == "__main__":
    app.run(main)
