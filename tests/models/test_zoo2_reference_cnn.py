"""Eval-mode logits of zoo II against PyTorch references built here from ``torch.nn`` primitives:
Inception (GoogLeNet, Inception-v3), DenseNet (ImageNet and kuangliu CIFAR layouts), SqueezeNet,
the 3D ResNet, the 1D CNN and kuangliu's CIFAR VGG16.

Our variables are random (He-scaled kernels, non-trivial BatchNorm statistics) and copied into the
float64 reference (``zoo2_torch.load``), so the tolerance bounds our float32 error through the
network. Small inputs and, where the family allows, narrow configurations keep each test fast;
input sizes are chosen so that ceil-mode pools really round up.
"""

import functools

import numpy as np
import pytest

from cnn.models import create

torch = pytest.importorskip("torch", reason="PyTorch is the numerical reference (pip install -e '.[dev]')")
nn, F = torch.nn, torch.nn.functional
pytestmark = pytest.mark.torch


import zoo2_reference as ref  # noqa: E402  (tests/helpers, on the path through pytest's `pythonpath`)
Head, Unit, compare, image = ref.Head, ref.Unit, ref.compare, ref.image


# ---------------------------------------------------------------- Inception (torchvision layout)
bn_unit = functools.partial(Unit, eps=1e-3)


class TorchInception(nn.Module):
    def __init__(self, cin, c1, c3r, c3, c5r, c5, pool_proj):
        super().__init__()
        self.branch1x1, self.branch3x3_reduce = bn_unit(cin, c1, 1), bn_unit(cin, c3r, 1)
        self.branch3x3 = bn_unit(c3r, c3, 3, padding=1)
        self.branch5x5_reduce, self.branch5x5 = bn_unit(cin, c5r, 1), bn_unit(c5r, c5, 3, padding=1)  # vision#906
        self.pool_proj = bn_unit(cin, pool_proj, 1)

    def forward(self, x):
        pooled = F.max_pool2d(x, 3, 1, 1, ceil_mode=True)
        return torch.cat([self.branch1x1(x), self.branch3x3(self.branch3x3_reduce(x)),
                          self.branch5x5(self.branch5x5_reduce(x)), self.pool_proj(pooled)], 1)


class TorchGoogLeNet(nn.Module):
    MODULES = {"3a": (192, 64, 96, 128, 16, 32, 32), "3b": (256, 128, 128, 192, 32, 96, 64),
               "4a": (480, 192, 96, 208, 16, 48, 64), "4b": (512, 160, 112, 224, 24, 64, 64),
               "4c": (512, 128, 128, 256, 24, 64, 64), "4d": (512, 112, 144, 288, 32, 64, 64),
               "4e": (528, 256, 160, 320, 32, 128, 128), "5a": (832, 256, 160, 320, 32, 128, 128),
               "5b": (832, 384, 192, 384, 48, 128, 128)}

    def __init__(self, num_classes):
        super().__init__()
        self.conv1, self.conv2, self.conv3 = bn_unit(3, 64, 7, 2, 3), bn_unit(64, 64, 1), bn_unit(64, 192, 3, padding=1)
        for key, widths in self.MODULES.items():
            setattr(self, f"inception{key}", TorchInception(*widths))
        self.head = Head(1024, num_classes)

    def forward(self, x):
        x = F.max_pool2d(self.conv1(x), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.conv3(self.conv2(x)), 3, 2, ceil_mode=True)
        for key in self.MODULES:
            if key in ("4a", "5a"):
                x = F.max_pool2d(x, 3 if key == "4a" else 2, 2, ceil_mode=True)
            x = getattr(self, f"inception{key}")(x)
        return self.head(x)


def test_googlenet_matches_torch(assert_close):
    """40x40: three of the four ceil-mode pools round up (20 -> 10, 10 -> 5, 3 -> 2)."""
    compare(create("googlenet", num_classes=10), TorchGoogLeNet(10), image((2, 40, 40, 3)), assert_close)


class TorchInceptionV3(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        u = bn_unit
        self.Conv2d_1a_3x3, self.Conv2d_2a_3x3 = u(3, 32, 3, 2), u(32, 32, 3)
        self.Conv2d_2b_3x3, self.Conv2d_3b_1x1, self.Conv2d_4a_3x3 = u(32, 64, 3, padding=1), u(64, 80, 1), u(80, 192, 3)
        self.names = []
        for name, cin, pool in (("Mixed_5b", 192, 32), ("Mixed_5c", 256, 64), ("Mixed_5d", 288, 64)):
            self._add(name, "A", b1=u(cin, 64, 1), b5_1=u(cin, 48, 1), b5_2=u(48, 64, 5, padding=2),
                      d1=u(cin, 64, 1), d2=u(64, 96, 3, padding=1), d3=u(96, 96, 3, padding=1), bp=u(cin, pool, 1))
        self._add("Mixed_6a", "B", b3=u(288, 384, 3, 2), d1=u(288, 64, 1), d2=u(64, 96, 3, padding=1), d3=u(96, 96, 3, 2))
        row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
        for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
            self._add(name, "C", b1=u(768, 192, 1), s1=u(768, c7, 1), s2=u(c7, c7, **row), s3=u(c7, 192, **col),
                      d1=u(768, c7, 1), d2=u(c7, c7, **col), d3=u(c7, c7, **row), d4=u(c7, c7, **col),
                      d5=u(c7, 192, **row), bp=u(768, 192, 1))
        self._add("Mixed_7a", "D", b1=u(768, 192, 1), b2=u(192, 320, 3, 2), s1=u(768, 192, 1), s2=u(192, 192, **row),
                  s3=u(192, 192, **col), s4=u(192, 192, 3, 2))
        r3, c3 = dict(kernel=(1, 3), padding=(0, 1)), dict(kernel=(3, 1), padding=(1, 0))
        for name, cin in (("Mixed_7b", 1280), ("Mixed_7c", 2048)):
            self._add(name, "E", b1=u(cin, 320, 1), s1=u(cin, 384, 1), sa=u(384, 384, **r3), sb=u(384, 384, **c3),
                      d1=u(cin, 448, 1), d2=u(448, 384, 3, padding=1), da=u(384, 384, **r3), db=u(384, 384, **c3),
                      bp=u(cin, 192, 1))
        self.head = Head(2048, num_classes)

    # torchvision's branch names, in the order of our short keys above.
    TORCHVISION_NAMES = {
        "A": dict(b1="branch1x1", b5_1="branch5x5_1", b5_2="branch5x5_2", d1="branch3x3dbl_1", d2="branch3x3dbl_2",
                  d3="branch3x3dbl_3", bp="branch_pool"),
        "B": dict(b3="branch3x3", d1="branch3x3dbl_1", d2="branch3x3dbl_2", d3="branch3x3dbl_3"),
        "C": dict(b1="branch1x1", s1="branch7x7_1", s2="branch7x7_2", s3="branch7x7_3", d1="branch7x7dbl_1",
                  d2="branch7x7dbl_2", d3="branch7x7dbl_3", d4="branch7x7dbl_4", d5="branch7x7dbl_5", bp="branch_pool"),
        "D": dict(b1="branch3x3_1", b2="branch3x3_2", s1="branch7x7x3_1", s2="branch7x7x3_2", s3="branch7x7x3_3",
                  s4="branch7x7x3_4"),
        "E": dict(b1="branch1x1", s1="branch3x3_1", sa="branch3x3_2a", sb="branch3x3_2b", d1="branch3x3dbl_1",
                  d2="branch3x3dbl_2", da="branch3x3dbl_3a", db="branch3x3dbl_3b", bp="branch_pool"),
    }

    def _add(self, name, kind, **units):
        module = nn.Module()
        for key, unit in units.items():
            setattr(module, self.TORCHVISION_NAMES[kind][key], unit)
        module.kind = kind
        setattr(self, name, module)
        self.names.append(name)

    @staticmethod
    def _mixed(m, x):
        pool = lambda t: m.branch_pool(F.avg_pool2d(t, 3, 1, 1))  # noqa: E731
        if m.kind == "A":
            return [m.branch1x1(x), m.branch5x5_2(m.branch5x5_1(x)),
                    m.branch3x3dbl_3(m.branch3x3dbl_2(m.branch3x3dbl_1(x))), pool(x)]
        if m.kind == "B":
            return [m.branch3x3(x), m.branch3x3dbl_3(m.branch3x3dbl_2(m.branch3x3dbl_1(x))), F.max_pool2d(x, 3, 2)]
        if m.kind == "C":
            s = m.branch7x7_3(m.branch7x7_2(m.branch7x7_1(x)))
            d = x
            for i in range(1, 6):
                d = getattr(m, f"branch7x7dbl_{i}")(d)
            return [m.branch1x1(x), s, d, pool(x)]
        if m.kind == "D":
            s = m.branch7x7x3_4(m.branch7x7x3_3(m.branch7x7x3_2(m.branch7x7x3_1(x))))
            return [m.branch3x3_2(m.branch3x3_1(x)), s, F.max_pool2d(x, 3, 2)]
        s = m.branch3x3_1(x)
        d = m.branch3x3dbl_2(m.branch3x3dbl_1(x))
        return [m.branch1x1(x), m.branch3x3_2a(s), m.branch3x3_2b(s), m.branch3x3dbl_3a(d), m.branch3x3dbl_3b(d),
                pool(x)]

    def forward(self, x):
        x = F.max_pool2d(self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x))), 3, 2)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, 2)
        for name in self.names:
            x = torch.cat(self._mixed(getattr(self, name), x), 1)
        return self.head(x)


def test_inception_v3_matches_torch(assert_close):
    """Eval mode at 75x75 (the smallest input; the auxiliary head only runs in training)."""
    compare(create("inception_v3", num_classes=10, aux_logits=False), TorchInceptionV3(10), image((1, 75, 75, 3)),
            assert_close)


# ---------------------------------------------------------------- DenseNet (torchvision and kuangliu)
class TorchPreAct(nn.Module):
    def __init__(self, cin, cout, kernel):
        super().__init__()
        self.norm, self.conv = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False)

    def forward(self, x):
        return self.conv(F.relu(self.norm(x)))


class TorchDenseNet(nn.Module):
    def __init__(self, num_classes, block_sizes, growth, stem_width, cifar):
        super().__init__()
        self.block_sizes, self.cifar = block_sizes, cifar
        self.stem = (Unit(3, stem_width, 3, 1, 1, norm=False, act=None, bias=False) if cifar
                     else Unit(3, stem_width, 7, 2, 3))
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
        x = self.stem(x) if self.cifar else F.max_pool2d(self.stem(x), 3, 2, 1)
        for b, size in enumerate(self.block_sizes):
            for i in range(size):
                layer = getattr(getattr(self, f"block{b + 1}"), f"layer{i + 1}")
                new = layer.conv(layer.bottleneck(x))
                x = torch.cat([new, x] if self.cifar else [x, new], 1)  # kuangliu puts the new maps first
            if b < len(self.block_sizes) - 1:
                x = F.avg_pool2d(getattr(self, f"transition{b + 1}").unit(x), 2)
        return self.head(F.relu(self.final_norm(x)))


@pytest.mark.parametrize("cifar", [False, True])
def test_densenet_matches_torch(cifar, assert_close):
    """A narrow DenseNet-BC (growth 8, blocks 2-3-2-2) in both layouts; the registered ones differ only in sizes."""
    name = "densenet121_cifar" if cifar else "densenet121"
    model = create(name, num_classes=10, block_sizes=(2, 3, 2, 2), growth_rate=8, stem_width=16)
    reference = TorchDenseNet(10, (2, 3, 2, 2), 8, 16, cifar)
    compare(model, reference, image((2, 32 if cifar else 64, 32 if cifar else 64, 3)), assert_close)


# ---------------------------------------------------------------- SqueezeNet 1.1
class TorchSqueezeNet(nn.Module):
    FIRES = ((64, 16, 64), (128, 16, 64), (128, 32, 128), (256, 32, 128), (256, 48, 192), (384, 48, 192),
             (384, 64, 256), (512, 64, 256))

    def __init__(self, num_classes):
        super().__init__()
        self.stem = Unit(3, 64, 3, 2, norm=False)
        for i, (cin, squeeze, expand) in enumerate(self.FIRES):
            fire = nn.Module()
            fire.squeeze = Unit(cin, squeeze, 1, norm=False)
            fire.expand1x1, fire.expand3x3 = Unit(squeeze, expand, 1, norm=False), Unit(squeeze, expand, 3, 1, 1, norm=False)
            setattr(self, f"fire{i + 2}", fire)
        self.classifier = nn.Conv2d(512, num_classes, 1)

    def forward(self, x):
        x = F.max_pool2d(self.stem(x), 3, 2, ceil_mode=True)
        for i in range(8):
            if i in (2, 4):
                x = F.max_pool2d(x, 3, 2, ceil_mode=True)
            fire = getattr(self, f"fire{i + 2}")
            s = fire.squeeze(x)
            x = torch.cat([fire.expand1x1(s), fire.expand3x3(s)], 1)
        return F.relu(self.classifier(x)).mean(dim=(2, 3))


def test_squeezenet1_1_matches_torch(assert_close):
    """66x66: every ceil-mode pool rounds up (32 -> 16, 16 -> 8, 8 -> 4)."""
    compare(create("squeezenet1_1", num_classes=10), TorchSqueezeNet(10), image((2, 66, 66, 3)), assert_close)


# ---------------------------------------------------------------- R3D-18 (torchvision video)
class TorchVideoResNet(nn.Module):
    def __init__(self, num_classes, widths):
        super().__init__()
        unit = functools.partial(Unit, dims=3)
        self.stem = unit(3, widths[0], (3, 7, 7), (1, 2, 2), (1, 3, 3))
        cin = widths[0]
        for s, width in enumerate(widths):
            for b in range(2):
                stride = 2 if s > 0 and b == 0 else 1
                block = nn.Module()
                block.conv1, block.conv2 = unit(cin, width, 3, stride, 1), unit(width, width, 3, 1, 1, act=None)
                block.shortcut = unit(cin, width, 1, stride, act=None) if stride != 1 or cin != width else None
                setattr(self, f"stage{s + 1}_block{b + 1}", block)
                cin = width
        self.head = Head(cin, num_classes)

    def forward(self, x):
        x = self.stem(x)
        for s in range(4):
            for b in range(2):
                block = getattr(self, f"stage{s + 1}_block{b + 1}")
                shortcut = x if block.shortcut is None else block.shortcut(x)
                x = F.relu(block.conv2(block.conv1(x)) + shortcut)
        return self.head(x)


def test_r3d_matches_torch(assert_close):
    """r3d_18's layout at a quarter of its widths, on a [1, T=4, 16, 16, 3] clip (stride 2 halves time too)."""
    widths = (16, 32, 64, 128)
    model = create("r3d_18", num_classes=7, widths=widths, stem_width=16)
    compare(model, TorchVideoResNet(7, widths), image((1, 4, 16, 16, 3)), assert_close)


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
