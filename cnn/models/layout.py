"""The input layout every zoo model checks first: channels last, and as many spatial axes as it has.

A model built for images applied to ``[N, 1, 224, 224, 3]`` (a batch axis too many) or to NCHW
``[1, 3, 224, 224]`` would silently become another network (Flax convs take their rank from the input
and any last axis as channels): both are errors naming the layout the model expects.
"""

from __future__ import annotations

from typing import Any

LAYOUTS = {1: "[N, L, C]", 2: "[N, H, W, C] (NHWC)", 3: "[N, T, H, W, C]"}
FIRST_AXES = {1: "N, C, L", 2: "N, C, H, W", 3: "N, C, T, H, W"}


def check_layout(model: Any, x: Any) -> None:
    """A ValueError unless ``x`` is ``[N, *spatial, C]`` with ``model.spatial_rank`` spatial axes."""
    rank, name = model.spatial_rank, type(model).__name__
    if x.ndim != rank + 2:
        raise ValueError(f"{name} takes {LAYOUTS[rank]} inputs ({rank} spatial axes, channels last); got shape "
                         f"{tuple(x.shape)}")
    # Channels first: a handful of "channels" after the batch axis and many in the last one.
    if x.shape[1] <= 4 and x.shape[-1] >= 16:
        order = (0, *range(2, rank + 2), 1)
        raise ValueError(f"{name} takes {LAYOUTS[rank]} inputs, channels last; shape {tuple(x.shape)} looks like "
                         f"channels first ({FIRST_AXES[rank]}): transpose it with x.transpose{order}")
