"""Per-channel pixel statistics, exact and in constant memory: what normalisation with each dataset's mean and std uses."""

from __future__ import annotations

import numpy as np


class ChannelStats:
    """Exact per-channel mean and std (pixel units) from a running histogram of uint8 values."""

    def __init__(self, channels: int):
        self.histogram = np.zeros((channels, 256), np.int64)

    def add(self, images: np.ndarray) -> None:
        pixels = images.reshape(-1, images.shape[-1])
        for channel in range(pixels.shape[1]):
            self.histogram[channel] += np.bincount(pixels[:, channel], minlength=256)

    def as_metadata(self) -> dict:
        values = np.arange(256, dtype=np.float64)
        count = np.maximum(self.histogram.sum(1), 1)
        mean = (self.histogram * values).sum(1) / count
        variance = (self.histogram * (values - mean[:, None]) ** 2).sum(1) / count
        return {"channel_mean": mean.tolist(), "channel_std": np.sqrt(variance).tolist()}


def channel_mean_std(images: np.ndarray) -> tuple:
    """(mean, std) float32 [C] in pixel units of uint8 images [..., C]."""
    stats = ChannelStats(images.shape[-1])
    stats.add(images)
    values = stats.as_metadata()
    return np.asarray(values["channel_mean"], np.float32), np.asarray(values["channel_std"], np.float32)
