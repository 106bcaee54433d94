"""Readers for the official raw formats, into numpy. Nothing here unpickles anything.

- IDX (MNIST, Fashion-MNIST, KMNIST): gzip of a big-endian header (magic 2051 for images, 2049 for
  labels, then the dimensions) followed by uint8 data.
- CIFAR binary archives: records of label byte(s) then 3072 channel-major pixel bytes (1024 R, 1024 G,
  1024 B, each row-major 32x32); CIFAR-100 records hold a coarse then a fine label byte.
- SVHN cropped: MATLAB files with ``X`` uint8 [32, 32, 3, N] and ``y`` [N, 1] where 10 stands for 0.
- Image folders: ``<folder>/<split>/<class>/<image>.{jpg,jpeg,png}``, decoded with Pillow and resized.
"""

from __future__ import annotations

import gzip
import pathlib
import tarfile
import zlib
from typing import Iterator, Sequence

import numpy as np

from cnn.data.paths import DataError

IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049
CIFAR_PIXELS = 3 * 32 * 32
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def read_idx(path: pathlib.Path, magic: int) -> np.ndarray:
    """Images uint8 [N, rows, cols] (magic 2051) or labels uint8 [N] (magic 2049) from an IDX .gz file."""
    try:
        with gzip.open(path, "rb") as stream:
            data = stream.read()
    except (OSError, EOFError, zlib.error) as error:  # BadGzipFile is an OSError; truncation an EOFError
        raise DataError(f"{path}: not a readable gzip file ({type(error).__name__}: {error})") from error
    num_dims = 3 if magic == IDX_IMAGES_MAGIC else 1
    header_bytes = 4 * (1 + num_dims)
    if len(data) < header_bytes:
        raise DataError(f"{path}: {len(data)} bytes after gunzip, too short for an IDX header")
    header = np.frombuffer(data, dtype=">u4", count=1 + num_dims)
    if int(header[0]) != magic:
        raise DataError(f"{path}: IDX magic number {int(header[0])}, expected {magic}")
    shape = tuple(int(d) for d in header[1:])
    expected = int(np.prod(shape))
    if len(data) - header_bytes != expected:
        raise DataError(f"{path}: {len(data) - header_bytes} data bytes, expected {expected} for shape {shape}")
    return np.frombuffer(data, dtype=np.uint8, offset=header_bytes).reshape(shape)


def read_idx_pair(images_path: pathlib.Path, labels_path: pathlib.Path) -> tuple:
    """(images uint8 [N, H, W, 1], labels int64 [N]) from an IDX images file and its labels file."""
    images = read_idx(images_path, IDX_IMAGES_MAGIC)
    labels = read_idx(labels_path, IDX_LABELS_MAGIC)
    if len(images) != len(labels):
        raise DataError(f"{images_path} holds {len(images)} images but {labels_path} {len(labels)} labels")
    return images[..., None], labels.astype(np.int64)


def _open_tar(path: pathlib.Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, mode="r:gz")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        raise DataError(f"{path}: not a readable .tar.gz archive ({type(error).__name__}: {error})") from error


def read_tar_members(path: pathlib.Path, members: Sequence[str]) -> dict:
    """The bytes of the named archive members (read in memory, never extracted to disk)."""
    contents = {}
    with _open_tar(path) as archive:
        try:
            for name in members:
                try:
                    member = archive.getmember(name)
                except KeyError:
                    raise DataError(f"{path}: archive has no member {name!r}") from None
                stream = archive.extractfile(member)
                if stream is None:
                    raise DataError(f"{path}: member {name!r} is not a regular file")
                contents[name] = stream.read()
        except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
            raise DataError(f"{path}: corrupt archive ({type(error).__name__}: {error})") from error
    return contents


def parse_cifar_records(data: bytes, label_bytes: int, where: str) -> tuple:
    """(images uint8 [N, 32, 32, 3], labels uint8 [N, label_bytes]) from CIFAR binary records."""
    record = label_bytes + CIFAR_PIXELS
    if len(data) == 0 or len(data) % record:
        raise DataError(f"{where}: {len(data)} bytes is not a whole number of {record}-byte CIFAR records")
    rows = np.frombuffer(data, dtype=np.uint8).reshape(-1, record)
    images = rows[:, label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), rows[:, :label_bytes].copy()


def parse_label_names(data: bytes) -> list:
    """Class names from a CIFAR ``*.txt`` names file: one per line, blank lines ignored."""
    return [line.strip() for line in data.decode("utf-8").splitlines() if line.strip()]


def read_svhn_mat(path: pathlib.Path) -> tuple:
    """(images uint8 [N, 32, 32, 3], labels int64 [N] with digit 0 as 0) from an SVHN cropped .mat file."""
    import scipy.io  # MATLAB v5 reader: parses arrays, executes nothing

    try:
        contents = scipy.io.loadmat(path)
    except Exception as error:  # scipy raises ValueError, MatReadError, OSError for damaged files
        raise DataError(f"{path}: not a readable MATLAB file ({type(error).__name__}: {error})") from error
    if "X" not in contents or "y" not in contents:
        raise DataError(f"{path}: expected variables X and y, found {sorted(k for k in contents if not k.startswith('__'))}")
    images, labels = contents["X"], contents["y"].reshape(-1)
    if images.ndim != 4 or images.shape[:3] != (32, 32, 3) or images.shape[3] != len(labels):
        raise DataError(f"{path}: X has shape {images.shape} for {len(labels)} labels; expected [32, 32, 3, N]")
    if labels.size and (labels.min() < 1 or labels.max() > 10):
        raise DataError(f"{path}: labels span [{labels.min()}, {labels.max()}], expected 1..10 (10 for the digit 0)")
    images = np.ascontiguousarray(images.transpose(3, 0, 1, 2), dtype=np.uint8)
    return images, (labels % 10).astype(np.int64)


def image_folder_classes(folder: pathlib.Path, splits: Sequence[str]) -> list:
    """Sorted class names: the union of the class sub-folders of every split folder."""
    classes = set()
    for split in splits:
        classes.update(p.name for p in (folder / split).iterdir() if p.is_dir() and not p.name.startswith("."))
    return sorted(classes)


def image_folder_files(folder: pathlib.Path, split: str, classes: Sequence[str]) -> list:
    """[(path, label)] of a split, sorted by class then file name; rejects files that are not images."""
    files = []
    for label, name in enumerate(classes):
        class_dir = folder / split / name
        if not class_dir.is_dir():
            continue
        for path in sorted(class_dir.iterdir()):
            if path.name.startswith("."):
                continue
            if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
                raise DataError(f"image_folder: {path} is not a {'/'.join(IMAGE_SUFFIXES)} file; remove it from {class_dir}")
            files.append((path, label))
    return files


def decode_image(path: pathlib.Path, image_size: tuple, channels: int) -> np.ndarray:
    """uint8 [H, W, channels]: the file decoded by Pillow, converted to RGB (3) or grey (1), resized bilinearly."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image = image.convert("RGB" if channels == 3 else "L")
            height, width = image_size
            if image.size != (width, height):
                image = image.resize((width, height), Image.Resampling.BILINEAR)
            array = np.asarray(image, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise DataError(f"image_folder: cannot decode {path} ({type(error).__name__}: {error})") from error
    return array.reshape(height, width, channels)


def iter_image_folder(files: Sequence[tuple], image_size: tuple, channels: int) -> Iterator[tuple]:
    """Yields (index, image uint8 [H, W, C], label) for each (path, label) in ``files``."""
    for index, (path, label) in enumerate(files):
        yield index, decode_image(path, image_size, channels), label
