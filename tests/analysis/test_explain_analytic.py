"""Explanations on models whose answer is known: a linear model's gradient is its weight row, integrated
gradients add up to f(x) - f(baseline), Grad-CAM lights up what the last feature map sees, occlusion of
a model that reads one pixel; and PAIR's ``saliency`` package (numpy, one example at a time) as the
independent reference for the gradient, integrated-gradient, Grad-CAM and occlusion formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

import cnn.analysis
import cnn.models
from cnn.analysis import gradcam

SHAPE = (16, 16, 2)


class Linear(nn.Module):
    """``logits = flatten(x) @ W + b``: every method has a closed form."""

    @nn.compact
    def __call__(self, x, train: bool):
        return nn.Dense(3, name="dense")(x.reshape((x.shape[0], -1)))


class Blob(nn.Module):
    """A fixed 3x3 box filter (the feature map ``A`` is known), ReLU, global mean, a linear head.

    ``stride`` 1 keeps the map at input resolution; 4 makes Grad-CAM resize it.
    """

    stride: int = 1

    @nn.compact
    def __call__(self, x, train: bool):
        features = nn.Conv(1, (3, 3), strides=self.stride, padding="SAME", use_bias=False,
                           kernel_init=nn.initializers.constant(1.0 / 9), name="features")(x)
        pooled = jnp.mean(nn.relu(features), axis=(1, 2))
        return nn.Dense(2, use_bias=False, kernel_init=lambda *_: jnp.array([[1.0, -1.0]]), name="head")(pooled)


class Small(nn.Module):
    """A small non-linear CNN with a named mid-level feature map."""

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.tanh(nn.Conv(4, (3, 3), name="conv1")(x))
        x = nn.relu(nn.Conv(6, (3, 3), name="conv2")(x))
        return nn.Dense(3, name="head")(jnp.mean(x, axis=(1, 2)))


def _init(model, shape=SHAPE, seed=0):
    return model.init(jax.random.key(seed), jnp.zeros((1, *shape)), train=False)


def _images(count=3, shape=SHAPE, seed=1):
    return jax.random.uniform(jax.random.key(seed), (count, *shape))


def test_gradient_methods_on_a_linear_model_are_closed_forms():
    model = Linear()
    variables = _init(model)
    weights = np.asarray(variables["params"]["dense"]["kernel"])  # [H*W*C, 3]
    images = _images()
    row = weights[:, 2].reshape(SHAPE)
    np.testing.assert_allclose(cnn.analysis.vanilla_gradients(model, variables, images, target=2), np.broadcast_to(row, images.shape), rtol=1e-6)
    # A constant gradient: SmoothGrad's noise changes nothing; integrated gradients are (x - baseline) * w.
    np.testing.assert_allclose(cnn.analysis.smoothgrad(model, variables, images, jax.random.key(0), target=2, samples=4),
                               np.broadcast_to(row, images.shape), rtol=1e-5, atol=1e-7)
    baseline = 0.5
    np.testing.assert_allclose(cnn.analysis.integrated_gradients(model, variables, images, target=2, baseline=baseline, steps=3),
                               (np.asarray(images) - baseline) * row, rtol=1e-5, atol=1e-7)
    # The default target is the predicted class, per example.
    predicted = np.asarray(model.apply(variables, images, train=False)).argmax(-1)
    expected = np.stack([weights[:, c].reshape(SHAPE) for c in predicted])
    np.testing.assert_allclose(cnn.analysis.vanilla_gradients(model, variables, images), expected, rtol=1e-6)


def test_integrated_gradients_are_complete_and_smoothgrad_is_keyed():
    model = Small()
    variables = _init(model)
    images = _images()
    baseline = jnp.full_like(images, 0.2)
    attributions = cnn.analysis.integrated_gradients(model, variables, images, target=1, baseline=baseline, steps=64)
    logits = lambda x: np.asarray(model.apply(variables, x, train=False))[:, 1]
    difference = logits(images) - logits(baseline)
    assert np.all(np.abs(difference) > 1e-3)  # a non-trivial path
    np.testing.assert_allclose(np.sum(np.asarray(attributions), axis=(1, 2, 3)), difference, rtol=2e-3, atol=1e-5)

    vanilla = np.asarray(cnn.analysis.vanilla_gradients(model, variables, images))
    np.testing.assert_allclose(cnn.analysis.smoothgrad(model, variables, images, jax.random.key(0), noise=0.0, samples=3),
                               vanilla, rtol=1e-5, atol=1e-8)
    one = np.asarray(cnn.analysis.smoothgrad(model, variables, images, jax.random.key(0), samples=5))
    np.testing.assert_array_equal(one, cnn.analysis.smoothgrad(model, variables, images, jax.random.key(0), samples=5))
    assert not np.allclose(one, cnn.analysis.smoothgrad(model, variables, images, jax.random.key(1), samples=5))
    assert not np.allclose(one, vanilla)


def _square_image(top, left, size=4, shape=(32, 32, 1)):
    image = np.zeros(shape, np.float32)
    image[top:top + size, left:left + size] = 1.0
    return image


@pytest.mark.parametrize("stride", [1, 4])
def test_grad_cam_lights_up_the_known_feature_map(stride):
    model = Blob(stride=stride)
    variables = _init(model, (32, 32, 1))
    images = np.stack([_square_image(4, 20), _square_image(24, 6)])
    boxes = [(4, 20), (24, 6)]
    for method in (cnn.analysis.grad_cam, cnn.analysis.grad_cam_plus_plus):
        maps = np.asarray(method(model, variables, images, target=0))
        assert maps.shape == (2, 32, 32) and maps.min() >= 0 and maps.max() == pytest.approx(1.0)
        for heat, (top, left) in zip(maps, boxes):
            row, col = np.unravel_index(np.argmax(heat), heat.shape)
            assert top - 1 <= row < top + 5 and left - 1 <= col < left + 5, (method.__name__, row, col)
            assert heat[(row + 16) % 32, (col + 16) % 32] == 0.0  # far from the square: nothing
        # Class 1 reads the feature with a negative weight: no positive evidence anywhere.
        assert np.all(np.asarray(method(model, variables, images, target=1)) == 0.0)
    if stride == 1:  # A 3x3 box filter of the image, scaled to [0, 1], is the Grad-CAM map itself.
        filtered = np.asarray(model.apply(variables, images, train=False, capture_intermediates=True,
                                          mutable=["intermediates"])[1]["intermediates"]["features"]["__call__"][0])[..., 0]
        np.testing.assert_allclose(cnn.analysis.grad_cam(model, variables, images, target=0),
                                   filtered / filtered.max(axis=(1, 2), keepdims=True), rtol=1e-5, atol=1e-6)


def test_layer_chooses_the_feature_map_and_a_wrong_name_lists_the_layers():
    model = Small()
    variables = _init(model)
    images = _images()
    assert list(cnn.analysis.feature_layers(model, variables, images)) == ["conv1", "conv2"]
    default = np.asarray(cnn.analysis.grad_cam(model, variables, images))
    np.testing.assert_array_equal(default, cnn.analysis.grad_cam(model, variables, images, layer="conv2"))
    assert not np.allclose(default, cnn.analysis.grad_cam(model, variables, images, layer="conv1"))
    with pytest.raises(ValueError, match=r"layer='conv3' is not a feature map of Small; layers: conv1, conv2$"):
        cnn.analysis.grad_cam(model, variables, images, layer="conv3")
    with pytest.raises(ValueError, match="unknown explanation method 'gradcam'"):
        cnn.analysis.heat_maps("gradcam", model, variables, images)
    # Attention weights [N, heads, L, L] have an image's rank but come from tokens: not feature maps.
    vit = cnn.models.create("vit_tiny_patch16_224", num_classes=3)
    tokens_in = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    vit_variables = jax.eval_shape(lambda x: vit.init(jax.random.key(0), x, train=False), tokens_in)
    assert cnn.analysis.feature_layers(vit, vit_variables, tokens_in) == {"patch_embed/proj": (1, 2, 2, 192)}


def test_activations_and_gradients_match_a_split_model():
    """The interceptor's activations and gradients equal those of the model cut in two by hand."""
    model = Small()
    variables = _init(model)
    images = _images()
    activations, gradients, _ = gradcam.activations_and_gradients(model, variables, images, layer="conv1",
                                                                  shape=(3, 16, 16, 4), target=2)
    params = variables["params"]
    first = lambda x: nn.Conv(4, (3, 3)).apply({"params": params["conv1"]}, x)  # the module's output: before tanh

    def rest(a):
        x = nn.relu(nn.Conv(6, (3, 3)).apply({"params": params["conv2"]}, nn.tanh(a)))
        return nn.Dense(3).apply({"params": params["head"]}, jnp.mean(x, axis=(1, 2)))[:, 2].sum()

    np.testing.assert_allclose(activations, first(images), rtol=1e-6)
    np.testing.assert_allclose(gradients, jax.grad(rest)(first(images)), rtol=1e-5, atol=1e-8)


class OnePixel(nn.Module):
    """Class 0 reads pixel (5, 9) of channel 0; class 1 is constant."""

    @nn.compact
    def __call__(self, x, train: bool):
        return jnp.stack([3.0 * x[:, 5, 9, 0], jnp.zeros(x.shape[0])], axis=-1)


def test_occlusion_finds_the_one_pixel_the_model_reads():
    images = np.asarray(_images(2, (16, 16, 2))) + 0.5
    window, stride = 4, 2
    drops = np.asarray(cnn.analysis.occlusion(OnePixel(), {}, images, target=0, window=window, stride=stride))
    # Reference: every window position (0, 2, ..., 12 per axis), the mean drop over the windows covering each pixel.
    total, covered = np.zeros((2, 16, 16)), np.zeros((16, 16))
    for top in range(0, 13, stride):
        for left in range(0, 13, stride):
            inside = top <= 5 < top + window and left <= 9 < left + window
            total[:, top:top + window, left:left + window] += 3.0 * images[:, 5, 9, 0][:, None, None] * inside
            covered[top:top + window, left:left + window] += 1
    np.testing.assert_allclose(drops, total / covered, rtol=1e-6)
    assert np.all(drops[:, 5, 9] == drops.max(axis=(1, 2)))
    assert np.all(drops[:, 12:, :] == 0) and np.all(drops[:, :, :4] == 0)


def test_heat_maps_of_every_method_are_in_unit_range_at_input_shape():
    model = Small()
    variables = _init(model)
    images = _images(2)
    for method in cnn.analysis.METHODS:
        maps = np.asarray(cnn.analysis.heat_maps(method, model, variables, images, key=jax.random.key(0),
                                                 **({"samples": 3} if method == "smoothgrad" else
                                                    {"steps": 4} if method == "integrated_gradients" else {})))
        assert maps.shape == (2, 16, 16), method
        assert maps.min() == 0.0 and maps.max() == pytest.approx(1.0), method
    with pytest.raises(ValueError, match="smoothgrad draws noise"):
        cnn.analysis.heat_maps("smoothgrad", model, variables, images)


# --- PAIR's saliency package as the reference ---------------------------------------------------------------

def _pair():
    return pytest.importorskip("saliency.core", reason="PAIR's saliency package is the reference (pip install saliency)")


def _call_model(model, variables, layer_fn=None, head_fn=None):
    """PAIR's ``call_model_function`` for class ``call_model_args["class"]``, from plain JAX (jitted once)."""
    logits = jax.jit(lambda x: model.apply(variables, x, train=False))
    input_gradients = jax.jit(jax.grad(lambda x, c: model.apply(variables, x, train=False)[:, c].sum()))

    def call(batch, call_model_args=None, expected_keys=None):
        pair = _pair()
        target = call_model_args["class"]
        batch = jnp.asarray(batch, jnp.float32)
        out = {}
        if pair.INPUT_OUTPUT_GRADIENTS in expected_keys:
            out[pair.INPUT_OUTPUT_GRADIENTS] = np.asarray(input_gradients(batch, target))
        if pair.OUTPUT_LAYER_VALUES in expected_keys:
            out[pair.OUTPUT_LAYER_VALUES] = np.asarray(logits(batch))[:, target]
        if pair.CONVOLUTION_LAYER_VALUES in expected_keys:
            activations = layer_fn(batch)
            out[pair.CONVOLUTION_LAYER_VALUES] = np.asarray(activations)
            out[pair.CONVOLUTION_OUTPUT_GRADIENTS] = np.asarray(jax.grad(lambda a: head_fn(a)[:, target].sum())(activations))
        return out

    return call


def test_gradient_methods_and_occlusion_match_pair_saliency():
    pair = _pair()
    model = Small()
    variables = _init(model, (8, 8, 2))
    images = np.asarray(_images(2, (8, 8, 2)))
    call = _call_model(model, variables)
    ours = np.asarray(cnn.analysis.vanilla_gradients(model, variables, images, target=1))
    integrated = np.asarray(cnn.analysis.integrated_gradients(model, variables, images, target=1, steps=200))
    occluded = np.asarray(cnn.analysis.occlusion(model, variables, images, target=1, window=3, stride=1))
    covered = np.asarray([min(i, 8 - 3) - max(0, i - 3 + 1) + 1 for i in range(8)], np.float32)
    for n, image in enumerate(images):
        args = {"class": 1}
        np.testing.assert_allclose(ours[n], pair.GradientSaliency().GetMask(image, call, args), rtol=1e-5, atol=1e-7)
        # PAIR sums the gradients at 200 evenly spaced points including both ends; we use midpoints: the same integral.
        reference = pair.IntegratedGradients().GetMask(image, call, args, x_steps=200, batch_size=200)
        np.testing.assert_allclose(integrated[n], reference, rtol=2e-2, atol=2e-2 * np.abs(reference).max())
        # PAIR adds up the drops of every covering window (stride 1); we average them.
        summed = pair.Occlusion().GetMask(image, call, args, size=3)[..., 0]
        np.testing.assert_allclose(occluded[n] * covered[:, None] * covered[None, :], summed, rtol=1e-4, atol=1e-6)


def test_grad_cam_matches_pair_saliency():
    pair = _pair()
    model = Small()
    variables = _init(model)
    images = np.asarray(_images(2))
    params = variables["params"]
    conv1 = lambda x: nn.Conv(4, (3, 3)).apply({"params": params["conv1"]}, x)
    conv2 = lambda x: nn.Conv(6, (3, 3)).apply({"params": params["conv2"]}, nn.tanh(conv1(x)))  # before its ReLU
    head = lambda a: nn.Dense(3).apply({"params": params["head"]}, jnp.mean(nn.relu(a), axis=(1, 2)))
    call = _call_model(model, variables, conv2, head)
    ours = np.asarray(cnn.analysis.grad_cam(model, variables, images, target=0))  # conv2 keeps 16x16: no resizing
    for n, image in enumerate(images):
        reference = pair.GradCam().GetMask(image, call, {"class": 0}, should_resize=False, three_dims=False)
        reference = (reference - reference.min()) / (reference.max() - reference.min())
        np.testing.assert_allclose(ours[n], reference, rtol=1e-4, atol=1e-6)
