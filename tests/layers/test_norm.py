"""BatchNorm against ``torch.nn.BatchNorm{1,2,3}d``: train and eval outputs, running statistics
(PyTorch's ``momentum=0.1`` is our 0.9), float32 statistics under bfloat16, cross-replica statistics.

The reference runs in float64 on the same float32 values; tolerances are 1e-5 relative.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn.layers import BatchNorm

FEATURES = 5
# Input shapes [N, *spatial, C] for BatchNorm1d ([N, C] and [N, L, C]), 2d and 3d.
SHAPES = {"1d_flat": (16, FEATURES), "1d": (4, 7, FEATURES), "2d": (3, 6, 5, FEATURES), "3d": (2, 4, 3, 5, FEATURES)}


def _torch_norm(torch, ndim, momentum=0.1):
    cls = {2: torch.nn.BatchNorm1d, 3: torch.nn.BatchNorm1d, 4: torch.nn.BatchNorm2d, 5: torch.nn.BatchNorm3d}[ndim]
    return cls(FEATURES, eps=1e-5, momentum=momentum).double()


def _to_torch(torch, x):
    return torch.from_numpy(np.moveaxis(np.asarray(x, np.float64), -1, 1).copy())


def _from_torch(tensor):
    return np.moveaxis(tensor.detach().numpy(), 1, -1)


def _batch(rng, shape):
    """Per-feature offsets and spreads far from 0 and 1, so that a wrong axis or a missing scale shows."""
    offset = rng.uniform(-3, 3, size=shape[-1])
    spread = rng.uniform(0.5, 4, size=shape[-1])
    return (offset + spread * rng.normal(size=shape)).astype(np.float32)


def _affine(rng):
    return {"scale": jnp.asarray(rng.uniform(0.5, 2, FEATURES), jnp.float32),
            "bias": jnp.asarray(rng.normal(size=FEATURES), jnp.float32)}


def _copy_affine(torch, norm, params):
    with torch.no_grad():
        norm.weight.copy_(torch.from_numpy(np.asarray(params["scale"], np.float64)))
        norm.bias.copy_(torch.from_numpy(np.asarray(params["bias"], np.float64)))


@pytest.mark.parametrize("kind", sorted(SHAPES))
def test_train_output_and_running_statistics_match_torch(torch, assert_close, kind):
    """Three train steps on different batches: every output and the running statistics after each step."""
    shape = SHAPES[kind]
    rng = np.random.default_rng(len(shape))
    layer = BatchNorm()
    params = _affine(rng)
    batch_stats = layer.init(jax.random.key(0), jnp.zeros(shape), train=False)["batch_stats"]
    reference = _torch_norm(torch, len(shape)).train()
    _copy_affine(torch, reference, params)
    for _ in range(3):
        x = _batch(rng, shape)
        ours, updates = layer.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                                    mutable=["batch_stats"])
        batch_stats = updates["batch_stats"]
        assert_close(ours, _from_torch(reference(_to_torch(torch, x))), rtol=1e-5)
        assert_close(batch_stats["mean"], reference.running_mean.numpy(), rtol=1e-5)
        assert_close(batch_stats["var"], reference.running_var.numpy(), rtol=1e-5)


@pytest.mark.parametrize("kind", sorted(SHAPES))
def test_eval_output_matches_torch(torch, assert_close, kind):
    shape = SHAPES[kind]
    rng = np.random.default_rng(10 + len(shape))
    params = _affine(rng)
    batch_stats = {"mean": jnp.asarray(rng.normal(size=FEATURES), jnp.float32),
                   "var": jnp.asarray(rng.uniform(0.1, 5, FEATURES), jnp.float32)}
    x = _batch(rng, shape)
    ours = BatchNorm().apply({"params": params, "batch_stats": batch_stats}, x, train=False)

    reference = _torch_norm(torch, len(shape)).eval()
    _copy_affine(torch, reference, params)
    reference.running_mean.copy_(torch.from_numpy(np.asarray(batch_stats["mean"], np.float64)))
    reference.running_var.copy_(torch.from_numpy(np.asarray(batch_stats["var"], np.float64)))
    assert_close(ours, _from_torch(reference(_to_torch(torch, x))), rtol=1e-5)


def test_custom_momentum_and_epsilon_match_torch(torch, assert_close):
    """Ours ``momentum=m`` is PyTorch's ``1 - m``; a large epsilon must reach the normalisation."""
    shape = SHAPES["2d"]
    rng = np.random.default_rng(20)
    x = _batch(rng, shape)
    layer = BatchNorm(momentum=0.7, epsilon=0.5)
    variables = layer.init(jax.random.key(0), x, train=False)
    ours, updates = layer.apply(variables, x, train=True, mutable=["batch_stats"])
    reference = torch.nn.BatchNorm2d(FEATURES, eps=0.5, momentum=0.3).double().train()
    assert_close(ours, _from_torch(reference(_to_torch(torch, x))), rtol=1e-5)
    assert_close(updates["batch_stats"]["mean"], reference.running_mean.numpy(), rtol=1e-5)
    assert_close(updates["batch_stats"]["var"], reference.running_var.numpy(), rtol=1e-5)


def test_biased_running_variance_option(assert_close):
    x = _batch(np.random.default_rng(21), (4, 3, FEATURES))
    layer = BatchNorm(momentum=0.0, unbiased_running_var=False)  # momentum 0: running stats = batch stats
    variables = layer.init(jax.random.key(0), x, train=False)
    _, updates = layer.apply(variables, x, train=True, mutable=["batch_stats"])
    data = x.astype(np.float64).reshape(-1, FEATURES)
    assert_close(updates["batch_stats"]["mean"], data.mean(axis=0), rtol=1e-5)
    assert_close(updates["batch_stats"]["var"], data.var(axis=0, ddof=0), rtol=1e-5)


def test_init_and_eval_leave_statistics_alone():
    x = _batch(np.random.default_rng(22), SHAPES["2d"])
    layer = BatchNorm()
    variables = layer.init(jax.random.key(0), x, train=True)
    np.testing.assert_array_equal(variables["batch_stats"]["mean"], np.zeros(FEATURES))
    np.testing.assert_array_equal(variables["batch_stats"]["var"], np.ones(FEATURES))
    _, updates = layer.apply(variables, x, train=False, mutable=["batch_stats"])
    np.testing.assert_array_equal(updates["batch_stats"]["mean"], np.zeros(FEATURES))
    np.testing.assert_array_equal(updates["batch_stats"]["var"], np.ones(FEATURES))


def test_zero_init_starts_the_scale_at_zero():
    x = _batch(np.random.default_rng(23), SHAPES["2d"])
    variables = BatchNorm(zero_init=True).init(jax.random.key(0), x, train=False)
    np.testing.assert_array_equal(variables["params"]["scale"], np.zeros(FEATURES))
    out, _ = BatchNorm(zero_init=True).apply(variables, x, train=True, mutable=["batch_stats"])
    np.testing.assert_array_equal(out, np.zeros(x.shape))
    default = BatchNorm().init(jax.random.key(0), x, train=False)
    np.testing.assert_array_equal(default["params"]["scale"], np.ones(FEATURES))


def test_bfloat16_compute_keeps_float32_statistics(assert_close):
    """bfloat16 activations far from zero: statistics accumulated in bfloat16 would be off by percents.

    The values are exactly representable in bfloat16, so the float64 statistics of the bfloat16 input
    are the exact reference for float32 statistics.
    """
    rng = np.random.default_rng(24)
    x = jnp.asarray(300 + 20 * rng.normal(size=(64, 4, 4, FEATURES)), jnp.bfloat16)
    layer = BatchNorm(momentum=0.0)  # the running statistics become this batch's
    variables = layer.init(jax.random.key(0), x, train=False)
    out, updates = layer.apply(variables, x, train=True, mutable=["batch_stats"])
    assert out.dtype == jnp.bfloat16
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(updates)} == {jnp.dtype(jnp.float32)}
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(variables["params"])} == {jnp.dtype(jnp.float32)}

    data = np.asarray(x, np.float64).reshape(-1, FEATURES)
    assert_close(updates["batch_stats"]["mean"], data.mean(axis=0), rtol=1e-6)
    assert_close(updates["batch_stats"]["var"], data.var(axis=0, ddof=1), rtol=1e-5)
    normalised = (data - data.mean(axis=0)) / np.sqrt(data.var(axis=0) + 1e-5)
    # The output is rounded once to bfloat16 (8 significant bits): relative error at most 2^-8.
    np.testing.assert_allclose(np.asarray(out, np.float64).reshape(-1, FEATURES), normalised, rtol=2**-8, atol=2**-8)


def test_dtype_sets_the_output_dtype():
    x = jnp.ones((4, FEATURES), jnp.float32)
    layer = BatchNorm(dtype=jnp.bfloat16)
    out = layer.apply(layer.init(jax.random.key(0), x, train=False), x, train=False)
    assert out.dtype == jnp.bfloat16


def _sharded_vs_global(map_fn, shards, assert_close):
    """Cross-replica BatchNorm over ``shards`` shards equals BatchNorm over the whole batch."""
    rng = np.random.default_rng(25)
    x = _batch(rng, (shards * 3, 4, 4, FEATURES))
    params = _affine(rng)
    batch_stats = BatchNorm().init(jax.random.key(0), x, train=False)["batch_stats"]

    def step(layer, inputs):
        return layer.apply({"params": params, "batch_stats": batch_stats}, inputs, train=True, mutable=["batch_stats"])

    expected, expected_updates = step(BatchNorm(), x)
    sharded = map_fn(functools.partial(step, BatchNorm(axis_name="batch")), axis_name="batch")
    out, updates = sharded(x.reshape((shards, 3) + x.shape[1:]))
    assert_close(np.asarray(out).reshape(x.shape), expected, rtol=1e-5)
    for name in ("mean", "var"):  # every replica holds the global statistics (unbiased with the global count)
        for replica in range(shards):
            assert_close(updates["batch_stats"][name][replica], expected_updates["batch_stats"][name], rtol=1e-5)
    # Without axis_name each shard normalises by its own statistics: the comparison above can fail.
    local, _ = map_fn(functools.partial(step, BatchNorm()), axis_name="batch")(x.reshape((shards, 3) + x.shape[1:]))
    assert not np.allclose(np.asarray(local).reshape(x.shape), expected, atol=1e-3)


def test_axis_name_gives_global_statistics_under_vmap(assert_close):
    _sharded_vs_global(jax.vmap, 4, assert_close)


def test_axis_name_gives_global_statistics_under_pmap(assert_close):
    if jax.local_device_count() < 2:
        pytest.skip("needs several devices: run with JAX_NUM_CPU_DEVICES=8")
    _sharded_vs_global(jax.pmap, jax.local_device_count(), assert_close)
