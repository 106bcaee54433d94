"""Augmentation ops: shapes and dtypes, determinism per key, identities, independent references, label mixing.

XLA compiles slowly on a 2-core CPU (jax.random.beta alone takes seconds), so each test compiles one
function and checks everything it can with it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage as ndi

import cnn.data
from cnn.data import augment

KEY = jax.random.key(0)
BATCH, SIZE = 16, 9  # square images, so that resized_crop with area 1 and ratio 1 is the identity


@functools.lru_cache(maxsize=None)
def _jitted(text: str, num_classes=None, mean=None, std=None):
    return jax.jit(cnn.data.augmentation(text, num_classes=num_classes, mean=mean, std=std))


def _images(batch=BATCH, shape=(SIZE, SIZE, 3), seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(0, 256, (batch, *shape)), jnp.uint8)


@pytest.mark.parametrize("text", ["crop(2)", "crop(2, reflect)", "flip", "rotate(15)", "zoom(0.8, 1.2)",
                                  "resized_crop(0.3)", "cutout(4)"])
def test_shapes_dtypes_keys_and_labels(text):
    """The first eight examples are copies of one image: with one key per example they come out different."""
    images = _images().at[:8].set(_images()[0])
    labels = jnp.arange(BATCH, dtype=jnp.int32)
    chain = _jitted(text)
    out, out_labels = chain(KEY, images, labels)
    assert out.shape == images.shape and out.dtype == jnp.float32
    assert out_labels.dtype == jnp.int32 and out_labels.tolist() == labels.tolist()  # labels preserved
    np.testing.assert_array_equal(np.asarray(chain(KEY, images, labels)[0]), np.asarray(out))  # same key, same result
    assert not np.array_equal(np.asarray(chain(jax.random.key(1), images, labels)[0]), np.asarray(out))
    assert len({np.asarray(o).tobytes() for o in out[:8]}) > 1


def test_identities():
    image = _images(1, (SIZE, SIZE, 3))[0].astype(jnp.float32)

    @jax.jit
    def identities(key, image):
        flipped = augment.flip_image(key, image, 1.0)
        return {
            "crop(0)": augment.crop_image(key, image, 0),
            "rotate(0)": augment.rotate_image(key, image, 0.0),
            "zoom(1, 1)": augment.zoom_image(key, image, 1.0, 1.0),
            "resized_crop(1, 1, 1, 1)": augment.resized_crop_image(key, image, 1.0, 1.0, 1.0, 1.0),
            "flip(0)": augment.flip_image(key, image, 0.0),
            "flip(1) twice": augment.flip_image(key, flipped, 1.0),
            "cutout(0)": augment.cutout_image(key, image, 0),
            "flip(1) mirrors": flipped[:, ::-1],
        }

    for name, out in identities(KEY, image).items():
        np.testing.assert_array_equal(np.asarray(out), np.asarray(image), err_msg=name)


@pytest.mark.parametrize("mode", ["zero", "reflect"])
def test_crop_is_a_window_of_the_padded_image(mode):
    image = np.asarray(_images(1)[0], np.float32)
    padded = np.pad(image, ((3, 3), (3, 3), (0, 0)), mode="constant" if mode == "zero" else "reflect")
    windows = {padded[t : t + SIZE, l : l + SIZE].tobytes() for t in range(7) for l in range(7)}
    crop = jax.jit(jax.vmap(lambda key: augment.crop_image(key, jnp.asarray(image), 3, mode)))
    out = np.asarray(crop(jax.random.split(KEY, 64)))
    assert all(o.tobytes() in windows for o in out)
    assert len({o.tobytes() for o in out}) > 20  # the offsets really vary


def test_rotation_and_zoom_match_scipy():
    """Against scipy.ndimage (bilinear, constant fill interpolated at the border: mode grid-constant)."""
    image = np.random.default_rng(1).uniform(0, 255, (9, 11, 2)).astype(np.float32)
    fill = np.asarray([10.0, 20.0], np.float32)
    rotate = jax.jit(augment.rotate_image, static_argnums=2)
    for seed in range(3):
        key = jax.random.key(seed)
        angle = float(jax.random.uniform(key, (), minval=-30.0, maxval=30.0))  # the angle rotate_image draws
        out = np.asarray(rotate(key, jnp.asarray(image), 30.0, jnp.asarray(fill)))
        reference = np.stack([ndi.rotate(image[..., c], -angle, reshape=False, order=1, mode="grid-constant", cval=fill[c])
                              for c in range(2)], axis=-1)
        np.testing.assert_allclose(out, reference, atol=1e-3)
    zoom = jax.jit(augment.zoom_image)
    center = np.asarray([4.0, 5.0])
    for scale in (0.7, 1.5):
        out = np.asarray(zoom(KEY, jnp.asarray(image), scale, scale))
        reference = np.stack([ndi.affine_transform(image[..., c], np.diag([1 / scale] * 2), offset=center - center / scale,
                                                   order=1, mode="grid-constant", cval=0.0) for c in range(2)], axis=-1)
        np.testing.assert_allclose(out, reference, atol=1e-3)


def test_resized_crop_keeps_a_constant_image_constant():
    crops = jax.jit(jax.vmap(lambda key: augment.resized_crop_image(key, jnp.full((9, 11, 3), 77.0), 0.1, 0.5)))
    np.testing.assert_allclose(crops(jax.random.split(KEY, 8)), 77.0, rtol=1e-6)


def test_cutout_fills_one_square():
    cutouts = jax.jit(jax.vmap(lambda key: augment.cutout_image(key, jnp.ones((20, 20, 1)), 6, jnp.asarray(0.0))))
    sizes = []
    for out in np.asarray(cutouts(jax.random.split(KEY, 40)))[..., 0]:
        rows, cols = np.nonzero(out == 0)
        height, width = np.ptp(rows) + 1, np.ptp(cols) + 1
        assert rows.size == height * width and height <= 6 and width <= 6  # one filled rectangle
        sizes.append(rows.size)
    assert max(sizes) == 36 and min(sizes) < 36  # whole squares inside, clipped ones at the border


def test_cutout_fills_with_the_mean_so_normalised_value_is_zero():
    mean, std = (100.0, 50.0, 10.0), (2.0, 4.0, 8.0)
    out, _ = _jitted("cutout(5)", mean=mean, std=std)(KEY, jnp.full((4, 12, 12, 3), 255, jnp.uint8), jnp.zeros(4, jnp.int32))
    out = np.asarray(out)
    is_fill = np.all(out == 0.0, axis=-1)
    is_untouched = np.all(np.isclose(out, (255.0 - np.asarray(mean)) / np.asarray(std)), axis=-1)
    assert np.all(is_fill | is_untouched) and is_fill.any(axis=(1, 2)).all()


def test_normalisation():
    images, labels = _images(), jnp.zeros(BATCH, jnp.int32)
    mean, std = (10.0, 20.0, 30.0), (2.0, 4.0, 5.0)
    np.testing.assert_allclose(_jitted("", mean=mean, std=std)(KEY, images, labels)[0],
                               (np.asarray(images, np.float32) - mean) / std, rtol=1e-6)
    np.testing.assert_allclose(_jitted("none")(KEY, images, labels)[0], np.asarray(images, np.float32) / 255.0, rtol=1e-6)
    np.testing.assert_allclose(cnn.data.normalize(images, mean, std), (np.asarray(images, np.float32) - mean) / std, rtol=1e-6)


def _one_hot_images(labels, num_classes, size=8):
    """Each image shows its one-hot label in the channels (255 on channel `label`) at every pixel."""
    one_hot = np.eye(num_classes, dtype=np.uint8)[labels] * 255
    return jnp.asarray(np.broadcast_to(one_hot[:, None, None, :], (len(labels), size, size, num_classes)))


def test_blend_pairs():
    images = jnp.asarray(np.random.default_rng(0).uniform(0, 255, (4, 3, 3, 2)), jnp.float32)
    soft = jnp.eye(4, dtype=jnp.float32)
    partners, weights = jnp.asarray([1, 0, 3, 2]), jnp.asarray([0.25, 1.0, 0.5, 0.0])
    mixed, mixed_labels = jax.jit(augment.blend_pairs)(images, soft, partners, weights)
    np.testing.assert_allclose(mixed[0], 0.25 * images[0] + 0.75 * images[1], rtol=1e-6)
    np.testing.assert_allclose(mixed[1], images[1], rtol=1e-6)
    np.testing.assert_allclose(mixed[3], images[2], rtol=1e-6)
    np.testing.assert_allclose(mixed_labels, [[0.25, 0.75, 0, 0], [0, 1, 0, 0], [0, 0, 0.5, 0.5], [0, 0, 1, 0]], atol=1e-7)


def test_cutmix_boxes_and_paste():
    weights = jnp.linspace(0.05, 0.95, 32)
    boxes = np.asarray(jax.jit(augment.cutmix_boxes, static_argnums=(1, 2))(KEY, 16, 16, weights))
    assert boxes.shape == (32, 16, 16) and boxes.dtype == bool
    for box, weight in zip(boxes, np.asarray(weights)):
        rows, cols = np.nonzero(box)
        side = np.floor(16 * np.sqrt(1 - weight))
        assert rows.size <= side * side and (rows.size == 0 or rows.size == (np.ptp(rows) + 1) * (np.ptp(cols) + 1))
    assert any(box.sum() == np.floor(16 * np.sqrt(1 - w)) ** 2 > 0 for box, w in zip(boxes, np.asarray(weights)))
    images = jnp.stack([jnp.zeros((16, 16, 1)), jnp.ones((16, 16, 1))])
    box = jnp.zeros((2, 16, 16), bool).at[0, :4, :8].set(True)
    pasted, labels = jax.jit(augment.paste_pairs)(images, jnp.eye(2), jnp.asarray([1, 0]), box)
    np.testing.assert_array_equal(pasted[0, ..., 0], np.asarray(box[0], np.float32))
    np.testing.assert_array_equal(pasted[1], images[1])
    np.testing.assert_allclose(labels, [[1 - 32 / 256, 32 / 256], [0, 1]], rtol=1e-6)


def _one_hot_images(labels, num_classes, size=8):
    """Each image shows its one-hot label in the channels (255 on channel `label`) at every pixel."""
    one_hot = np.eye(num_classes, dtype=np.uint8)[labels] * 255
    return jnp.asarray(np.broadcast_to(one_hot[:, None, None, :], (len(labels), size, size, num_classes)))


def test_mixup_then_cutmix_mix_labels_like_pixels():
    """One compile of both Beta-sampling ops (each Beta costs seconds to compile on a small CPU)."""
    labels = np.asarray([0, 1, 2, 3, 4, 0, 1, 2])
    chain = cnn.data.augmentation("mixup(0.4)|cutmix(1.0)", num_classes=5)
    assert chain.soft_labels and not cnn.data.augmentation("crop(2)|flip").soft_labels
    mixed = jax.jit(chain)
    images, soft = mixed(KEY, _one_hot_images(labels, 5), jnp.asarray(labels, jnp.int32))
    assert soft.shape == (8, 5) and soft.dtype == jnp.float32
    np.testing.assert_allclose(soft.sum(1), 1.0, rtol=1e-6)
    # Pixels normalised by 255 are per-pixel label mixtures; their mean over the image is the soft label.
    np.testing.assert_allclose(np.asarray(images).mean(axis=(1, 2)), soft, atol=1e-5)
    assert (np.asarray(soft).max(1) < 0.99).sum() >= 4  # most examples really mixed
    again, _ = mixed(KEY, _one_hot_images(labels, 5), jnp.asarray(labels, jnp.int32))
    np.testing.assert_array_equal(np.asarray(again), np.asarray(images))


def test_works_on_sharded_batches():
    devices = jax.devices()
    mesh = jax.sharding.Mesh(np.asarray(devices), ("data",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    images = _images(2 * len(devices), (8, 8, 3))
    labels = jnp.arange(2 * len(devices)) % 3
    chain = _jitted("crop(2)|flip")
    out, _ = chain(KEY, jax.device_put(images, sharding), jax.device_put(labels, sharding))
    reference, _ = chain(KEY, images, labels)
    np.testing.assert_allclose(np.asarray(out), np.asarray(reference), atol=1e-6)
