"""The official raw files of each dataset: names, addresses, sizes, checksums; finding and verifying them.

``RAW_FILES[dataset][file name]`` is the registry the builders check against: the sizes and sha256
values tensorflow-datasets 4.9 pins (its ``checksums.tsv``) for the same URLs; for MNIST they are also
the ones in the shared datasets README and match the shared files. To accept another file (a
re-released archive, or a test's generated file), put its ``RawFile`` in the registry; nothing is ever
prepared from an unverified file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import shutil
import socket
import tempfile
import urllib.parse
from typing import Any, Optional, Sequence

from cnn.data.paths import DataError, ensure_writable_dir


@dataclasses.dataclass(frozen=True)
class RawFile:
    """One official file: its name in ``<data_dir>/<dataset>/``, where it is published, what it must hash to."""

    name: str
    urls: tuple  # official address first; later entries are mirrors tfds uses for the same bytes
    size: int
    sha256: str


def _files(base_urls: Sequence[str], entries: Sequence[tuple]) -> dict:
    return {
        name: RawFile(name, tuple(urllib.parse.urljoin(base, name) for base in base_urls), size, sha256)
        for name, size, sha256 in entries
    }


_MNIST_URLS = ("http://yann.lecun.com/exdb/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/")
_FASHION_URLS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
_KMNIST_URLS = ("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",)
_CIFAR_URLS = ("https://www.cs.toronto.edu/~kriz/",)
_SVHN_URLS = ("http://ufldl.stanford.edu/housenumbers/",)

RAW_FILES: dict = {
    "mnist": _files(_MNIST_URLS, [
        ("train-images-idx3-ubyte.gz", 9912422, "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
        ("train-labels-idx1-ubyte.gz", 28881, "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
        ("t10k-images-idx3-ubyte.gz", 1648877, "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
        ("t10k-labels-idx1-ubyte.gz", 4542, "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
    ]),
    "fashion_mnist": _files(_FASHION_URLS, [
        ("train-images-idx3-ubyte.gz", 26421880, "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
        ("train-labels-idx1-ubyte.gz", 29515, "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
        ("t10k-images-idx3-ubyte.gz", 4422102, "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
        ("t10k-labels-idx1-ubyte.gz", 5148, "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
    ]),
    "kmnist": _files(_KMNIST_URLS, [
        ("train-images-idx3-ubyte.gz", 18165135, "51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4"),
        ("train-labels-idx1-ubyte.gz", 29497, "e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17"),
        ("t10k-images-idx3-ubyte.gz", 3041136, "edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5"),
        ("t10k-labels-idx1-ubyte.gz", 5120, "20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c"),
    ]),
    "cifar10": _files(_CIFAR_URLS, [
        ("cifar-10-binary.tar.gz", 170052171, "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"),
    ]),
    "cifar100": _files(_CIFAR_URLS, [
        ("cifar-100-binary.tar.gz", 168513733, "58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec"),
    ]),
    "svhn_cropped": _files(_SVHN_URLS, [
        ("train_32x32.mat", 182040794, "435e94d69a87fde4fd4d7f3dd208dfc32cb6ae8af2240d066de1df7508d083b8"),
        ("test_32x32.mat", 64275384, "cdce80dfb2a2c4c6160906d0bd7c68ec5a99d7ca4831afa54f09182025b6a75b"),
        ("extra_32x32.mat", 1329278602, "a133a4beb38a00fcdda90c9489e0c04f900b660ce8a316a5e854838379a71eb3"),
    ]),
}


def file_sha256(path: os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(dataset: str, expected: RawFile, path: pathlib.Path, downloaded_from: Optional[str] = None) -> None:
    """Raises DataError unless ``path`` has the registered size and sha256."""
    if downloaded_from:
        what, advice = f"{expected.name} downloaded from {downloaded_from}", "it was not kept; check the address"
    else:
        what, advice = str(path), f"delete it and download it again from {expected.urls[0]}"
    size = path.stat().st_size
    if size != expected.size:
        raise DataError(
            f"{dataset}: {what} has {size:,} bytes, expected {expected.size:,} (truncated or not the official file); {advice}"
        )
    digest = file_sha256(path)
    if digest != expected.sha256:
        raise DataError(
            f"{dataset}: {what} has sha256 {digest}, expected {expected.sha256} (corrupt or not the official file); {advice}"
        )


def _reachable(url: str, timeout: float = 3.0) -> bool:
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _missing_message(dataset: str, expected: RawFile, folder: pathlib.Path, reason: str) -> str:
    return (
        f"{dataset}: missing {expected.name} in {folder}/ ({reason}); "
        f"download it from {expected.urls[0]} into that folder"
    )


def _download(dataset: str, expected: RawFile, folder: pathlib.Path, download_manager: Any) -> pathlib.Path:
    """Downloads through tfds's download manager, verifies, then moves into ``folder`` under the official name."""
    ensure_writable_dir(folder, f"the downloaded {dataset} files")
    errors = []
    for url in expected.urls:
        if not _reachable(url):
            errors.append(f"{urllib.parse.urlsplit(url).hostname} unreachable")
            continue
        try:
            downloaded = pathlib.Path(os.fspath(download_manager.download(url)))
        except Exception as error:  # tfds raises several kinds (DownloadError, HTTP errors)
            errors.append(f"{url}: {type(error).__name__}: {error}")
            continue
        verify(dataset, expected, downloaded, downloaded_from=url)
        staging = tempfile.NamedTemporaryFile(dir=folder, prefix=f".{expected.name}.", delete=False)
        staging.close()
        try:
            shutil.copyfile(downloaded, staging.name)
            os.replace(staging.name, folder / expected.name)  # atomic: never a half-written official file
        finally:
            if os.path.exists(staging.name):
                os.remove(staging.name)
        return folder / expected.name
    raise DataError(_missing_message(dataset, expected, folder, "offline: " + "; ".join(errors)))


def locate_verified(
    dataset: str,
    folder: pathlib.Path,
    names: Optional[Sequence[str]] = None,
    download_manager: Any = None,
) -> dict:
    """Paths of the dataset's raw files in ``folder``, each verified; downloads the absent ones if it can.

    Every file is checked before any is used, so a bad or missing file fails before preparation starts.
    Without a ``download_manager`` (or offline) an absent file is a one-line DataError naming the file,
    the folder and the official address.
    """
    expected_files = RAW_FILES[dataset]
    paths = {}
    for name in names or list(expected_files):
        expected = expected_files[name]
        path = folder / name
        if path.is_file():
            verify(dataset, expected, path)
        elif download_manager is None:
            raise DataError(_missing_message(dataset, expected, folder, "downloading is off"))
        else:
            path = _download(dataset, expected, folder, download_manager)  # verified before it lands
        paths[name] = path
    return paths
