"""single (jit), pmap and sharded jit give the same training on the same global batches (8 CPU devices)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import cnn.models
from cnn.train.parallel import Parallel
from cnn.train.state import create_train_state
from cnn.train.steps import StepOptions, one_hot_preprocess, train_step

NUM_CLASSES = 10
SHAPE = (16, 16, 3)

pytestmark = pytest.mark.skipif(jax.device_count() < 8, reason="needs JAX_NUM_CPU_DEVICES=8 set before JAX starts")


def tiny_resnet(axis_name=None):
    return cnn.models.create(
        "resnet18_cifar", num_classes=NUM_CLASSES, stage_sizes=(1, 1), widths=(8, 16), stem_width=8, axis_name=axis_name
    )


def batches(count, global_batch=16, seed=0):
    rng = np.random.default_rng(seed)
    return [
        {"image": rng.integers(0, 256, (global_batch, *SHAPE), dtype=np.uint8), "label": rng.integers(0, NUM_CLASSES, global_batch).astype(np.int32)}
        for _ in range(count)
    ]


def train(mode, data, per_device_batch_norm=False, keep_replicas=False):
    parallel = Parallel(mode, per_device_batch_norm=per_device_batch_norm)
    model = tiny_resnet(parallel.model_axis_name)
    tx = optax.sgd(0.1, momentum=0.9)
    preprocess = one_hot_preprocess(NUM_CLASSES)
    options = StepOptions(preprocess=preprocess, eval_preprocess=preprocess, axis_name=parallel.axis_name)
    state = parallel.init(functools.partial(create_train_state, model, tx, input_shape=SHAPE), jax.random.PRNGKey(0))
    step = parallel.compile_train_step(functools.partial(train_step, options=options))
    losses = []
    for batch in data:
        state, metrics = step(state, parallel.put_batch(batch), jax.random.PRNGKey(1))
        losses.append(float(parallel.fetch(metrics)["loss_sum"]))
    if keep_replicas:
        return jax.device_get(state), losses
    return jax.device_get(parallel.unreplicate(state)), losses


@pytest.fixture(scope="module")
def single_run():
    return train("single", batches(3))


@pytest.mark.parametrize("mode", ["pmap", "sharded"])
def test_modes_match_single_device(mode, single_run):
    reference, reference_losses = single_run
    state, losses = train(mode, batches(3))
    assert int(state.step) == 3
    np.testing.assert_allclose(losses, reference_losses, rtol=1e-5)
    for name in ("params", "batch_stats"):
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), getattr(state, name), getattr(reference, name)
        )
    # The parameters moved: equality is not two untouched initialisations.
    init = jax.device_get(jax.jit(lambda x: tiny_resnet().init(jax.random.split(jax.random.PRNGKey(0))[0], x, train=False))(np.zeros((1, *SHAPE))))
    assert not np.allclose(state.params["stem"]["conv"]["kernel"], init["params"]["stem"]["conv"]["kernel"])


def test_per_device_batch_norm_keeps_each_slice_statistics():
    data = batches(1)
    state, _ = train("pmap", data, per_device_batch_norm=True, keep_replicas=True)
    model = tiny_resnet()
    variables = jax.jit(lambda x: model.init(jax.random.split(jax.random.PRNGKey(0))[0], x, train=False))(np.zeros((1, *SHAPE)))
    images = np.asarray(data[0]["image"], np.float32) / 255.0
    devices = jax.local_device_count()
    slices = np.split(images, devices)
    forward = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))
    means = []
    for index, part in enumerate(slices):
        _, updated = forward(variables, part)
        expected = updated["batch_stats"]["stem"]["norm"]["mean"]
        np.testing.assert_allclose(state.batch_stats["stem"]["norm"]["mean"][index], expected, rtol=1e-5, atol=1e-7)
        means.append(expected)
    assert not np.allclose(means[0], means[1])  # the slices really differ
    # What evaluation and checkpoints read is the average over devices.
    parallel = Parallel("pmap", per_device_batch_norm=True)
    synced = jax.device_get(parallel.sync_batch_stats(jax.device_put(state)).batch_stats["stem"]["norm"]["mean"][0])
    np.testing.assert_allclose(synced, np.mean(means, axis=0), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("mode,batch", [("pmap", 12), ("sharded", 20), ("pmap", 0)])
def test_batch_the_devices_cannot_split_is_a_clear_error(mode, batch):
    with pytest.raises(ValueError, match=rf"training.batch_size={batch} cannot be split evenly over 8 devices"):
        Parallel(mode).check_batch(batch)


def test_unknown_mode_and_misused_per_device_norm():
    with pytest.raises(ValueError, match="expected one of single, pmap, sharded"):
        Parallel("data_parallel")
    with pytest.raises(ValueError, match="needs parallel='pmap'"):
        Parallel("sharded", per_device_batch_norm=True)


def test_steps_compile_with_the_options_given_and_none_by_default():
    from cnn.layers import cpu_kernels

    assert Parallel("single").compiler_options == {}
    options = cpu_kernels.compiler_options()
    assert Parallel("single", compiler_options=options).compiler_options == options
    # pmap takes no options itself: its steps are lowered and compiled with them, once per signature.
    step = Parallel("pmap", compiler_options=options).compile_train_step(lambda state, batch, rng: (state + batch.sum(), batch.mean()))
    state = jnp.zeros((jax.local_device_count(),))
    batch = jnp.ones((jax.local_device_count(), 3))
    for _ in range(2):
        state, _ = step(state, batch, jax.random.key(0))
    assert len(step._executables) == 1
    np.testing.assert_allclose(np.asarray(state), 6.0)


def test_float16_loss_scaling_under_pmap_skips_together_and_trains_like_one_device():
    """float16 with a dynamic loss scale under pmap: a non-finite gradient on one replica's slice makes every
    replica skip the step and halve the scale (the finiteness is decided after the pmean); a finite step
    gives the parameters of the same step on one device."""
    def run(mode, poison_row=None):
        parallel = Parallel(mode)
        model = cnn.models.create("simple_cnn", num_classes=NUM_CLASSES, widths=(4, 8), hidden=16, dtype=jnp.float16)
        preprocess = one_hot_preprocess(NUM_CLASSES)

        def poisoned(key, images, labels):
            x, targets = preprocess(key, images, labels)
            if poison_row is None:
                return x, targets
            rows = jnp.arange(x.shape[0]) + (jax.lax.axis_index("batch") * x.shape[0] if mode == "pmap" else 0)
            return jnp.where((rows == poison_row)[:, None, None, None], jnp.inf, x), targets

        options = StepOptions(preprocess=poisoned, eval_preprocess=preprocess, axis_name=parallel.axis_name,
                              compute_dtype=jnp.float16)
        init = functools.partial(create_train_state, model, optax.sgd(0.1), input_shape=SHAPE, loss_scale=True)
        state = parallel.init(init, jax.random.PRNGKey(0))
        old = jax.device_get(state)  # before the step, which donates the state
        step = parallel.compile_train_step(functools.partial(train_step, options=options))
        new, metrics = step(state, parallel.put_batch(batches(1)[0]), jax.random.PRNGKey(1))
        return old, jax.device_get(new), parallel.fetch(metrics)

    old, skipped, metrics = run("pmap", poison_row=13)  # a row on the seventh of eight devices
    assert float(metrics["skipped"]) == 1.0
    np.testing.assert_array_equal(skipped.dynamic_scale.scale, old.dynamic_scale.scale / 2)  # every replica
    jax.tree.map(np.testing.assert_array_equal, skipped.params, old.params)
    _, finite_pmap, metrics = run("pmap")
    _, finite_single, _ = run("single")
    assert float(metrics["skipped"]) == 0.0
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a[0], b, rtol=2e-3, atol=2e-4), finite_pmap.params,
                 finite_single.params)
    assert finite_pmap.params["fc2"]["kernel"].dtype == jnp.float32


def test_a_model_with_batch_norm_and_no_axis_name_is_refused_under_pmap(monkeypatch, tmp_path):
    """Cross-replica BatchNorm is not a silent contract: a registered model that keeps batch_stats but has
    no axis_name field would train with per-device statistics under pmap; the run refuses it."""
    from flax import linen as nn

    from cnn.layers import BatchNorm
    from cnn.models import registry
    from cnn.train import build
    from experiments.configs import mnist_simple_cnn

    class NoAxisName(nn.Module):
        num_classes: int = 10
        dtype: object = None

        @nn.compact
        def __call__(self, x, train):
            x = BatchNorm()(nn.Conv(4, (3, 3))(x), train=train)
            return nn.Dense(self.num_classes)(x.mean(axis=(1, 2)))

    monkeypatch.setitem(registry._REGISTRY, "no_axis_name", registry.ModelEntry(
        "no_axis_name", NoAxisName, (28, 28, 1), 10, 370, 1))
    monkeypatch.setenv("CNN_PREPARED_DIR", str(tmp_path / "prepared"))
    config = mnist_simple_cnn.get_config("smoke")
    config.model.name = "no_axis_name"
    config.parallel = "pmap"
    with pytest.raises(ValueError, match="model 'no_axis_name' keeps batch_stats but has no axis_name field"):
        build.build(config)
    config.training.per_device_batch_norm = True  # said out loud: then it is the user's choice
    assert build.build(config).parallel.per_device_batch_norm
