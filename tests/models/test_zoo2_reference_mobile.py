"""Eval-mode logits of the mobile and transformer-era families against PyTorch references built here
from ``torch.nn`` primitives: MobileNet v1/v2/v3, kuangliu's CIFAR MobileNetV2, EfficientNet-B0,
ConvNeXt and the ViT baseline (see ``test_zoo2_reference_cnn.py`` for the method). The models run with
XLA's depthwise conv; a last test checks that the CPU kernels (``cnn.layers.cpu_kernels``) give
the same logits."""

import functools
import math

import jax
import numpy as np
import pytest

from cnn.layers import cpu_kernels
from cnn.models import create

torch = pytest.importorskip("torch", reason="PyTorch is the numerical reference (pip install -e '.[dev]')")
nn, F = torch.nn, torch.nn.functional
pytestmark = pytest.mark.torch


import zoo2_reference as ref  # noqa: E402  (tests/helpers, on the path through pytest's `pythonpath`)
Head, Unit, compare, image, random_variables = ref.Head, ref.Unit, ref.compare, ref.image, ref.random_variables


def make_divisible(value, divisor=8):
    """torchvision's ``_make_divisible``, restated."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class TorchInvertedResidual(nn.Module):
    """torchvision's InvertedResidual / MBConv (``se`` = (squeeze, act, gate)), kuangliu's shortcut rule optional."""

    def __init__(self, cin, cout, expanded, kernel, stride, act, se=None, eps=1e-5, always_expand=False,
                 projection=False):
        super().__init__()
        unit = functools.partial(Unit, eps=eps)
        self.expand = unit(cin, expanded, 1, act=act) if always_expand or expanded != cin else None
        self.depthwise = unit(expanded, expanded, kernel, stride, (kernel - 1) // 2, groups=expanded, act=act)
        if se is not None:
            self.se = nn.Module()
            self.se.reduce, self.se.expand = nn.Conv2d(expanded, se[0], 1), nn.Conv2d(se[0], expanded, 1)
            self.se_act, self.se_gate = se[1], se[2]
        else:
            self.se = None
        self.project = unit(expanded, cout, 1, act=None)
        self.identity = stride == 1 and cin == cout
        self.shortcut = unit(cin, cout, 1, act=None) if projection and stride == 1 and cin != cout else None

    def forward(self, x):
        y = x if self.expand is None else self.expand(x)
        y = self.depthwise(y)
        if self.se is not None:
            scale = self.se_act(self.se.reduce(y.mean(dim=(2, 3), keepdim=True)))
            y = y * self.se_gate(self.se.expand(scale))
        y = self.project(y)
        if self.identity:
            return x + y
        return y if self.shortcut is None else y + self.shortcut(x)


class TorchMobileNetV1(nn.Module):
    LAYERS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)) + ((512, 1),) * 5 + ((1024, 2), (1024, 1))

    def __init__(self, num_classes):
        super().__init__()
        self.stem, cin = Unit(3, 32, 3, 2, 1), 32
        for i, (cout, stride) in enumerate(self.LAYERS):
            layer = nn.Module()
            layer.depthwise = nn.Module()
            layer.depthwise.depthwise = Unit(cin, cin, 3, stride, 1, groups=cin)
            layer.pointwise = Unit(cin, cout, 1)
            setattr(self, f"layer{i + 1}", layer)
            cin = cout
        self.head = Head(1024, num_classes)

    def forward(self, x):
        x = self.stem(x)
        for i in range(len(self.LAYERS)):
            layer = getattr(self, f"layer{i + 1}")
            x = layer.pointwise(layer.depthwise.depthwise(x))
        return self.head(x)


class TorchMobileNetV2(nn.Module):
    """torchvision's MobileNetV2 or, with ``cifar``, kuangliu's: stride-1 stem and second stage, ReLU,
    an expand conv in every block, projection shortcuts at stride 1."""

    def __init__(self, num_classes, cifar=False):
        super().__init__()
        act = F.relu if cifar else F.relu6
        stages = ((1, 16, 1, 1), (6, 24, 2, 1 if cifar else 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                  (6, 160, 3, 2), (6, 320, 1, 1))
        self.stem, cin, index = Unit(3, 32, 3, 1 if cifar else 2, 1, act=act), 32, 0
        for t, c, n, s in stages:
            for i in range(n):
                index += 1
                setattr(self, f"block{index}", TorchInvertedResidual(
                    cin, c, cin * t, 3, s if i == 0 else 1, act, always_expand=cifar, projection=cifar))
                cin = c
        self.blocks = index
        self.last_conv, self.head = Unit(320, 1280, 1, act=act), Head(1280, num_classes)

    def forward(self, x):
        x = self.stem(x)
        for i in range(self.blocks):
            x = getattr(self, f"block{i + 1}")(x)
        return self.head(self.last_conv(x))


class TorchMobileNetV3Small(nn.Module):
    BLOCKS = ((3, 16, 16, True, "RE", 2), (3, 72, 24, False, "RE", 2), (3, 88, 24, False, "RE", 1),
              (5, 96, 40, True, "HS", 2), (5, 240, 40, True, "HS", 1), (5, 240, 40, True, "HS", 1),
              (5, 120, 48, True, "HS", 1), (5, 144, 48, True, "HS", 1), (5, 288, 96, True, "HS", 2),
              (5, 576, 96, True, "HS", 1), (5, 576, 96, True, "HS", 1))

    def __init__(self, num_classes):
        super().__init__()
        self.stem, cin = Unit(3, 16, 3, 2, 1, act=F.hardswish, eps=1e-3), 16
        for i, (kernel, expanded, cout, se, act, stride) in enumerate(self.BLOCKS):
            se = (make_divisible(expanded // 4), F.relu, F.hardsigmoid) if se else None
            setattr(self, f"block{i + 1}", TorchInvertedResidual(
                cin, cout, expanded, kernel, stride, F.hardswish if act == "HS" else F.relu, se=se, eps=1e-3))
            cin = cout
        self.last_conv = Unit(96, 576, 1, act=F.hardswish, eps=1e-3)
        self.head = Head(576, num_classes, hidden=(1024,), act=F.hardswish)

    def forward(self, x):
        x = self.stem(x)
        for i in range(len(self.BLOCKS)):
            x = getattr(self, f"block{i + 1}")(x)
        return self.head(self.last_conv(x))


class TorchEfficientNetB0(nn.Module):
    STAGES = ((1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
              (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1))

    def __init__(self, num_classes):
        super().__init__()
        self.stem, self.names = Unit(3, 32, 3, 2, 1, act=F.silu), []
        for s, (t, kernel, stride, cin, cout, n) in enumerate(self.STAGES):
            for i in range(n):
                name = f"stage{s + 1}_block{i + 1}"
                block_in = cin if i == 0 else cout
                setattr(self, name, TorchInvertedResidual(
                    block_in, cout, make_divisible(block_in * t), kernel, stride if i == 0 else 1, F.silu,
                    se=(max(1, block_in // 4), F.silu, torch.sigmoid)))
                self.names.append(name)
        self.last_conv, self.head = Unit(320, 1280, 1, act=F.silu), Head(1280, num_classes)

    def forward(self, x):
        x = self.stem(x)
        for name in self.names:
            x = getattr(self, name)(x)  # stochastic depth is the identity in evaluation
        return self.head(self.last_conv(x))


@pytest.mark.parametrize("name, reference, size", [
    ("mobilenet_v1", TorchMobileNetV1, 64),
    ("mobilenet_v2", TorchMobileNetV2, 64),
    ("mobilenet_v2_cifar", functools.partial(TorchMobileNetV2, cifar=True), 32),
    ("mobilenet_v3_small", TorchMobileNetV3Small, 64),
    ("efficientnet_b0", TorchEfficientNetB0, 64),
])
def test_mobile_family_matches_torch(name, reference, size, assert_close):
    compare(create(name, num_classes=10), reference(10), image((2, size, size, 3)), assert_close)


def test_mobilenet_v2_cifar_reference_has_kuangliu_count():
    assert sum(p.numel() for p in TorchMobileNetV2(10, cifar=True).parameters()) == 2_296_922


# ---------------------------------------------------------------- ConvNeXt
class TorchConvNeXt(nn.Module):
    def __init__(self, num_classes, depths, widths):
        super().__init__()
        self.depths = depths
        self.stem, self.stem_norm = nn.Conv2d(3, widths[0], 4, 4), nn.LayerNorm(widths[0], eps=1e-6)
        for s, (depth, width) in enumerate(zip(depths, widths)):
            if s > 0:
                down = nn.Module()
                down.norm, down.conv = nn.LayerNorm(widths[s - 1], eps=1e-6), nn.Conv2d(widths[s - 1], width, 2, 2)
                setattr(self, f"downsample{s}", down)
            for b in range(depth):
                block = nn.Module()
                block.depthwise = nn.Conv2d(width, width, 7, padding=3, groups=width)
                block.norm = nn.LayerNorm(width, eps=1e-6)
                block.pointwise1, block.pointwise2 = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)
                block.layer_scale = nn.Parameter(torch.ones(width, 1, 1))  # torchvision's shape
                setattr(self, f"stage{s + 1}_block{b + 1}", block)
        self.head_norm, self.fc = nn.LayerNorm(widths[-1], eps=1e-6), nn.Linear(widths[-1], num_classes)

    @staticmethod
    def _channels_last(x, fn):
        return fn(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def forward(self, x):
        x = self._channels_last(self.stem(x), self.stem_norm)
        for s, depth in enumerate(self.depths):
            if s > 0:
                down = getattr(self, f"downsample{s}")
                x = down.conv(self._channels_last(x, down.norm))
            for b in range(depth):
                block = getattr(self, f"stage{s + 1}_block{b + 1}")
                y = self._channels_last(block.depthwise(x), lambda t: block.pointwise2(
                    F.gelu(block.pointwise1(block.norm(t)))))
                x = x + block.layer_scale * y
        return self.fc(self.head_norm(x.mean(dim=(2, 3))))


def test_convnext_matches_torch(assert_close):
    """ConvNeXt's layout with depths (1, 1, 2, 1) and widths (16, 32, 48, 64), layer scales of order 1."""
    depths, widths = (1, 1, 2, 1), (16, 32, 48, 64)
    model = create("convnext_tiny", num_classes=10, depths=depths, widths=widths)
    compare(model, TorchConvNeXt(10, depths, widths), image((2, 64, 64, 3)), assert_close)


# ---------------------------------------------------------------- ViT (timm layout)
class TorchViT(nn.Module):
    def __init__(self, num_classes, dim, depth, heads, patch, tokens):
        super().__init__()
        self.heads, self.depth = heads, depth
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, dim, patch, patch)
        self.cls_token, self.pos_embed = nn.Parameter(torch.zeros(1, 1, dim)), nn.Parameter(torch.zeros(1, tokens, dim))
        for i in range(depth):
            block = nn.Module()
            block.norm1, block.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
            block.attn, block.mlp = nn.Module(), nn.Module()
            block.attn.qkv, block.attn.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
            block.mlp.fc1, block.mlp.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
            setattr(self, f"block{i + 1}", block)
        self.norm, self.head = nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, num_classes)

    def _attention(self, attn, x):
        n, length, dim = x.shape
        q, k, v = attn.qkv(x).reshape(n, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        weights = ((q * (dim // self.heads) ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
        return attn.proj((weights @ v).transpose(1, 2).reshape(n, length, dim))

    def forward(self, x):
        x = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for i in range(self.depth):
            block = getattr(self, f"block{i + 1}")
            x = x + self._attention(block.attn, block.norm1(x))
            x = x + block.mlp.fc2(F.gelu(block.mlp.fc1(block.norm2(x))))
        return self.head(self.norm(x)[:, 0])


def test_vit_matches_torch(assert_close):
    """timm's ViT layout at dim 48, 3 heads, 2 blocks, 8x8 patches of a 32x32 image (16 + 1 tokens)."""
    model = create("vit_tiny_patch16_224", num_classes=10, dim=48, depth=2, heads=3, patch_size=8)
    compare(model, TorchViT(10, 48, 2, 3, 8, 17), image((2, 32, 32, 3)), assert_close)


# ---------------------------------------------------------------- the CPU kernels
@pytest.mark.parametrize("name, overrides, size", [
    ("mobilenet_v3_small", {}, 64),
    ("convnext_tiny", {"depths": (1, 1, 1, 1), "widths": (16, 24, 32, 40)}, 64),
])
def test_cpu_kernels_give_the_same_logits(name, overrides, size):
    """Same parameters, same logits (to float32 summation order) with the CPU kernels injected."""
    native = create(name, num_classes=10, **overrides)
    shifted = cpu_kernels.use_cpu_kernels(native)
    assert shifted.conv is not native.conv
    x = image((2, size, size, 3))
    variables = random_variables(native, x)
    expected = jax.jit(lambda v: native.apply(v, x, train=False))(variables)
    actual = jax.jit(lambda v: shifted.apply(v, x, train=False))(variables)
    scale = float(np.max(np.abs(expected)))
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * scale)
    assert math.isfinite(scale) and scale > 0
