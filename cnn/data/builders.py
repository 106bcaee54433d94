"""tfds builders that write array_record files from the official raw files, without TensorFlow.

tfds 4.9 prepares a ``GeneratorBasedBuilder`` in ``file_format="array_record"`` without TensorFlow as
long as no feature needs TensorFlow to *encode*: ``tfds.features.Image`` encodes numpy arrays with
``tf.image.encode_png``, so images are stored as ``tfds.features.Tensor`` of uint8 with BYTES encoding
(exact, about 3x faster to write than a plain Tensor, and decoding is a reshape). ``DatasetInfo`` is
built directly (``dataset_info_from_configs`` looks for metadata files beside the module). The builders
are not registered in tfds's catalog (their names would clash with tfds's own ``mnist`` etc.); prepared
data is read back with ``tfds.builder_from_directory``.

Every builder records, in ``metadata.json`` beside ``dataset_info.json``: the sha256 of each raw file it
read and the per-channel mean and std of its training split (pixel units, 0..255).

Importing this module imports tensorflow_datasets; ``cnn.data`` imports it only when preparing.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Optional

import numpy as np
import tensorflow_datasets as tfds

from cnn.data import formats, raw_files, synthetic, uci_digits
from cnn.data.paths import DataError
from cnn.data.stats import ChannelStats

VERSION = tfds.core.Version("1.0.0")
RELEASE_NOTES = {"1.0.0": "Prepared by cnn.data from the official raw files, without TensorFlow."}


def _image_feature(shape: tuple) -> tfds.features.Tensor:
    """uint8 [H, W, C] stored as its raw bytes: exact, no TensorFlow to encode, a reshape to decode."""
    return tfds.features.Tensor(shape=tuple(shape), dtype=np.uint8, encoding=tfds.features.Encoding.BYTES)


class _Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Common base. Every subclass passes ``skip_registration=True``: registered, ``mnist`` would replace
    tfds's own ``mnist`` for ``tfds.builder("mnist")`` in the same process."""

    VERSION = VERSION
    RELEASE_NOTES = RELEASE_NOTES
    # tfds looks for a checksums file beside the builder's code (and, for an installed package, needs the
    # optional importlib_resources to find it); raw_files.RAW_FILES does the verifying here instead.
    code_path = None


class _ArrayBuilder(_Builder, skip_registration=True):
    """Base: verified raw files -> {split: (images uint8 [N, H, W, C], labels int [N])} -> array_record."""

    IMAGE_SHAPE: tuple = ()
    CLASS_NAMES: Optional[list] = None
    NUM_CLASSES: int = 0
    HOMEPAGE = ""
    CITATION = ""
    DESCRIPTION = ""

    def __init__(self, *, raw_dir: Optional[pathlib.Path] = None, download: bool = True, **kwargs):
        self.raw_dir = pathlib.Path(raw_dir) if raw_dir is not None else None
        self.download = download
        super().__init__(**kwargs)

    def _features(self) -> dict:
        label = (
            tfds.features.ClassLabel(names=self.CLASS_NAMES)
            if self.CLASS_NAMES
            else tfds.features.ClassLabel(num_classes=self.NUM_CLASSES)
        )
        return {"image": _image_feature(self.IMAGE_SHAPE), "label": label}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.DESCRIPTION,
            features=tfds.features.FeaturesDict(self._features()),
            supervised_keys=("image", "label"),
            disable_shuffling=True,  # keep the official order: test[:10] is the official first ten
            homepage=self.HOMEPAGE,
            citation=self.CITATION,
            metadata=tfds.core.MetadataDict(),
        )

    def _raw_paths(self, dl_manager) -> dict:
        if self.raw_dir is None:
            raise DataError(f"{self.name}: the builder needs raw_dir=<data_dir>/{self.name}")
        paths = raw_files.locate_verified(self.name, self.raw_dir, download_manager=dl_manager if self.download else None)
        self.info.metadata["raw_files"] = {name: raw_files.RAW_FILES[self.name][name].sha256 for name in paths}
        return paths

    def _read_splits(self, paths: dict) -> dict:
        """{split: (images uint8 [N, H, W, C], labels [N], *(feature name, values [N]))} from the verified files."""
        raise NotImplementedError(f"{type(self).__name__} must define _read_splits")

    def _split_generators(self, dl_manager):
        splits = self._read_splits(self._raw_paths(dl_manager))
        stats = ChannelStats(self.IMAGE_SHAPE[-1])
        stats.add(splits["train"][0])
        self.info.metadata.update(stats.as_metadata())
        return {name: self._generate_examples(*arrays) for name, arrays in splits.items()}

    def _generate_examples(self, images: np.ndarray, labels: np.ndarray, *extra_labels):
        for index in range(len(images)):
            example = {"image": images[index], "label": int(labels[index])}
            for key, values in extra_labels:
                example[key] = int(values[index])
            yield index, example


class _IdxBuilder(_ArrayBuilder, skip_registration=True):
    IMAGE_SHAPE = (28, 28, 1)

    def _read_splits(self, paths: dict) -> dict:
        return {
            "train": formats.read_idx_pair(paths["train-images-idx3-ubyte.gz"], paths["train-labels-idx1-ubyte.gz"]),
            "test": formats.read_idx_pair(paths["t10k-images-idx3-ubyte.gz"], paths["t10k-labels-idx1-ubyte.gz"]),
        }


class Mnist(_IdxBuilder, skip_registration=True):
    """MNIST handwritten digits: 60,000 train, 10,000 test, 28x28x1."""

    name = "mnist"
    CLASS_NAMES = [str(digit) for digit in range(10)]
    HOMEPAGE = "http://yann.lecun.com/exdb/mnist/"
    DESCRIPTION = "MNIST handwritten digits (LeCun, Cortes, Burges), from the official IDX files."
    CITATION = (
        "Y. LeCun, L. Bottou, Y. Bengio, P. Haffner. Gradient-based learning applied to document recognition. "
        "Proc. IEEE 86(11), 1998."
    )


class FashionMnist(_IdxBuilder, skip_registration=True):
    """Fashion-MNIST (Zalando): 60,000 train, 10,000 test, 28x28x1."""

    name = "fashion_mnist"
    CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    HOMEPAGE = "https://github.com/zalandoresearch/fashion-mnist"
    DESCRIPTION = "Fashion-MNIST article images, from the official IDX files."
    CITATION = (
        "H. Xiao, K. Rasul, R. Vollgraf. Fashion-MNIST: a novel image dataset for benchmarking machine learning "
        "algorithms. arXiv:1708.07747, 2017."
    )


class Kmnist(_IdxBuilder, skip_registration=True):
    """Kuzushiji-MNIST (ROIS-CODH): 60,000 train, 10,000 test, 28x28x1."""

    name = "kmnist"
    CLASS_NAMES = ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"]
    HOMEPAGE = "https://github.com/rois-codh/kmnist"
    DESCRIPTION = "Kuzushiji-MNIST cursive Japanese characters, from the official IDX files."
    CITATION = "T. Clanuwat et al. Deep learning for classical Japanese literature. arXiv:1812.01718, 2018."


class Cifar10(_ArrayBuilder, skip_registration=True):
    """CIFAR-10 from the official binary archive: 50,000 train, 10,000 test, 32x32x3."""

    name = "cifar10"
    IMAGE_SHAPE = (32, 32, 3)
    NUM_CLASSES = 10
    ARCHIVE = "cifar-10-binary.tar.gz"
    FOLDER = "cifar-10-batches-bin/"
    HOMEPAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"
    DESCRIPTION = "CIFAR-10 tiny images, from the official binary archive (never the pickled Python version)."
    CITATION = "A. Krizhevsky. Learning multiple layers of features from tiny images. Tech. report, U. Toronto, 2009."

    def _read_splits(self, paths: dict) -> dict:
        archive, folder = paths[self.ARCHIVE], self.FOLDER
        train_members = [f"{folder}data_batch_{i}.bin" for i in range(1, 6)]
        members = formats.read_tar_members(archive, train_members + [folder + "test_batch.bin", folder + "batches.meta.txt"])
        self.info.features["label"].names = formats.parse_label_names(members[folder + "batches.meta.txt"])
        train = [formats.parse_cifar_records(members[m], 1, f"{archive}:{m}") for m in train_members]
        test_images, test_labels = formats.parse_cifar_records(members[folder + "test_batch.bin"], 1, f"{archive}:test_batch.bin")
        return {
            "train": (np.concatenate([t[0] for t in train]), np.concatenate([t[1][:, 0] for t in train])),
            "test": (test_images, test_labels[:, 0]),
        }


class Cifar100(_ArrayBuilder, skip_registration=True):
    """CIFAR-100 from the official binary archive: fine ``label`` (100) and ``coarse_label`` (20)."""

    name = "cifar100"
    IMAGE_SHAPE = (32, 32, 3)
    NUM_CLASSES = 100
    ARCHIVE = "cifar-100-binary.tar.gz"
    FOLDER = "cifar-100-binary/"
    HOMEPAGE = Cifar10.HOMEPAGE
    DESCRIPTION = "CIFAR-100 tiny images, from the official binary archive (never the pickled Python version)."
    CITATION = Cifar10.CITATION

    def _features(self) -> dict:
        return {**super()._features(), "coarse_label": tfds.features.ClassLabel(num_classes=20)}

    def _read_splits(self, paths: dict) -> dict:
        archive, folder = paths[self.ARCHIVE], self.FOLDER
        names = ["train.bin", "test.bin", "fine_label_names.txt", "coarse_label_names.txt"]
        members = formats.read_tar_members(archive, [folder + n for n in names])
        self.info.features["label"].names = formats.parse_label_names(members[folder + "fine_label_names.txt"])
        self.info.features["coarse_label"].names = formats.parse_label_names(members[folder + "coarse_label_names.txt"])
        splits = {}
        for split in ("train", "test"):
            images, labels = formats.parse_cifar_records(members[f"{folder}{split}.bin"], 2, f"{archive}:{split}.bin")
            splits[split] = (images, labels[:, 1], ("coarse_label", labels[:, 0]))
        return splits


class SvhnCropped(_ArrayBuilder, skip_registration=True):
    """SVHN cropped digits from the official .mat files: train 73,257, test 26,032, extra 531,131."""

    name = "svhn_cropped"
    IMAGE_SHAPE = (32, 32, 3)
    CLASS_NAMES = [str(digit) for digit in range(10)]
    HOMEPAGE = "http://ufldl.stanford.edu/housenumbers/"
    DESCRIPTION = "SVHN cropped 32x32 house-number digits, from the official MATLAB files (label 10 stored as 0)."
    CITATION = "Y. Netzer et al. Reading digits in natural images with unsupervised feature learning. NIPS Workshop, 2011."

    def _read_splits(self, paths: dict) -> dict:
        return {split: formats.read_svhn_mat(paths[f"{split}_32x32.mat"]) for split in ("train", "test", "extra")}


class UciDigits(_ArrayBuilder, skip_registration=True):
    """The UCI optical digits from scikit-learn's ``load_digits`` (no download), placed in 28x28 as MNIST's
    digits (``cnn.data.uci_digits``): 1,201 train, 596 test, stratified and fixed."""

    name = "uci_digits"
    IMAGE_SHAPE = (28, 28, 1)
    CLASS_NAMES = [str(digit) for digit in range(10)]
    HOMEPAGE = "https://archive.ics.uci.edu/dataset/80/optical+recognition+of+handwritten+digits"
    DESCRIPTION = ("UCI optical-recognition handwritten digits (the 1,797 of scikit-learn's load_digits), 8x8 counts "
                   "0..16 scaled to 0..255, resized bilinearly to 20x20 and centred by mass in 28x28, as MNIST.")
    CITATION = ("E. Alpaydin, C. Kaynak. Optical Recognition of Handwritten Digits. UCI Machine Learning Repository, "
                "1998. doi:10.24432/C50P49")

    def _raw_paths(self, dl_manager) -> dict:
        self.info.metadata["raw_files"] = {}  # part of the scikit-learn package; its fingerprint instead:
        self.info.metadata["source"] = uci_digits.source_fingerprint()
        return {}

    def _read_splits(self, paths: dict) -> dict:
        return uci_digits.load()


@dataclasses.dataclass
class ImageFolderConfig(tfds.core.BuilderConfig):
    """Which folder, and the size every image is resized to."""

    folder: str = ""
    image_size: tuple = (64, 64)
    channels: int = 3
    splits: tuple = ()
    classes: tuple = ()


class ImageFolder(_Builder, skip_registration=True):
    """``<folder>/<split>/<class>/*.{jpg,jpeg,png}``, decoded, converted and resized at preparation."""

    name = "image_folder"

    def __init__(self, *, config: ImageFolderConfig, **kwargs):
        super().__init__(config=config, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        shape = (*config.image_size, config.channels)
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"Images of {config.folder}, one sub-folder per class, resized to {shape}.",
            features=tfds.features.FeaturesDict({
                "image": _image_feature(shape),
                "label": tfds.features.ClassLabel(names=list(config.classes)),
            }),
            supervised_keys=("image", "label"),
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict(raw_files={}),
        )

    def _split_generators(self, dl_manager):
        config = self.builder_config
        folder = pathlib.Path(config.folder)
        files = {split: formats.image_folder_files(folder, split, config.classes) for split in config.splits}
        stats_split = "train" if "train" in files else config.splits[0]
        return {split: self._generate_examples(files[split], split == stats_split) for split in config.splits}

    def _generate_examples(self, files: list, record_stats: bool):
        config = self.builder_config
        stats = ChannelStats(config.channels)
        for index, image, label in formats.iter_image_folder(files, tuple(config.image_size), config.channels):
            if record_stats:
                stats.add(image)
            yield index, {"image": image, "label": label}
        if record_stats:
            self.info.metadata.update(stats.as_metadata())


@dataclasses.dataclass
class SyntheticConfig(tfds.core.BuilderConfig):
    image_shape: tuple = (32, 32, 3)
    num_classes: int = 10
    num_train: int = 50_000
    num_test: int = 10_000
    seed: int = 0


class Synthetic(_Builder, skip_registration=True):
    """Class prototypes plus noise (see cnn.data.synthetic); any shape, class count and size."""

    name = "synthetic"

    def __init__(self, *, config: SyntheticConfig, **kwargs):
        super().__init__(config=config, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        return tfds.core.DatasetInfo(
            builder=self,
            description="Synthetic class prototypes plus uniform noise, generated by cnn.data.synthetic.",
            features=tfds.features.FeaturesDict({
                "image": _image_feature(tuple(config.image_shape)),
                "label": tfds.features.ClassLabel(num_classes=config.num_classes),
            }),
            supervised_keys=("image", "label"),
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict(raw_files={}),
        )

    def _split_generators(self, dl_manager):
        config = self.builder_config
        sizes = {"train": config.num_train, "test": config.num_test}
        return {split: self._generate_examples(split, size) for split, size in sizes.items()}

    def _generate_examples(self, split: str, size: int):
        config = self.builder_config
        stats = ChannelStats(config.image_shape[-1])
        chunks = synthetic.iter_chunks(split, size, tuple(config.image_shape), config.num_classes, config.seed)
        for start, images, labels in chunks:
            if split == "train":
                stats.add(images)
            for offset in range(len(images)):
                yield start + offset, {"image": images[offset], "label": int(labels[offset])}
        if split == "train":
            self.info.metadata.update(stats.as_metadata())
