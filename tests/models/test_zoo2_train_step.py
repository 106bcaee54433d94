"""One training step of every zoo II model on CPU at a tiny input: cross-entropy, ``value_and_grad``
with respect to the parameters, ``batch_stats`` mutable, and a ``"dropout"`` rng driving dropout and
stochastic depth. Asserts finite loss and gradients, a non-zero gradient for every parameter tensor,
and updated BatchNorm statistics.

Variables are filled from their shapes (``jax.eval_shape``) with seeded numpy values instead of a
jitted ``init``, and the step compiles with XLA's cheapest CPU options: the test checks that
training works, not its speed, and XLA's CPU compile time dominates otherwise. The deeper members
of a family whose code path a faster member already covers are marked ``slow``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnn.models import create

# XLA CPU: no backend optimisation and the classic emitters compile 3-8x faster on these graphs.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}

# name: (input shape without batch, overrides). Each is about the smallest input the model accepts.
CASES = {
    "googlenet": ((32, 32, 3), {}),
    "inception_v3": ((75, 75, 3), {"aux_logits": False}),  # the auxiliary head needs 299x299: see below
    "densenet121": ((32, 32, 3), {}),
    "densenet169": ((32, 32, 3), {}),
    "densenet201": ((32, 32, 3), {}),
    "densenet121_cifar": ((32, 32, 3), {}),
    "mobilenet_v1": ((32, 32, 3), {}),
    "mobilenet_v2": ((32, 32, 3), {}),
    "mobilenet_v2_cifar": ((32, 32, 3), {}),
    "mobilenet_v3_small": ((32, 32, 3), {}),
    "mobilenet_v3_large": ((32, 32, 3), {}),
    "efficientnet_b0": ((32, 32, 3), {}),
    "efficientnet_b1": ((32, 32, 3), {}),
    "efficientnet_b2": ((32, 32, 3), {}),
    "efficientnet_b3": ((32, 32, 3), {}),
    "convnext_tiny": ((32, 32, 3), {}),
    "convnext_small": ((32, 32, 3), {}),
    "squeezenet1_1": ((32, 32, 3), {}),
    "vit_tiny_patch16_224": ((32, 32, 3), {}),
    "vit_small_patch16_224": ((32, 32, 3), {}),
    "r3d_18": ((2, 16, 16, 3), {}),
    "cnn1d": ((64, 1), {}),
    "vgg16_cifar": ((32, 32, 3), {}),
}
# Built from the same blocks as a faster member (densenet121_cifar, efficientnet_b0, mobilenet_v3_small,
# convnext_tiny, vit_tiny_patch16_224), only deeper or wider; each compiles for 15-60 s on a 2-core CPU.
SLOW = {"densenet121", "densenet169", "densenet201", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3",
        "mobilenet_v3_large", "convnext_small", "vit_small_patch16_224"}
NUM_CLASSES = 5


def _batch(model):
    """2 examples; 8 with stochastic depth, which (at rates up to 0.4) then all but never drops a block for all."""
    return 8 if getattr(model, "drop_path_rate", 0.0) > 0 else 2


def _fill(shapes, seed=0):
    """Seeded values by role: He-scaled kernels, scales and variances near 1, small biases and means."""
    rng = np.random.default_rng(seed)

    def value(path, leaf):
        name = str(getattr(path[-1], "key", path[-1]))
        if name in ("scale", "var"):
            data = rng.uniform(0.5, 1.5, leaf.shape)
        elif name == "bias":  # small and positive, so that no narrow ReLU layer (an SE squeeze) starts dead
            data = rng.uniform(0.0, 0.2, leaf.shape)
        elif name == "mean":
            data = rng.normal(0.0, 0.1, leaf.shape)
        elif leaf.ndim >= 2:
            data = rng.normal(0.0, 1.0, leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1]) if name == "kernel" else 1.0)
        else:
            data = rng.normal(0.0, 0.1, leaf.shape)
        return jnp.asarray(data, jnp.float32)

    return jax.tree_util.tree_map_with_path(value, shapes)


def _train_step(model, x, labels, mutable=("batch_stats",)):
    shapes = jax.eval_shape(lambda inputs: model.init(jax.random.key(0), inputs, train=False), x)
    variables = _fill(shapes)
    params, batch_stats = variables["params"], variables.get("batch_stats", {})

    def loss_fn(params, batch_stats, rng):
        logits, updates = model.apply(
            {"params": params, "batch_stats": batch_stats}, x, train=True, mutable=list(mutable), rngs={"dropout": rng}
        )
        loss = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels).mean()
        aux = updates.get("intermediates", {}).get("aux_logits")
        if aux is not None:  # torchvision's recipe: 0.4 x the auxiliary loss
            loss = loss + 0.4 * sum(optax.softmax_cross_entropy_with_integer_labels(a, labels).mean() for a in aux)
        return loss, (logits, updates)

    step = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
    rng = jax.random.key(1, impl="rbg")  # XLA's RngBitGenerator: less to compile than threefry
    compiled = step.lower(params, batch_stats, rng).compile(compiler_options=FAST_COMPILE)
    (loss, (logits, updates)), grads = compiled(params, batch_stats, rng)
    return params, batch_stats, loss, logits, updates, grads


def _check(params, batch_stats, loss, logits, updates, grads, batch):
    assert logits.shape == (batch, NUM_CLASSES)
    assert np.isfinite(float(loss))
    assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(params)
    leaves = jax.tree_util.tree_leaves(grads)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    # Every parameter tensor is connected to the loss (kernels over tiny maps may see only some taps).
    flat = jax.tree_util.tree_flatten_with_path(grads)[0]
    dead = [jax.tree_util.keystr(path) for path, g in flat if not bool(jnp.any(g != 0))]
    assert not dead, f"parameters without gradient: {dead}"
    if batch_stats:
        changed = jax.tree_util.tree_map(lambda old, new: bool(jnp.any(old != new)), batch_stats, updates["batch_stats"])
        assert all(jax.tree_util.tree_leaves(changed)), "every BatchNorm must update its running statistics"


def _inputs(name, shape, batch):
    key = jax.random.key(7)
    if name == "cnn1d" and CASES[name][1].get("vocab_size"):
        return jax.random.randint(key, (batch,) + shape, 0, 50)
    return jax.random.normal(key, (batch,) + shape)


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in sorted(CASES)]
)
def test_one_training_step(name):
    shape, overrides = CASES[name]
    model = create(name, num_classes=NUM_CLASSES, **overrides)
    batch = _batch(model)
    labels = jnp.arange(batch) % NUM_CLASSES
    _check(*_train_step(model, _inputs(name, shape, batch), labels), batch)


def test_cnn1d_trains_on_tokens():
    model = create("cnn1d", num_classes=NUM_CLASSES, vocab_size=50, embed_dim=8, widths=(8, 16), drop_rate=0.5)
    tokens = jax.random.randint(jax.random.key(3), (2, 40), 0, 50)
    params, batch_stats, loss, logits, updates, grads = _train_step(model, tokens, jnp.arange(2))
    _check(params, batch_stats, loss, logits, updates, grads, 2)
    # Only the rows of tokens that occur get a gradient.
    rows = np.flatnonzero(np.any(np.asarray(grads["embed"]["embedding"]) != 0, axis=1))
    assert set(rows) == set(np.unique(np.asarray(tokens)))


@pytest.mark.slow
@pytest.mark.parametrize("name, shape", [("inception_v3", (299, 299, 3)), ("googlenet", (64, 64, 3))])
def test_auxiliary_heads_train(name, shape):
    """With ``aux_logits`` the auxiliary classifiers run in training and their logits come back in
    ``intermediates``; their parameters then receive gradients."""
    batch = 1 if name == "inception_v3" else 2
    model = create(name, num_classes=NUM_CLASSES, aux_logits=True)
    x = jax.random.normal(jax.random.key(7), (batch,) + shape)
    _, _, loss, _, updates, grads = _train_step(model, x, jnp.zeros((batch,), jnp.int32), ("batch_stats", "intermediates"))
    assert np.isfinite(float(loss))
    aux = updates["intermediates"]["aux_logits"]
    assert len(aux) == (1 if name == "inception_v3" else 2)
    heads = ["AuxLogits"] if name == "inception_v3" else ["aux1", "aux2"]
    for head in heads:
        assert float(optax.tree.norm(grads[head])) > 0
