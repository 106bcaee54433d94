"""train_step and eval_step: losses, metrics, label smoothing, EMA, float16 loss scaling."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import cnn.models
from cnn.train.state import create_train_state
from cnn.train.steps import StepOptions, correct_top_k, cross_entropy, eval_step, one_hot_preprocess, summarise, train_step


def test_cross_entropy_and_label_smoothing():
    logits = jnp.array([[2.0, 0.0, -1.0]])
    targets = jax.nn.one_hot(jnp.array([0]), 3)
    log_probs = jax.nn.log_softmax(logits)
    assert float(cross_entropy(logits, targets)[0]) == pytest.approx(-float(log_probs[0, 0]), rel=1e-6)
    smoothed = (1 - 0.3) * targets + 0.3 / 3
    assert float(cross_entropy(logits, targets, 0.3)[0]) == pytest.approx(-float(jnp.sum(smoothed * log_probs)), rel=1e-6)


def test_top_k():
    logits = jnp.array([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05]])
    np.testing.assert_array_equal(correct_top_k(logits, jnp.array([2, 0]), 1), [0.0, 1.0])
    np.testing.assert_array_equal(correct_top_k(logits, jnp.array([2, 1]), 2), [1.0, 1.0])


def make_state(dtype=jnp.float32, **kwargs):
    model = cnn.models.create("simple_cnn", num_classes=10, dtype=dtype)
    init = functools.partial(create_train_state, model, optax.sgd(0.05), input_shape=(28, 28, 1), **kwargs)
    return jax.jit(init)(jax.random.PRNGKey(0))


def batch(size=8, seed=0):
    rng = np.random.default_rng(seed)
    return {"image": rng.integers(0, 256, (size, 28, 28, 1), dtype=np.uint8), "label": rng.integers(0, 10, size).astype(np.int32)}


def test_train_step_lowers_the_loss_and_counts_examples():
    options = StepOptions(preprocess=one_hot_preprocess(10), eval_preprocess=one_hot_preprocess(10))
    step = jax.jit(functools.partial(train_step, options=options))
    state, data = make_state(), batch()
    losses = []
    for _ in range(5):
        state, metrics = step(state, data, jax.random.PRNGKey(1))
        losses.append(summarise(jax.device_get(metrics))["loss"])
    assert losses[-1] < losses[0]
    assert int(state.step) == 5
    assert float(metrics["examples"]) == 8
    evaluated = summarise(jax.device_get(eval_step(state, {**data, "mask": np.array([True] * 6 + [False] * 2)}, options=options)))
    assert evaluated["examples"] == 6


def test_eval_mask_excludes_padding():
    options = StepOptions(preprocess=one_hot_preprocess(10), eval_preprocess=one_hot_preprocess(10))
    state, data = make_state(), batch(4)
    full = jax.device_get(eval_step(state, {k: v[:3] for k, v in data.items()}, options=options))
    padded = {**data, "mask": np.array([True, True, True, False])}
    padded["image"] = padded["image"].copy()
    padded["image"][3] = 255  # garbage in the padded row changes nothing
    masked = jax.device_get(eval_step(state, padded, options=options))
    for key in ("loss_sum", "top1_sum", "examples"):
        assert float(masked[key]) == pytest.approx(float(full[key]), rel=1e-6)


def test_ema_tracks_params():
    options = StepOptions(preprocess=one_hot_preprocess(10), eval_preprocess=one_hot_preprocess(10), ema_decay=0.5)
    state = make_state(ema=True)
    new, _ = jax.jit(functools.partial(train_step, options=options))(state, batch(), jax.random.PRNGKey(1))
    expected = jax.tree.map(lambda e, p: 0.5 * e + 0.5 * p, state.ema_params, new.params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), new.ema_params, expected)


def test_float16_skips_a_non_finite_step_and_lowers_the_scale():
    def poisoned(key, images, labels):
        x, targets = one_hot_preprocess(10)(key, images, labels)
        return x * jnp.inf, targets

    options = StepOptions(preprocess=poisoned, eval_preprocess=one_hot_preprocess(10), compute_dtype=jnp.float16)
    state = make_state(dtype=jnp.float16, loss_scale=True)
    scale = float(state.dynamic_scale.scale)
    new, metrics = jax.jit(functools.partial(train_step, options=options))(state, batch(), jax.random.PRNGKey(1))
    assert float(metrics["skipped"]) == 1.0
    assert float(new.dynamic_scale.scale) == scale / 2
    jax.tree.map(np.testing.assert_array_equal, new.params, state.params)
    jax.tree.map(np.testing.assert_array_equal, new.opt_state, state.opt_state)

    options = StepOptions(preprocess=one_hot_preprocess(10), eval_preprocess=one_hot_preprocess(10), compute_dtype=jnp.float16)
    good, metrics = jax.jit(functools.partial(train_step, options=options))(state, batch(), jax.random.PRNGKey(1))
    assert float(metrics["skipped"]) == 0.0
    assert not np.allclose(good.params["fc2"]["kernel"], state.params["fc2"]["kernel"])
    assert good.params["fc2"]["kernel"].dtype == jnp.float32  # params stay float32 under float16 compute


def test_a_runs_step_keys_come_from_its_state(tmp_path, monkeypatch):
    """The loop passes ``state.rng`` to every step: the same run with another key in its state draws other
    dropout masks (and the same key, the same ones)."""
    from cnn.train import build, loop
    from experiments.configs import mnist_simple_cnn

    monkeypatch.setenv("CNN_PREPARED_DIR", str(tmp_path / "prepared"))
    config = mnist_simple_cnn.get_config("smoke")
    config.model.overrides.drop_rate = 0.5
    config.training.steps = 3
    final, created = {}, build.create_train_state
    for name, key in (("as_created", None), ("other_key", 7), ("as_created_again", None)):

        def with_key(*args, key=key, **kwargs):
            state = created(*args, **kwargs)
            return state if key is None else state.replace(rng=jax.random.PRNGKey(key))

        monkeypatch.setattr(build, "create_train_state", with_key)
        final[name] = loop.train_and_evaluate(config, tmp_path / name)["test_loss"]
    assert final["as_created"] == final["as_created_again"]
    assert final["as_created"] != final["other_key"]


def test_bfloat16_training_tracks_float32_and_keeps_float32_parameters():
    """20 steps of the same data in bfloat16 compute: the loss stays within a few percent of float32's, the
    parameters and optimizer state stay float32, and bfloat16 really ran (the losses are not identical)."""
    options = {dtype: StepOptions(preprocess=one_hot_preprocess(10), eval_preprocess=one_hot_preprocess(10),
                                  compute_dtype=dtype) for dtype in (jnp.float32, jnp.bfloat16)}
    losses = {}
    for dtype, option in options.items():
        state, step = make_state(dtype), jax.jit(functools.partial(train_step, options=option))
        for i in range(20):
            state, metrics = step(state, batch(16, seed=i % 4), state.rng)
        losses[dtype] = summarise(jax.device_get(metrics))["loss"]
        assert {leaf.dtype for leaf in jax.tree.leaves((state.params, state.opt_state))} <= {jnp.dtype(jnp.float32),
                                                                                              jnp.dtype(jnp.int32)}
    assert losses[jnp.bfloat16] == pytest.approx(losses[jnp.float32], rel=0.05)
    assert losses[jnp.bfloat16] != losses[jnp.float32]
