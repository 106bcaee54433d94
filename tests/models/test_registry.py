"""Every model of ``cnn.models.names()``, so that adding a model (its file, its ``register`` line with its
parameter count, a row in docs/models.md) is tested without editing this file:

- the parameter count on record in the registry is the model's (at its registered input and classes);
- one training step at the smallest input it accepts (traced only, for the deeper members of a family whose
  blocks a lighter member trains; compiled for all with CNN_RUN_SLOW=1) (cross-entropy, ``value_and_grad`` with respect to
  the parameters, ``batch_stats`` mutable, a ``"dropout"`` rng driving dropout and stochastic depth):
  finite loss and gradients, a non-zero gradient for every parameter tensor, every BatchNorm's running
  statistics updated;
- ``num_classes=0`` returns pooled features ``[N, F]``;
- docs/models.md has a row naming it with its parameter count.

Variables are filled from their shapes (``jax.eval_shape``) with seeded numpy values instead of a jitted
``init``, and the step compiles with XLA's cheapest CPU options: the test checks that training works,
not its speed, and XLA's CPU compile time dominates otherwise.
"""

import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnn.models import create, entry, names
from compile_options import fast_compile_options  # tests/helpers

# XLA CPU: no backend optimisation and the classic emitters compile 3-8x faster on these graphs.
FAST_COMPILE = fast_compile_options()
NUM_CLASSES = 5  # for the family tests below
DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs" / "models.md"


def tiny_shape(name):
    """A small input the model accepts, without the batch axis: its registered size up to 32 pixels a side
    (parameters after a flatten depend on it), else 32 or its smallest side; 2 frames of 16 x 16 for clips,
    64 steps for sequences."""
    model_entry = entry(name)
    rank, channels = model_entry.spatial_rank, model_entry.input_shape[-1]
    if rank == 1:
        return (max(64, model_entry.min_size), channels)
    if rank == 3:
        return (2, 16, 16, channels)
    side = min(model_entry.input_shape[0], max(32, model_entry.min_size))
    return (side, side, channels)


def parameter_count(tree):
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))

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


def _check(params, batch_stats, loss, logits, updates, grads, batch, classes=None):
    assert logits.shape == (batch, classes or NUM_CLASSES)
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


# Deeper or wider members of a family, built of the blocks a lighter member already trains here: their step is
# traced (shapes, the gradient's structure, the count), not compiled; compiling them all runs with CNN_RUN_SLOW=1.
DEEPER = {  # deeper member: the lighter one that trains the same blocks here
    "resnet101": "resnet50", "resnet152": "resnet50", "resnext101_32x8d": "resnext50_32x4d",
    "wide_resnet50_2": "resnet50", "wide_resnet101_2": "resnet50", "resnet44_cifar": "resnet20_cifar",
    "resnet56_cifar": "resnet20_cifar", "resnet110_cifar": "resnet20_cifar", "preact_resnet50": "preact_resnet18",
    "densenet169": "densenet121", "densenet201": "densenet121", "efficientnet_b1": "efficientnet_b0",
    "efficientnet_b2": "efficientnet_b0", "efficientnet_b3": "efficientnet_b0", "convnext_small": "convnext_tiny",
    "vit_small_patch16_224": "vit_tiny_patch16_224", "mobilenet_v3_large": "mobilenet_v3_small", "vgg13": "vgg11",
    "vgg16": "vgg11", "vgg19": "vgg11", "vgg13_bn": "vgg11_bn", "vgg16_bn": "vgg11_bn", "vgg19_bn": "vgg11_bn",
}


def test_deeper_members_have_a_lighter_member_trained():
    assert set(DEEPER) <= set(names()), sorted(set(DEEPER) - set(names()))
    assert set(DEEPER.values()) <= set(names()) - set(DEEPER)


@pytest.mark.parametrize("name", [n for n in names() if n in DEEPER])
def test_deeper_members_trace_a_training_step_and_have_their_recorded_count(name):
    model_entry = entry(name)
    model = create(name, num_classes=model_entry.default_num_classes)
    batch = _batch(model)
    x = jax.ShapeDtypeStruct((batch,) + tiny_shape(name), jnp.float32)

    def step(inputs):
        variables = model.init(jax.random.key(0), inputs, train=False)

        def loss_fn(params):
            logits, updates = model.apply({**variables, "params": params}, inputs, train=True, mutable=["batch_stats"],
                                          rngs={"dropout": jax.random.key(1)})
            return optax.softmax_cross_entropy_with_integer_labels(logits, jnp.zeros(batch, jnp.int32)).mean(), updates

        (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables["params"])
        return variables, loss, updates, grads

    variables, loss, updates, grads = jax.eval_shape(step, x)
    assert loss.shape == () and jax.tree.structure(grads) == jax.tree.structure(variables["params"])
    assert jax.tree.structure(updates.get("batch_stats", {})) == jax.tree.structure(variables.get("batch_stats", {}))
    if "pos_embed" not in variables["params"]:
        assert parameter_count(variables["params"]) == model_entry.params


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in DEEPER else n for n in names()])
def test_every_model_trains_and_has_its_recorded_count(name):
    model_entry = entry(name)
    classes = model_entry.default_num_classes
    model = create(name, num_classes=classes)
    registered = model
    if getattr(model, "aux_logits", False):  # Inception-v3's auxiliary head trains at 299x299 only: see below
        model = model.clone(aux_logits=False)
    batch = _batch(model)
    x = jax.random.normal(jax.random.key(7), (batch,) + tiny_shape(name))
    params, batch_stats, loss, logits, updates, grads = _train_step(model, x, jnp.arange(batch) % classes)
    _check(params, batch_stats, loss, logits, updates, grads, batch, classes)
    if model is not registered or "pos_embed" in params:  # counted as registered: a ViT's position embedding
        native = jax.ShapeDtypeStruct((1,) + model_entry.input_shape, jnp.float32)  # has a row per patch
        params = jax.eval_shape(lambda inputs: registered.init(jax.random.key(0), inputs, train=False), native)["params"]
    assert parameter_count(params) == model_entry.params


@pytest.mark.parametrize("name", names())
def test_every_model_without_classes_returns_pooled_features(name):
    model = create(name, num_classes=0)
    x = jax.ShapeDtypeStruct((2,) + tiny_shape(name), jnp.float32)
    rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    features = jax.eval_shape(lambda inputs: model.init_with_output(rngs, inputs, train=False)[0], x)
    assert features.ndim == 2 and features.shape[0] == 2 and features.shape[1] > 0, features.shape


def test_every_model_has_a_row_in_the_zoo_table():
    rows = [line for line in DOCS.read_text().splitlines() if line.startswith("|")]
    missing = []
    for name in names():
        count = f"{entry(name).params:,}"
        if not any(re.search(rf"`{re.escape(name)}`", row) and count in row for row in rows):
            missing.append(f"{name} ({count})")
    assert not missing, f"docs/models.md has no table row with these models and their counts: {', '.join(missing)}"


def test_cnn1d_trains_on_tokens():
    model = create("cnn1d", num_classes=NUM_CLASSES, vocab_size=50, embed_dim=8, widths=(8, 16), drop_rate=0.5)
    tokens = jax.random.randint(jax.random.key(3), (2, 40), 0, 50)
    params, batch_stats, loss, logits, updates, grads = _train_step(model, tokens, jnp.arange(2))
    _check(params, batch_stats, loss, logits, updates, grads, 2)
    # Only the rows of tokens that occur get a gradient.
    rows = np.flatnonzero(np.any(np.asarray(grads["embed"]["embedding"]) != 0, axis=1))
    assert set(rows) == set(np.unique(np.asarray(tokens)))


@pytest.mark.parametrize("name, shape", [pytest.param("inception_v3", (299, 299, 3), marks=pytest.mark.slow),
                                         ("googlenet", (64, 64, 3))])
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
