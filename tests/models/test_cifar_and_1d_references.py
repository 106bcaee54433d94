"""Eval-mode logits of the models no torchvision or timm class reproduces, against PyTorch references written
here from ``torch.nn`` primitives: kuangliu/pytorch-cifar's DenseNet-121, MobileNetV2 and VGG-16 (with their
published parameter counts), and the 1D CNN. Every model with a twin is checked against the twin's real class
instead (``test_torch_twins.py``).

Our variables are random (He-scaled kernels, non-trivial BatchNorm statistics) and copied into the float64
reference (``torch_blocks.load``), so the tolerance bounds our float32 error through the network.
"""

import numpy as np
import pytest

from cnn.models import create

torch = pytest.importorskip("torch", reason="PyTorch is the numerical reference (pip install -e '.[dev]')")
nn, F = torch.nn, torch.nn.functional
pytestmark = pytest.mark.torch


import torch_blocks as ref  # noqa: E402  (tests/helpers, on the path through pytest's `pythonpath`)
Head, Unit, compare, image = ref.Head, ref.Unit, ref.compare, ref.image


# ---------------------------------------------------------------- kuangliu's CIFAR DenseNet-121
class TorchPreAct(nn.Module):
    def __init__(self, cin, cout, kernel):
        super().__init__()
        self.norm, self.conv = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False)

    def forward(self, x):
        return self.conv(F.relu(self.norm(x)))


class TorchCifarDenseNet(nn.Module):
    """A bare 3x3 stem, no pool, each layer's new maps concatenated before its input (kuangliu's order)."""

    def __init__(self, num_classes, block_sizes, growth, stem_width):
        super().__init__()
        self.block_sizes = block_sizes
        self.stem = Unit(3, stem_width, 3, 1, 1, norm=False, act=None, bias=False)
        channels = stem_width
        for b, size in enumerate(block_sizes):
            block = nn.Module()
            for i in range(size):
                layer = nn.Module()
                layer.bottleneck, layer.conv = TorchPreAct(channels, 4 * growth, 1), TorchPreAct(4 * growth, growth, 3)
                setattr(block, f"layer{i + 1}", layer)
                channels += growth
            setattr(self, f"block{b + 1}", block)
            if b < len(block_sizes) - 1:
                transition = nn.Module()
                transition.unit = TorchPreAct(channels, channels // 2, 1)
                setattr(self, f"transition{b + 1}", transition)
                channels //= 2
        self.final_norm, self.head = nn.BatchNorm2d(channels), Head(channels, num_classes)

    def forward(self, x):
        x = self.stem(x)
        for b, size in enumerate(self.block_sizes):
            for i in range(size):
                layer = getattr(getattr(self, f"block{b + 1}"), f"layer{i + 1}")
                x = torch.cat([layer.conv(layer.bottleneck(x)), x], 1)
            if b < len(self.block_sizes) - 1:
                x = F.avg_pool2d(getattr(self, f"transition{b + 1}").unit(x), 2)
        return self.head(F.relu(self.final_norm(x)))


def test_densenet121_cifar_matches_torch(assert_close):
    """A narrow kuangliu DenseNet (growth 8, blocks 2-3-2-2); the registered one differs only in sizes."""
    model = create("densenet121_cifar", num_classes=10, block_sizes=(2, 3, 2, 2), growth_rate=8, stem_width=16)
    compare(model, TorchCifarDenseNet(10, (2, 3, 2, 2), 8, 16), image((2, 32, 32, 3)), assert_close)


# ---------------------------------------------------------------- kuangliu's CIFAR MobileNetV2
class TorchCifarInvertedResidual(nn.Module):
    """1x1 expand (always), 3x3 depthwise, 1x1 project; identity shortcut, or a 1x1 projection at stride 1."""

    def __init__(self, cin, cout, expanded, stride):
        super().__init__()
        self.expand = Unit(cin, expanded, 1)
        self.depthwise = Unit(expanded, expanded, 3, stride, 1, groups=expanded)
        self.project = Unit(expanded, cout, 1, act=None)
        self.identity = stride == 1 and cin == cout
        self.shortcut = Unit(cin, cout, 1, act=None) if stride == 1 and cin != cout else None

    def forward(self, x):
        y = self.project(self.depthwise(self.expand(x)))
        if self.identity:
            return x + y
        return y if self.shortcut is None else y + self.shortcut(x)


class TorchCifarMobileNetV2(nn.Module):
    """Stride-1 stem and second stage, ReLU (not ReLU6)."""

    STAGES = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))

    def __init__(self, num_classes):
        super().__init__()
        self.stem, cin, index = Unit(3, 32, 3, 1, 1), 32, 0
        for t, c, n, s in self.STAGES:
            for i in range(n):
                index += 1
                setattr(self, f"block{index}", TorchCifarInvertedResidual(cin, c, cin * t, s if i == 0 else 1))
                cin = c
        self.blocks = index
        self.last_conv, self.head = Unit(320, 1280, 1), Head(1280, num_classes)

    def forward(self, x):
        x = self.stem(x)
        for i in range(self.blocks):
            x = getattr(self, f"block{i + 1}")(x)
        return self.head(self.last_conv(x))


def test_mobilenet_v2_cifar_matches_torch_and_kuangliu_count(assert_close):
    reference = TorchCifarMobileNetV2(10)
    assert sum(p.numel() for p in reference.parameters()) == 2_296_922
    compare(create("mobilenet_v2_cifar", num_classes=10), reference, image((2, 32, 32, 3)), assert_close)


# ---------------------------------------------------------------- kuangliu's CIFAR VGG16
class TorchVGGCifar(nn.Module):
    LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")

    def __init__(self, num_classes):
        super().__init__()
        cin, index = 3, 0
        for item in self.LAYERS:
            if item != "M":
                index += 1
                setattr(self, f"conv{index}", Unit(cin, item, 3, 1, 1, bias=True))  # bias and BatchNorm, as kuangliu
                cin = item
        self.head = Head(512, num_classes)

    def forward(self, x):
        index = 0
        for item in self.LAYERS:
            if item == "M":
                x = F.max_pool2d(x, 2)
            else:
                index += 1
                x = getattr(self, f"conv{index}")(x)
        return self.head(x)


def test_vgg16_cifar_matches_torch_and_kuangliu_count(assert_close):
    reference = TorchVGGCifar(10)
    assert sum(p.numel() for p in reference.parameters()) == 14_728_266
    compare(create("vgg16_cifar", num_classes=10), reference, image((2, 32, 32, 3)), assert_close)


# ---------------------------------------------------------------- 1D CNN
class TorchCNN1D(nn.Module):
    def __init__(self, num_classes, cin, widths, kernel, vocab=0):
        super().__init__()
        self.embed = nn.Embedding(vocab, cin) if vocab else None
        for i, width in enumerate(widths):
            setattr(self, f"conv{i + 1}", Unit(cin, width, kernel, 1, kernel // 2, dims=1))
            cin = width
        self.widths, self.fc = len(widths), nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.embed(x).transpose(1, 2) if self.embed is not None else x
        for i in range(self.widths):
            x = getattr(self, f"conv{i + 1}")(x if i == 0 else F.max_pool1d(x, 2))
        return self.fc(x.amax(dim=2))


@pytest.mark.parametrize("tokens", [False, True])
def test_cnn1d_matches_torch(tokens, assert_close):
    if tokens:
        model = create("cnn1d", num_classes=4, vocab_size=30, embed_dim=8, widths=(16, 24, 32), kernel_size=5)
        x = np.random.default_rng(2).integers(0, 30, (2, 41)).astype(np.int32)
        reference = TorchCNN1D(4, 8, (16, 24, 32), 5, vocab=30)
    else:
        model = create("cnn1d", num_classes=4, widths=(16, 24, 32), kernel_size=5)
        x, reference = image((2, 41, 3)), TorchCNN1D(4, 3, (16, 24, 32), 5)
    compare(model, reference, x, assert_close)

