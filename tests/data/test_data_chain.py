"""The augmentation chain grammar: what parses, and the errors for what does not."""

from __future__ import annotations

import pytest

import cnn.data


def test_parses_ops_arguments_and_keywords():
    chain = cnn.data.augmentation(" crop(4, reflect) | flip | rotate(7.5) | zoom(min_scale=0.9, max_scale=1.1) |cutout(8)")
    assert chain.steps == (
        ("crop", (("padding", 4), ("mode", "reflect"))),
        ("flip", ()),
        ("rotate", (("degrees", 7.5),)),
        ("zoom", (("min_scale", 0.9), ("max_scale", 1.1))),
        ("cutout", (("size", 8),)),
    )
    assert not chain.soft_labels and chain.mean is None
    assert cnn.data.augmentation("").steps == () == cnn.data.augmentation("none").steps
    stats = cnn.data.augmentation("flip", mean=[1, 2, 3], std=[4, 5, 6])
    assert stats.mean == (1.0, 2.0, 3.0) and stats.std == (4.0, 5.0, 6.0)
    assert hash(stats) == hash(cnn.data.augmentation("flip", mean=[1, 2, 3], std=[4, 5, 6]))  # usable as a static jit argument
    assert cnn.data.augmentation("mixup(0.2)|cutmix(1)", num_classes=10).soft_labels


@pytest.mark.parametrize(
    "text, kwargs, message",
    [
        ("crop(4)|flp", {}, r"unknown augmentation 'flp'; known: crop, flip, rotate, zoom, resized_crop, cutout, mixup, cutmix"),
        ("crop", {}, r"crop: missing a required argument: 'padding'; usage: crop\(padding, mode='zero'\)"),
        ("crop(1, 2, 3)", {}, r"crop\(1, 2, 3\): too many positional arguments; usage: crop\(padding, mode='zero'\)"),
        ("crop(-1)", {}, r"crop: padding=-1; expected a non-negative integer"),
        ("crop(2.5)", {}, r"crop: padding=2.5; expected a non-negative integer"),
        ("crop(4, mirror)", {}, r"crop: mode='mirror'; expected one of zero, reflect"),
        ("flip(1.5)", {}, r"flip: probability=1.5; expected a number in \[0, 1\]"),
        ("zoom(1.2, 0.8)", {}, r"zoom: max_scale=0.8; expected a number in \[1.2, 10\]"),
        ("rotate(degree=3)", {}, r"rotate\(degree=3\): unknown argument 'degree'; usage: rotate\(degrees\)"),
        ("crop(padding=3, 4)", {}, r"positional argument after keyword argument"),
        ("crop(4", {}, r"cannot read augmentation 'crop\(4'"),
        ("crop(4)||flip", {}, r"cannot read augmentation ''"),
        ("crop(\"4\")", {}, r"cannot read argument '\"4\"'; expected a number or a word"),
        ("mixup(0.2)", {}, r"'mixup\(0.2\)' mixes labels, so it needs num_classes \(an integer > 1\), got None"),
        ("mixup(0)", {"num_classes": 10}, r"mixup: alpha=0; expected a number in \(0, 1000.0\]"),
        ("flip", {"mean": [1.0]}, r"give both mean and std"),
        ("flip", {"mean": [1.0], "std": [0.0]}, r"every channel's std must be positive"),
    ],
)
def test_errors_name_the_bad_value_and_what_is_accepted(text, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cnn.data.augmentation(text, **kwargs)
