"""Reading TensorBoard event files back (TFRecord framing of ``Event`` protos), without TensorFlow."""

import pathlib
import struct
from typing import Iterator, Tuple

from tensorboardX.proto import event_pb2


def scalars(folder: pathlib.Path) -> Iterator[Tuple[str, int, float]]:
    """``(tag, step, value)`` of every scalar in every event file of ``folder``."""
    for path in sorted(pathlib.Path(folder).glob("events.out.tfevents.*")):
        data, offset = path.read_bytes(), 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            offset += 12  # the length and its CRC
            event = event_pb2.Event.FromString(data[offset:offset + length])
            offset += length + 4  # the record and its CRC
            for value in event.summary.value:
                yield value.tag, int(event.step), float(value.simple_value)
