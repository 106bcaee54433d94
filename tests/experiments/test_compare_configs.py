"""The CIFAR-10 and ImageNet comparison configs' smoke switches, end to end on generated files in the
official formats (CIFAR-10's binary tar.gz, ImageNet's train/<wnid>/*.JPEG folders)."""

from cnn.analysis import plots
from cnn import compare
from experiments.configs import compare_cifar10, compare_imagenet


def test_compare_cifar10_smoke_on_official_format_files(tmp_path, cifar10_files, assert_png):
    cifar10_files(tmp_path / "raw")
    config = compare_cifar10.get_config("smoke")
    config.base.data.data_dir = str(tmp_path / "raw")
    config.base.data.options.download = False
    compare.validate(config, compare.plan(config))  # all five build
    config.runs = [config.runs[1], config.runs[4]]  # two run (seconds each on 2 CPU cores): a ResNet and a DenseNet
    groups = compare.compare(config, tmp_path / "out")
    assert [g["name"] for g in groups] == ["resnet18", "densenet121"]
    table = (tmp_path / "out" / "results.md").read_text()
    assert "93.02% (kuangliu/pytorch-cifar)" in table and "| published |" in table
    for name in compare.COMPARISON_PLOTS:
        assert_png(tmp_path / "out" / name)
    assert_png(tmp_path / "out" / "runs" / "resnet18-smoke-seed0" / "plots" / "first_conv_filters.png")


def test_compare_imagenet_smoke_on_an_imagenet_style_folder(tmp_path, imagenet_folder, assert_png):
    folder = imagenet_folder(tmp_path / "imagenet")
    config = compare_imagenet.get_config("smoke")
    config.base.data.options.folder = str(folder)
    compare.validate(config, compare.plan(config))
    config.runs = [config.runs[1]]  # resnet50 runs (the others are built above; each costs seconds of compilation)
    groups = compare.compare(config, tmp_path / "out")
    assert [g["name"] for g in groups] == ["resnet50"] and "76.13% (torchvision)" in (tmp_path / "out" / "results.md").read_text()
    assert all(g["params"] > 0 and 0 <= g["accuracy_mean"] <= 1 for g in groups)
    for picture in plots.PICTURES:
        assert_png(tmp_path / "out" / "runs" / "resnet50-smoke-seed0" / "plots" / picture)
