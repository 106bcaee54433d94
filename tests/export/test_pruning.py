"""Magnitude pruning: masks against numpy, the Zhu & Gupta schedule against its formula, and the optax
transformation keeping pruned weights at zero while an optimizer trains."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnn.export import pruning


def toy_params(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "conv": {"kernel": jnp.asarray(rng.normal(size=(3, 3, 2, 4)), jnp.float32), "bias": jnp.asarray(rng.normal(size=4), jnp.float32)},
        "dense": {"kernel": jnp.asarray(3.0 * rng.normal(size=(8, 5)), jnp.float32), "bias": jnp.asarray(rng.normal(size=5), jnp.float32)},
    }


def test_global_masks_remove_the_smallest_weights_over_all_kernels():
    params = toy_params()
    masks = pruning.magnitude_masks(params, 0.75, scope="global")
    kernels = np.concatenate([np.abs(np.asarray(params[k]["kernel"])).ravel() for k in ("conv", "dense")])
    threshold = np.sort(kernels)[int(round(0.75 * kernels.size))]  # the smallest kept magnitude
    for layer in ("conv", "dense"):
        expected = np.abs(np.asarray(params[layer]["kernel"])) >= threshold
        np.testing.assert_array_equal(np.asarray(masks[layer]["kernel"]), expected)
        assert np.asarray(masks[layer]["bias"]).all()  # biases are never pruned
    report = pruning.layer_sparsity(pruning.apply_masks(params, masks))
    assert report["total"] == pytest.approx(0.75, abs=1 / kernels.size)
    assert report["dense/kernel"] < report["conv/kernel"]  # the dense weights are 3x larger: pruned less


def test_layer_masks_prune_every_kernel_alike():
    params = toy_params()
    report = pruning.layer_sparsity(pruning.apply_masks(params, pruning.magnitude_masks(params, 0.5, scope="layer")))
    assert report == {"conv/kernel": 0.5, "dense/kernel": 0.5, "total": 0.5}


def test_schedule_follows_zhu_and_gupta():
    schedule = pruning.parse_schedule("gradual(0.9, start=10, end=50, every=10, initial=0.1)")
    for step in (0, 10, 20, 35, 50, 80):
        progress = min(max((step - 10) / 40, 0.0), 1.0)
        assert float(schedule.sparsity(step)) == pytest.approx(0.9 + (0.1 - 0.9) * (1 - progress) ** 3, abs=1e-6)
    assert [int(s) for s in range(60) if schedule.updates_masks(s)] == [10, 20, 30, 40, 50]
    assert pruning.parse_schedule("oneshot(0.5, start=3, end=3)") == pruning.Schedule(0.5, start=3, end=3)


@pytest.mark.parametrize("text, message", [
    ("gradual(1.2)", "final=1.2"),
    ("gradual(0.5, start=9, end=3)", "start=9, end=3"),
    ("gradual(0.5, scope='rows')", "scope='rows'"),
    ("magnitude(0.5)", "expected e.g."),
    ("oneshot(0.5, end=100)", "oneshot prunes at one update"),
])
def test_bad_schedules_are_one_line(text, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        pruning.parse_schedule(text)
    assert "\n" not in str(error.value)


def test_the_transformation_prunes_on_schedule_and_keeps_pruned_weights_at_zero():
    params = toy_params()
    schedule = pruning.Schedule(0.8, start=2, end=8, every=2)
    tx = optax.chain(optax.sgd(0.05, momentum=0.9), pruning.prune(schedule))
    state = tx.init(params)
    target = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)  # gradients push every weight off zero

    @jax.jit
    def step(params, state):
        grads = jax.grad(lambda p: sum(jnp.sum((a - b) ** 2) for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(target))))(params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    seen = []
    for count in range(12):
        params, state = step(params, state)
        masks = state[-1].masks
        for layer in ("conv", "dense"):
            kernel, mask = np.asarray(params[layer]["kernel"]), np.asarray(masks[layer]["kernel"])
            assert (kernel[~mask] == 0).all()  # exactly zero where masked, whatever the optimizer wants
        seen.append(round(pruning.layer_sparsity(params)["total"], 3))
    kernels = 3 * 3 * 2 * 4 + 8 * 5
    expected = [round(round(float(schedule.sparsity(c)) * kernels) / kernels, 3) if schedule.updates_masks(c) else None for c in range(12)]
    current = 0.0
    for count, value in enumerate(seen):  # masks change only at updates 2, 4, 6, 8, then stay at 80%
        current = expected[count] if expected[count] is not None else current
        assert value == pytest.approx(current, abs=1e-3)
    assert seen[-1] == pytest.approx(0.8, abs=1 / kernels)
    assert int(state[-1].count) == 12
