"""cnn.train.optim against optax's own definitions; masks, freezing, schedules (accumulation: test_accumulation.py)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from cnn.train import optim

PARAMS = {
    "conv": {"kernel": jnp.linspace(-1.0, 1.0, 2 * 2 * 3 * 4).reshape(2, 2, 3, 4), "bias": jnp.linspace(0.1, 0.4, 4)},
    "norm": {"scale": jnp.full((4,), 1.5), "bias": jnp.full((4,), -0.5)},
    "head": {"fc": {"kernel": jnp.linspace(0.5, -0.5, 4 * 3).reshape(4, 3), "bias": jnp.zeros(3)}},
}


def grads(step):
    key = jax.random.PRNGKey(step)
    leaves, tree = jax.tree.flatten(PARAMS)
    return jax.tree.unflatten(tree, [jax.random.normal(jax.random.fold_in(key, i), x.shape) for i, x in enumerate(leaves)])


def run(tx, steps=4, params=PARAMS):
    state = tx.init(params)
    for step in range(steps):
        updates, state = tx.update(grads(step), state, params)
        params = optax.apply_updates(params, updates)
    return params


def config(**fields):
    base = dict(name="sgd", learning_rate=0.1, momentum=0.9, nesterov=False, weight_decay=0.0, schedule="constant")
    base.update(fields)
    return ml_collections.ConfigDict(base)


def build(**fields):
    return optim.build(config(**fields), steps_per_epoch=10, total_steps=100, global_batch=128)


def assert_trees_close(a, b, rtol=1e-6):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=rtol, atol=1e-7), a, b)


MASK = optim.decay_mask(PARAMS)


@pytest.mark.parametrize(
    "fields,reference",
    [
        (dict(name="sgd", momentum=0.9, nesterov=True, weight_decay=5e-4),
         optax.chain(optax.add_decayed_weights(5e-4, MASK), optax.sgd(0.1, momentum=0.9, nesterov=True))),
        (dict(name="sgd", momentum=0.0), optax.sgd(0.1)),
        (dict(name="adam", learning_rate=1e-3), optax.adam(1e-3)),
        (dict(name="adamw", learning_rate=1e-3, weight_decay=0.05), optax.adamw(1e-3, weight_decay=0.05, mask=MASK)),
        (dict(name="lamb", learning_rate=1e-3, weight_decay=0.01), optax.lamb(1e-3, weight_decay=0.01, mask=MASK)),
        (dict(name="lars", learning_rate=0.5, weight_decay=1e-4, momentum=0.9),
         optax.lars(0.5, weight_decay=1e-4, weight_decay_mask=MASK, trust_ratio_mask=MASK, momentum=0.9)),
    ],
)
def test_optimizers_match_optax(fields, reference):
    tx, _ = build(**fields)
    assert_trees_close(run(tx), run(reference))


def test_unknown_optimizer_and_schedule_are_errors():
    with pytest.raises(ValueError, match="optimizer.name='rmsprop'; expected one of sgd, adam"):
        build(name="rmsprop")
    with pytest.raises(ValueError, match="optimizer.schedule='linear'"):
        build(schedule="linear")


def test_schedules_match_optax():
    _, lr = build(schedule="warmup_cosine", warmup_epochs=1.0, end_lr_factor=0.01)
    reference = optax.warmup_cosine_decay_schedule(0.0, 0.1, 10, 100, 0.001)
    _, steps_lr = build(schedule="steps", boundaries_epochs=(3, 6), decay_factor=0.1)
    _, one_cycle = build(schedule="one_cycle")
    cycle_reference = optax.cosine_onecycle_schedule(100, 0.1)
    _, constant = build(schedule="constant", warmup_steps=5)
    for step in (0, 1, 5, 10, 29, 30, 59, 60, 99):
        assert float(lr(step)) == pytest.approx(float(reference(step)), rel=1e-6)
        assert float(steps_lr(step)) == pytest.approx(0.1 * (0.1 ** ((step >= 30) + (step >= 60))), rel=1e-6)
        assert float(one_cycle(step)) == pytest.approx(float(cycle_reference(step)), rel=1e-6)
        assert float(constant(step)) == pytest.approx(0.1 * min(step / 5, 1.0), rel=1e-6)


def test_linear_scaling_rule():
    _, lr = optim.build(config(lr_reference_batch=256), steps_per_epoch=10, total_steps=100, global_batch=1024)
    assert float(lr(0)) == pytest.approx(0.4)


def test_weight_decay_spares_biases_and_norm_parameters():
    tx, _ = build(name="sgd", momentum=0.0, weight_decay=0.1)
    zero = jax.tree.map(jnp.zeros_like, PARAMS)
    updates, _ = tx.update(zero, tx.init(PARAMS), PARAMS)
    new = optax.apply_updates(PARAMS, updates)
    np.testing.assert_allclose(new["conv"]["kernel"], PARAMS["conv"]["kernel"] * (1 - 0.1 * 0.1), rtol=1e-6)
    for path in (("conv", "bias"), ("norm", "scale"), ("norm", "bias"), ("head", "fc", "bias")):
        old, updated = PARAMS, new
        for key in path:
            old, updated = old[key], updated[key]
        np.testing.assert_array_equal(updated, old)


def test_frozen_parameters_do_not_move():
    frozen = lambda path: path.startswith("conv/") or "norm" in path  # noqa: E731  (model.freeze: cnn.train.transfer)
    tx, _ = optim.build(config(name="adam", learning_rate=1e-2), steps_per_epoch=10, total_steps=100, global_batch=128,
                        frozen=frozen)
    new = run(tx)
    np.testing.assert_array_equal(new["conv"]["kernel"], PARAMS["conv"]["kernel"])
    np.testing.assert_array_equal(new["norm"]["scale"], PARAMS["norm"]["scale"])
    assert not np.allclose(new["head"]["fc"]["kernel"], PARAMS["head"]["fc"]["kernel"])


def test_clipping_bounds_the_update():
    tx, _ = build(name="sgd", momentum=0.0, clip_norm=0.01)
    big = jax.tree.map(lambda x: 100.0 * jnp.ones_like(x), PARAMS)
    updates, _ = tx.update(big, tx.init(PARAMS), PARAMS)
    assert float(optax.tree.norm(updates)) == pytest.approx(0.1 * 0.01, rel=1e-5)
