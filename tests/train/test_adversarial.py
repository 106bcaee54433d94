"""Adversarial training (``training.adversarial``): the text of the attack is parsed or refused in one line;
the update trains on the attacked batch (a linear model against its closed form, normalisation undone);
PGD with restarts inside the step gives the same training under single, pmap and sharded (8 CPU devices,
cross-replica BatchNorm in the attack too); and a run trains end to end with it."""

import functools
import json

import jax
import numpy as np
import optax
import pytest
from flax import linen as nn

import cnn.models
from cnn.robust import parse_attack
from cnn.train.build import pixel_normalisation
from cnn.train.loop import train_and_evaluate
from cnn.train.parallel import Parallel
from cnn.train.state import create_train_state
from cnn.train.steps import StepOptions, one_hot_preprocess, train_step
from experiments.configs import mnist_simple_cnn


def test_attack_text_parses_with_defaults():
    pgd = parse_attack("pgd(eps=0.3, steps=7)")
    assert (pgd.name, pgd.eps, pgd.steps, pgd.restarts, pgd.norm, pgd.step_size) == ("pgd", 0.3, 7, 1, "linf", None)
    assert pgd.gradients_per_step == 7
    assert parse_attack("fgsm_rs(eps=0.3,step_size=0.375)").step_size == 0.375
    assert parse_attack("pgd(eps=0.5,norm=l2,restarts=2)").norm == "l2"
    assert parse_attack("") is None


@pytest.mark.parametrize("text,message", [
    ("pgd", "expected one of fgsm, fgsm_rs, pgd"),
    ("pgd(steps=7)", "eps is required"),
    ("pgd(eps=1.5)", "eps=1.5; expected a radius in (0, 1]"),
    ("pgd(eps=0.3,steps=0)", "steps=0; expected a whole number >= 1"),
    ("fgsm(eps=0.3,steps=3)", "'steps=3' is not a setting of fgsm"),
    ("pgd(eps=0.3,norm=l1)", "norm=l1; expected one of linf, l2"),
    ("pgd(eps=x)", "eps=x is not a number"),
])
def test_bad_attack_text_is_refused_in_one_line(text, message):
    with pytest.raises(ValueError, match=f"adversarial attack .*{__import__('re').escape(message)}"):
        parse_attack(text)


class Linear(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.Dense(3, name="head")(x.reshape(x.shape[0], -1))


def test_update_trains_on_the_fgsm_point_of_a_linear_model():
    """One SGD step with FGSM training equals, in numpy, the gradient step at x + eps sign(d loss / dx) with the
    dataset normalisation (pixels - mean) / std undone for the attack and applied again for the model."""
    rng = np.random.default_rng(0)
    images = rng.integers(20, 236, (6, 4, 4, 1), dtype=np.uint8)
    labels = rng.integers(0, 3, 6).astype(np.int32)
    mean, std, eps, lr = [100.0], [60.0], 0.05, 0.5
    preprocess = one_hot_preprocess(3, mean=mean, std=std)
    options = StepOptions(preprocess=preprocess, eval_preprocess=preprocess, adversarial=parse_attack(f"fgsm(eps={eps})"),
                          **pixel_normalisation(mean, std))
    state = create_train_state(Linear(), optax.sgd(lr), jax.random.PRNGKey(0), (4, 4, 1))
    new_state, metrics = jax.jit(functools.partial(train_step, options=options))(
        state, {"image": images, "label": labels}, state.rng)

    w = np.asarray(state.params["head"]["kernel"], np.float64)
    b = np.asarray(state.params["head"]["bias"], np.float64)
    onehot = np.eye(3)[labels]

    def forward(pixels):  # pixels in [0, 1] -> inputs, softmax
        inputs = ((pixels * 255.0 - mean[0]) / std[0]).reshape(6, -1)
        logits = inputs @ w + b
        p = np.exp(logits - logits.max(1, keepdims=True))
        return inputs, p / p.sum(1, keepdims=True)

    pixels = images.astype(np.float64) / 255.0
    _, p = forward(pixels)
    grad_pixels = ((p - onehot) @ w.T * 255.0 / std[0]).reshape(pixels.shape)
    attacked = np.clip(pixels + eps * np.sign(grad_pixels), 0.0, 1.0)
    inputs, p = forward(attacked)
    expected_w = w - lr * inputs.T @ (p - onehot) / 6
    np.testing.assert_allclose(new_state.params["head"]["kernel"], expected_w, rtol=1e-4, atol=1e-5)
    loss = -np.sum(onehot * np.log(p))
    assert float(metrics["loss_sum"]) == pytest.approx(loss, rel=1e-4)  # the metrics are of the attacked batch


def _tiny_resnet(axis_name=None):
    return cnn.models.create("resnet18_cifar", num_classes=10, stage_sizes=(1, 1), widths=(8, 16), stem_width=8,
                             axis_name=axis_name)


def _train(mode, batches):
    parallel = Parallel(mode)
    preprocess = one_hot_preprocess(10)
    options = StepOptions(preprocess=preprocess, eval_preprocess=preprocess, axis_name=parallel.axis_name,
                          adversarial=parse_attack("pgd(eps=0.1,steps=1,restarts=2)"), **pixel_normalisation(None, None))
    state = parallel.init(functools.partial(create_train_state, _tiny_resnet(parallel.model_axis_name), optax.sgd(0.1),
                                            input_shape=(16, 16, 3)), jax.random.PRNGKey(0))
    step = parallel.compile_train_step(functools.partial(train_step, options=options))
    losses = []
    for batch in batches:
        state, metrics = step(state, parallel.put_batch(batch), jax.random.PRNGKey(1))
        losses.append(float(parallel.fetch(metrics)["loss_sum"]))
    return jax.device_get(parallel.unreplicate(state)), losses


@pytest.mark.skipif(jax.device_count() < 8, reason="needs JAX_NUM_CPU_DEVICES=8 set before JAX starts")
def test_pgd_training_is_the_same_under_single_pmap_and_sharded():
    rng = np.random.default_rng(0)
    batches = [{"image": rng.integers(0, 256, (16, 16, 16, 3), dtype=np.uint8),
                "label": rng.integers(0, 10, 16).astype(np.int32)} for _ in range(1)]
    reference, reference_losses = _train("single", batches)
    for mode in ("pmap", "sharded"):
        state, losses = _train(mode, batches)
        np.testing.assert_allclose(losses, reference_losses, rtol=1e-5)
        for name in ("params", "batch_stats"):
            jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                         getattr(state, name), getattr(reference, name))
    # the attack changed the training: the clean step's loss differs
    clean = jax.jit(lambda s, b: train_step(s, b, jax.random.PRNGKey(1), options=StepOptions(
        preprocess=one_hot_preprocess(10), eval_preprocess=one_hot_preprocess(10))))
    start = create_train_state(_tiny_resnet(), optax.sgd(0.1), jax.random.PRNGKey(0), (16, 16, 3))
    assert float(clean(start, batches[0])[1]["loss_sum"]) < 0.99 * reference_losses[0]


def test_a_run_trains_adversarially_from_its_config(tmp_path):
    def first_train_loss(config, name):
        results = train_and_evaluate(config, str(tmp_path / name))
        assert results["steps"] == 6 and 0.0 <= results["test_accuracy"] <= 1.0
        return json.loads((tmp_path / name / "metrics.jsonl").read_text().splitlines()[0])["train_loss"]

    config = mnist_simple_cnn.get_config("smoke")
    config.data.normalize = "dataset"  # the attack undoes the normalisation, works in pixels, applies it again
    clean = first_train_loss(config, "clean")
    config.training.adversarial = "fgsm(eps=0.3)"
    assert first_train_loss(config, "fgsm") > clean + 0.1  # the same first steps, on attacked images
    config.training.adversarial = "pgd(eps=0.3,steps=0)"
    with pytest.raises(ValueError, match=r"training.adversarial='pgd\(eps=0.3,steps=0\)': adversarial attack"):
        train_and_evaluate(config, str(tmp_path / "bad"))
