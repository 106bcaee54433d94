"""Augmentations in pure JAX: jit-able, per-example ops vmapped with one key per example.

Every op has the batch signature ``op(key, images, labels) -> (images, labels)`` on float32 images
[B, H, W, C] in pixel units (0..255, before normalisation). Geometric ops and cutout draw one key per
example (``jax.random.split(key, B)``) and ``vmap`` a per-image function; mixup and cutmix pair each
example with a partner from a random permutation and mix soft labels [B, num_classes].

The per-image functions (``crop_image``, ``flip_image``, ...) take ``(key, image [H, W, C])`` and are
usable on their own. ``cnn.data.chain.parse`` builds whole chains from strings like
``"crop(4)|flip|cutout(8)"``.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
from jax.scipy.ndimage import map_coordinates

PAD_MODES = {"zero": "constant", "reflect": "reflect"}


# ----------------------------------------------------------------------------- per-image functions


def crop_image(key: jax.Array, image: jax.Array, padding: int, mode: str = "zero") -> jax.Array:
    """Pads each side by ``padding`` (zeros or reflection) and takes a random [H, W] window."""
    if padding == 0:
        return image
    padded = jnp.pad(image, ((padding, padding), (padding, padding), (0, 0)), mode=PAD_MODES[mode])
    top, left = jax.random.randint(key, (2,), 0, 2 * padding + 1)
    return jax.lax.dynamic_slice(padded, (top, left, 0), image.shape)


def flip_image(key: jax.Array, image: jax.Array, probability: float = 0.5) -> jax.Array:
    """Mirrors left-right with the given probability."""
    return jnp.where(jax.random.bernoulli(key, probability), image[:, ::-1], image)


def _resample(image: jax.Array, rows: jax.Array, cols: jax.Array, mode: str, fill: jax.Array) -> jax.Array:
    """Bilinear samples of ``image`` [H, W, C] at float coordinates rows, cols [H', W'] -> [H', W', C].

    With mode "constant", points outside blend towards ``fill`` (a scalar or one value per channel):
    sampling zeros outside and adding ``fill`` times the weight that fell outside is the same linear
    interpolation, and keeps ``fill`` a traced value (map_coordinates wants a static ``cval``).
    """
    sample = lambda plane: map_coordinates(plane, [rows, cols], order=1, mode=mode, cval=0.0)  # noqa: E731
    sampled = jnp.moveaxis(jax.vmap(sample)(jnp.moveaxis(image, -1, 0)), 0, -1)
    if mode != "constant":
        return sampled
    outside = 1.0 - sample(jnp.ones(image.shape[:2], image.dtype))
    return sampled + outside[..., None] * jnp.broadcast_to(jnp.asarray(fill, image.dtype), image.shape[-1:])


def _grid(image: jax.Array) -> tuple:
    height, width = image.shape[:2]
    rows, cols = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32), jnp.arange(width, dtype=jnp.float32), indexing="ij")
    return rows, cols, (height - 1) / 2.0, (width - 1) / 2.0


def rotate_image(key: jax.Array, image: jax.Array, max_degrees: float, fill: jax.Array = 0.0) -> jax.Array:
    """Rotates about the centre by an angle uniform in [-max_degrees, max_degrees]; bilinear, ``fill`` outside."""
    angle = jax.random.uniform(key, (), minval=-max_degrees, maxval=max_degrees) * (math.pi / 180.0)
    rows, cols, center_row, center_col = _grid(image)
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    source_rows = cos * (rows - center_row) - sin * (cols - center_col) + center_row
    source_cols = sin * (rows - center_row) + cos * (cols - center_col) + center_col
    return _resample(image, source_rows, source_cols, "constant", fill)


def zoom_image(key: jax.Array, image: jax.Array, min_scale: float, max_scale: float, fill: jax.Array = 0.0) -> jax.Array:
    """Scales about the centre by a factor uniform in [min_scale, max_scale] (>1 zooms in); ``fill`` outside."""
    scale = jax.random.uniform(key, (), minval=min_scale, maxval=max_scale)
    rows, cols, center_row, center_col = _grid(image)
    return _resample(image, (rows - center_row) / scale + center_row, (cols - center_col) / scale + center_col, "constant", fill)


def resized_crop_image(
    key: jax.Array,
    image: jax.Array,
    min_area: float = 0.08,
    max_area: float = 1.0,
    min_ratio: float = 3 / 4,
    max_ratio: float = 4 / 3,
) -> jax.Array:
    """Inception-style random-resized-crop: a box of random area fraction and aspect ratio, resized to [H, W].

    The box is clipped to the image (instead of torchvision's ten retries), so its area may fall below
    ``min_area`` for extreme aspect ratios; bilinear resampling, half-pixel centres.
    """
    height, width = image.shape[:2]
    area_key, ratio_key, top_key, left_key = jax.random.split(key, 4)
    area = jax.random.uniform(area_key, (), minval=min_area, maxval=max_area) * height * width
    ratio = jnp.exp(jax.random.uniform(ratio_key, (), minval=math.log(min_ratio), maxval=math.log(max_ratio)))
    box_height = jnp.clip(jnp.sqrt(area / ratio), 1.0, height)
    box_width = jnp.clip(jnp.sqrt(area * ratio), 1.0, width)
    top = jax.random.uniform(top_key, ()) * (height - box_height)
    left = jax.random.uniform(left_key, ()) * (width - box_width)
    rows, cols, _, _ = _grid(image)
    source_rows = top + (rows + 0.5) * (box_height / height) - 0.5
    source_cols = left + (cols + 0.5) * (box_width / width) - 0.5
    return _resample(image, source_rows, source_cols, "nearest", 0.0)


def cutout_image(key: jax.Array, image: jax.Array, size: int, fill: jax.Array = 0.0) -> jax.Array:
    """Fills a size x size square at a uniformly random centre (it may hang over the border), as DeVries & Taylor."""
    height, width = image.shape[:2]
    center_row_key, center_col_key = jax.random.split(key)
    top = jax.random.randint(center_row_key, (), 0, height) - size // 2
    left = jax.random.randint(center_col_key, (), 0, width) - size // 2
    rows = jnp.arange(height)[:, None]
    cols = jnp.arange(width)[None, :]
    inside = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)
    return jnp.where(inside[..., None], jnp.broadcast_to(fill, image.shape), image)


# ----------------------------------------------------------------------------- batch ops


def per_example(image_fn, **kwargs):
    """Lifts ``image_fn(key, image, **kwargs)`` to a batch op with one key per example; labels pass through."""

    def op(key: jax.Array, images: jax.Array, labels: jax.Array) -> tuple:
        keys = jax.random.split(key, images.shape[0])
        return jax.vmap(lambda k, image: image_fn(k, image, **kwargs))(keys, images), labels

    return op


def _partners_and_weights(key: jax.Array, batch: int, alpha: float) -> tuple:
    permutation_key, weight_key = jax.random.split(key)
    partners = jax.random.permutation(permutation_key, batch)
    weights = jax.random.beta(weight_key, alpha, alpha, (batch,))
    return partners, weights


def blend_pairs(images: jax.Array, soft_labels: jax.Array, partners: jax.Array, weights: jax.Array) -> tuple:
    """x_i = w_i x_i + (1 - w_i) x_partner(i); the same for soft labels [B, K]."""
    image_weights = weights[:, None, None, None]
    mixed_images = image_weights * images + (1.0 - image_weights) * images[partners]
    mixed_labels = weights[:, None] * soft_labels + (1.0 - weights[:, None]) * soft_labels[partners]
    return mixed_images, mixed_labels


def cutmix_boxes(key: jax.Array, height: int, width: int, weights: jax.Array) -> jax.Array:
    """bool [B, H, W]: per example a box of about (1 - w) * H * W pixels at a uniform centre, clipped to the image."""

    def box(box_key, weight):
        cut = jnp.sqrt(1.0 - weight)
        box_height, box_width = jnp.floor(height * cut), jnp.floor(width * cut)
        row_key, col_key = jax.random.split(box_key)
        center_row = jax.random.randint(row_key, (), 0, height)
        center_col = jax.random.randint(col_key, (), 0, width)
        top = jnp.clip(center_row - box_height // 2, 0, height)
        bottom = jnp.clip(center_row + box_height - box_height // 2, 0, height)
        left = jnp.clip(center_col - box_width // 2, 0, width)
        right = jnp.clip(center_col + box_width - box_width // 2, 0, width)
        rows = jnp.arange(height)[:, None]
        cols = jnp.arange(width)[None, :]
        return (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)

    return jax.vmap(box)(jax.random.split(key, weights.shape[0]), weights)


def paste_pairs(images: jax.Array, soft_labels: jax.Array, partners: jax.Array, boxes: jax.Array) -> tuple:
    """Inside ``boxes`` [B, H, W] the partner's pixels; labels mixed by the exact fraction of pixels kept."""
    mixed_images = jnp.where(boxes[..., None], images[partners], images)
    kept = 1.0 - boxes.mean(axis=(1, 2))
    mixed_labels = kept[:, None] * soft_labels + (1.0 - kept[:, None]) * soft_labels[partners]
    return mixed_images, mixed_labels


def mixup(key: jax.Array, images: jax.Array, soft_labels: jax.Array, alpha: float) -> tuple:
    """Mixup (Zhang et al. 2018) with a partner from a random permutation; w ~ Beta(alpha, alpha) per example."""
    partners, weights = _partners_and_weights(key, images.shape[0], alpha)
    return blend_pairs(images, soft_labels, partners, weights)


def cutmix(key: jax.Array, images: jax.Array, soft_labels: jax.Array, alpha: float) -> tuple:
    """CutMix (Yun et al. 2019): the partner's box covers about 1 - w of the image, w ~ Beta(alpha, alpha)."""
    partners, weights = _partners_and_weights(key, images.shape[0], alpha)
    boxes = cutmix_boxes(jax.random.fold_in(key, 1), images.shape[1], images.shape[2], weights)
    return paste_pairs(images, soft_labels, partners, boxes)


def normalize(images: jax.Array, mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None) -> jax.Array:
    """float32 (images - mean) / std per channel (pixel units); images / 255 when no statistics are given."""
    images = jnp.asarray(images, jnp.float32)
    if mean is None or std is None:
        return images / 255.0
    return (images - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
