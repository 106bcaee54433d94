"""Where raw files are read from and where prepared datasets are written.

Two folders, because the raw folder may be read-only (a shared copy of the official files):

- the *data dir* holds the official raw files, ``<data_dir>/<name>/<official file name>``:
  the ``data_dir`` argument, else ``$CNN_DATA_DIR``, else ``<cache>/cnn/data``;
- the *prepared dir* holds the array_record files that tfds writes, in tfds's layout
  ``<prepared_dir>/<name>/<config>/<version>/``: the ``prepared_dir`` argument, else
  ``$CNN_PREPARED_DIR``, else ``<cache>/cnn/prepared``.

``<cache>`` is ``$XDG_CACHE_HOME`` when set, else ``~/.cache``.
"""

from __future__ import annotations

import os
import pathlib
from typing import Optional, Union

PathLike = Union[str, os.PathLike]

DATA_DIR_ENV = "CNN_DATA_DIR"
PREPARED_DIR_ENV = "CNN_PREPARED_DIR"


class DataError(Exception):
    """A data set cannot be found, verified, prepared or read; the message says what to do."""


class UnknownDatasetError(DataError, KeyError):
    """The name is not a dataset this project knows."""

    def __str__(self) -> str:  # KeyError would quote the message.
        return str(self.args[0])


def _cache_root() -> pathlib.Path:
    cache = os.environ.get("XDG_CACHE_HOME")
    return (pathlib.Path(cache) if cache else pathlib.Path.home() / ".cache") / "cnn"


def resolve_data_dir(data_dir: Optional[PathLike] = None) -> pathlib.Path:
    """The folder holding ``<name>/<official raw file>``: argument, else $CNN_DATA_DIR, else the cache."""
    if data_dir:
        return pathlib.Path(data_dir).expanduser().absolute()
    if os.environ.get(DATA_DIR_ENV):
        return pathlib.Path(os.environ[DATA_DIR_ENV]).expanduser().absolute()
    return _cache_root() / "data"


def resolve_prepared_dir(prepared_dir: Optional[PathLike] = None) -> pathlib.Path:
    """The folder tfds writes array_record files to: argument, else $CNN_PREPARED_DIR, else the cache."""
    if prepared_dir:
        return pathlib.Path(prepared_dir).expanduser().absolute()
    if os.environ.get(PREPARED_DIR_ENV):
        return pathlib.Path(os.environ[PREPARED_DIR_ENV]).expanduser().absolute()
    return _cache_root() / "prepared"


def ensure_writable_dir(path: pathlib.Path, purpose: str) -> pathlib.Path:
    """Creates ``path`` if needed; raises DataError naming the folder when it cannot be written."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(f"cannot create {path} for {purpose}: {error.strerror}") from error
    if not os.access(path, os.W_OK):
        raise DataError(
            f"{path} is not writable, so {purpose} cannot go there; pass another folder "
            f"(prepared_dir=... or ${PREPARED_DIR_ENV} for prepared data, data_dir=... or ${DATA_DIR_ENV} for raw files)"
        )
    return path
