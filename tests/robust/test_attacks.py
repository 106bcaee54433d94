"""FGSM, FGSM with a random start and PGD: the analytic FGSM step on a linear classifier, the eps ball and the
pixel range, PGD at least as strong as FGSM, restarts keeping the worst point, targeted success, and robust
accuracy falling with eps to ~0 on a small trained model (no gradient masking)."""

import jax
import numpy as np
import pytest
from flax import linen as nn
from sklearn.datasets import load_digits

import cnn.models
import cnn.robust
from cnn.analysis.fit import fit_classifier

EPS = 0.1


class Linear(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.Dense(4, name="dense")(x.reshape((x.shape[0], -1)))


@pytest.fixture(scope="module")
def digits_model():
    """A small CNN fitted on scikit-learn's 8x8 digits (doubled to 16x16, in [0, 1]): ~95% on held-out digits."""
    data = load_digits()
    images = np.kron(data.images / 16.0, np.ones((2, 2)))[..., None].astype(np.float32)
    model = cnn.models.create("simple_cnn", num_classes=10, widths=(8, 16), hidden=32)
    fitted = fit_classifier(model, images[:1500], data.target[:1500], jax.random.key(0), steps=400, batch_size=64,
                            learning_rate=3e-3)
    logits_fn = jax.jit(lambda x: model.apply(fitted.variables, x, train=False))
    test_images, test_labels = images[1500:1756], data.target[1500:1756].astype(np.int32)
    assert np.mean(np.asarray(logits_fn(test_images)).argmax(-1) == test_labels) > 0.85
    return logits_fn, test_images, test_labels


def _loss(logits_fn, images, labels):
    return np.asarray(cnn.robust.cross_entropy(logits_fn(images), labels))


def test_fgsm_on_a_linear_classifier_is_the_analytic_step():
    model = Linear()
    rng = np.random.default_rng(0)
    images = rng.uniform(EPS, 1 - EPS, (6, 5, 5, 1)).astype(np.float32)  # the ball inside the pixel range
    labels = np.array([0, 1, 2, 3, 0, 1], np.int32)
    variables = model.init(jax.random.key(0), images)
    logits_fn = lambda x: model.apply(variables, x)
    weights = np.asarray(variables["params"]["dense"]["kernel"], np.float64)  # [25, 4]
    logits = images.reshape(6, -1) @ weights + np.asarray(variables["params"]["dense"]["bias"])
    softmax = np.exp(logits - logits.max(-1, keepdims=True))
    softmax /= softmax.sum(-1, keepdims=True)
    gradient = ((softmax - np.eye(4)[labels]) @ weights.T).reshape(images.shape)  # d CE / dx of a linear model
    expected = np.clip(images + EPS * np.sign(gradient), 0, 1)
    np.testing.assert_allclose(cnn.robust.fgsm(logits_fn, images, labels, eps=EPS), expected, rtol=1e-6)
    # The loss is convex in x: its maximum over the box is a vertex, FGSM's or (as the gradient turns) a nearby one.
    adversarial = cnn.robust.pgd(logits_fn, images, labels, jax.random.key(1), eps=EPS, step_size=EPS, steps=3)
    assert np.all(np.abs(np.abs(np.asarray(adversarial) - images) - EPS) < 1e-6)
    assert np.all(_loss(logits_fn, adversarial, labels) >= _loss(logits_fn, expected, labels) - 1e-6)


def test_every_attack_stays_in_the_ball_and_the_pixel_range(digits_model):
    logits_fn, images, labels = digits_model
    images, labels = images[:64], labels[:64]
    key = jax.random.key(0)
    attacks = {
        "fgsm": cnn.robust.fgsm(logits_fn, images, labels, eps=EPS),
        "fgsm_rs": cnn.robust.fgsm_rs(logits_fn, images, labels, key, eps=EPS),
        "pgd": cnn.robust.pgd(logits_fn, images, labels, key, eps=EPS, step_size=0.04, steps=5, restarts=2),
        "pgd_targeted": cnn.robust.pgd(logits_fn, images, (labels + 1) % 10, key, eps=EPS, step_size=0.04, steps=5,
                                       targeted=True),
    }
    for name, adversarial in attacks.items():
        adversarial = np.asarray(adversarial)
        assert adversarial.min() >= 0.0 and adversarial.max() <= 1.0, name
        assert np.abs(adversarial - images).max() <= EPS + 1e-6, name
        assert np.abs(adversarial - images).max() > EPS / 2, name  # it moved
    radius = 1.5
    l2 = np.asarray(cnn.robust.pgd(logits_fn, images, labels, key, eps=radius, step_size=0.5, steps=5, norm="l2"))
    norms = np.sqrt(np.sum((l2 - images) ** 2, axis=(1, 2, 3)))
    assert l2.min() >= 0.0 and l2.max() <= 1.0
    assert norms.max() <= radius * (1 + 1e-5) and np.median(norms) > radius / 2


def test_pgd_is_at_least_as_strong_as_fgsm(digits_model):
    logits_fn, images, labels = digits_model
    fgsm_loss = _loss(logits_fn, cnn.robust.fgsm(logits_fn, images, labels, eps=EPS), labels)
    key = jax.random.key(3)
    one = cnn.robust.pgd(logits_fn, images, labels, key, eps=EPS, step_size=0.025, steps=10)
    pgd_loss = _loss(logits_fn, one, labels)
    assert pgd_loss.mean() > fgsm_loss.mean() + 0.1
    assert np.mean(pgd_loss >= fgsm_loss - 1e-4) > 0.9
    # One key and the per-example keys it stands for draw the same starts.
    per_example = cnn.robust.pgd(logits_fn, images, labels, cnn.robust.example_keys(key, len(labels)), eps=EPS,
                                 step_size=0.025, steps=10)
    np.testing.assert_array_equal(per_example, one)
    # More restarts: more examples broken.
    three = cnn.robust.pgd(logits_fn, images, labels, key, eps=EPS, step_size=0.025, steps=10, restarts=3)
    wrong = lambda x: np.mean(np.asarray(logits_fn(x)).argmax(-1) != labels)
    assert wrong(three) >= wrong(one)


def test_restarts_keep_each_example_worst_start(digits_model):
    """With no steps, PGD returns, per example, the worst of its random starts: restart r of example n is
    uniform in the ball from ``fold_in(example_keys(key)[n], r)``; a misclassified start first, then the highest loss."""
    logits_fn, images, labels = digits_model
    images, labels = images[:64], labels[:64]
    key, restarts, eps = jax.random.key(5), 4, 0.3
    starts = np.stack([np.clip(images + np.asarray(jax.vmap(lambda k: jax.random.uniform(
        jax.random.fold_in(k, r), images.shape[1:], minval=-eps, maxval=eps))(cnn.robust.example_keys(key, 64))), 0, 1)
        for r in range(restarts)])  # [R, N, ...]
    losses = np.stack([_loss(logits_fn, start, labels) for start in starts])
    wrong = np.stack([np.asarray(logits_fn(start)).argmax(-1) != labels for start in starts])
    choice = np.argmax(np.where(wrong, 1e6, 0.0) + losses, axis=0)
    expected = starts[choice, np.arange(64)]
    assert len(set(choice)) > 1  # the choice is not always the same restart
    kept = cnn.robust.pgd(logits_fn, images, labels, key, eps=eps, step_size=0.1, steps=0, restarts=restarts)
    np.testing.assert_allclose(kept, expected, atol=1e-6)


def test_targeted_pgd_reaches_the_target(digits_model):
    logits_fn, images, labels = digits_model
    targets = (labels + 3) % 10
    # At eps 0.5 every digit can be drawn over (at 0.3, ~89% of the targets are reached with this small CNN).
    adversarial = cnn.robust.pgd(logits_fn, images, targets, jax.random.key(0), eps=0.5, step_size=0.05, steps=20,
                                 targeted=True)
    assert np.mean(np.asarray(logits_fn(adversarial)).argmax(-1) == targets) >= 0.98


def test_robust_accuracy_falls_with_eps_to_zero(digits_model):
    logits_fn, images, labels = digits_model
    radii = [0.0, 0.05, 0.1, 0.2, 0.3]
    batches = [(images[:128], labels[:128]), (images[128:], labels[128:])]
    pgd = cnn.robust.robust_accuracy(logits_fn, batches, jax.random.key(0), eps=radii, steps=10)
    fgsm = cnn.robust.robust_accuracy(logits_fn, batches, jax.random.key(0), eps=radii, attack="fgsm")
    clean = np.mean(np.asarray(logits_fn(images)).argmax(-1) == labels)
    for result in (pgd, fgsm):
        assert result["examples"] == len(labels) and result["clean"] == pytest.approx(clean)
        curve = [result["robust"][r] for r in radii]
        assert curve[0] == pytest.approx(clean)
        assert all(a >= b for a, b in zip(curve, curve[1:])), curve
    assert pgd["robust"][0.3] <= 0.02  # ~0: the gradient leads somewhere (no masking)
    assert all(pgd["robust"][r] <= fgsm["robust"][r] for r in radii)
    # uint8 batches are read as pixels / 255.
    as_bytes = [(np.round(images[:128] * 255).astype(np.uint8), labels[:128])]
    assert cnn.robust.robust_accuracy(logits_fn, as_bytes, jax.random.key(0), eps=[0.0], attack="fgsm")["clean"] > 0.85


def test_bad_arguments_are_one_line_errors():
    logits_fn = lambda x: x.reshape((x.shape[0], -1))[:, :3]
    images, labels = np.zeros((2, 4, 4, 1), np.float32), np.zeros(2, np.int32)
    with pytest.raises(ValueError, match="^norm='l1'; expected one of linf, l2$"):
        cnn.robust.pgd(logits_fn, images, labels, jax.random.key(0), eps=0.1, step_size=0.1, steps=1, norm="l1")
    with pytest.raises(ValueError, match="^eps=-0.1; expected a radius >= 0$"):
        cnn.robust.fgsm(logits_fn, images, labels, eps=-0.1)
    with pytest.raises(ValueError, match="^key holds 3 per-example keys for 2 images"):
        cnn.robust.pgd(logits_fn, images, labels, jax.random.split(jax.random.key(0), 3), eps=0.1, step_size=0.1, steps=1)
    with pytest.raises(ValueError, match="^attack='cw'; expected one of fgsm, pgd$"):
        cnn.robust.robust_accuracy(logits_fn, [(images, labels)], jax.random.key(0), eps=[0.1], attack="cw")
