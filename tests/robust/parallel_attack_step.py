"""An adversarial train step (PGD with restarts, or FGSM with a random start) under ``jax.jit`` on one device,
``jax.pmap`` over 8 and ``jax.jit`` over an 8-device mesh: the same adversarial images and the same
parameters afterwards. Run as a script with ``JAX_NUM_CPU_DEVICES=8`` set before JAX starts (the test
``test_parallel.py`` does); it exits non-zero on a mismatch."""

import os

os.environ.setdefault("JAX_NUM_CPU_DEVICES", "8")  # before JAX starts

import functools  # noqa: E402
import sys  # noqa: E402

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import cnn.robust

DEVICES, PER_DEVICE = 8, 2


class Tiny(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.Conv(4, (3, 3), name="conv")(x))
        return nn.Dense(3, name="head")(jnp.mean(x, axis=(1, 2)))


MODEL = Tiny()
ATTACKS = {
    "pgd": functools.partial(cnn.robust.pgd, eps=0.1, step_size=0.04, steps=3, restarts=2),
    "fgsm_rs": functools.partial(cnn.robust.fgsm_rs, eps=0.1),
}


def train_step(params, images, labels, keys, *, attack, axis_name=None):
    """Attack the batch with the current parameters, then one SGD step on the adversarial images."""
    logits_fn = lambda x: MODEL.apply({"params": params}, x)
    adversarial = ATTACKS[attack](logits_fn, images, labels, keys)

    def loss(p):
        logits = MODEL.apply({"params": p}, adversarial)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))

    grads = jax.grad(loss)(params)
    if axis_name is not None:
        grads = jax.lax.pmean(grads, axis_name)
    return jax.tree.map(lambda p, g: p - 0.5 * g, params, grads), adversarial


def main() -> int:
    assert jax.device_count() == DEVICES, f"{jax.device_count()} devices; run with JAX_NUM_CPU_DEVICES={DEVICES}"
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (DEVICES * PER_DEVICE, 8, 8, 1)).astype(np.float32)
    labels = rng.integers(0, 3, DEVICES * PER_DEVICE).astype(np.int32)
    params = MODEL.init(jax.random.key(0), images[:1])["params"]
    key = jax.random.key(1)
    failures = []
    for attack in ATTACKS:
        single = jax.jit(functools.partial(train_step, attack=attack))(params, images, labels, key)

        def pmapped_step(params, images, labels, key):
            offset = jax.lax.axis_index("batch") * PER_DEVICE  # this device's rows of the global batch
            keys = cnn.robust.example_keys(key, PER_DEVICE, offset=offset)
            return train_step(params, images, labels, keys, attack=attack, axis_name="batch")

        split = lambda x: x.reshape(DEVICES, PER_DEVICE, *x.shape[1:])
        new_params, adversarial = jax.pmap(pmapped_step, axis_name="batch", in_axes=(None, 0, 0, None))(
            params, split(images), split(labels), key)
        pmapped = (jax.tree.map(lambda x: x[0], new_params), adversarial.reshape(images.shape))

        mesh = Mesh(np.asarray(jax.devices()), ("data",))
        rows, replicated = NamedSharding(mesh, PartitionSpec("data")), NamedSharding(mesh, PartitionSpec())
        sharded = jax.jit(functools.partial(train_step, attack=attack), in_shardings=(replicated, rows, rows, replicated),
                          out_shardings=(replicated, rows))(params, images, labels, key)

        for mode, (mode_params, mode_adversarial) in (("pmap", pmapped), ("sharded", sharded)):
            try:
                np.testing.assert_allclose(np.asarray(mode_adversarial), np.asarray(single[1]), rtol=0, atol=1e-6)
                jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), mode_params, single[0])
            except AssertionError as error:
                failures.append(f"{attack} under {mode} differs from one device: {error}")
        moved = np.abs(np.asarray(single[1]) - images).max()
        if not 0.05 < moved <= 0.1 + 1e-6:
            failures.append(f"{attack}: largest perturbation {moved}, expected in (0.05, 0.1]")
    print("\n".join(failures) or f"pgd and fgsm_rs train steps agree under jit, pmap and sharded on {DEVICES} devices")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
