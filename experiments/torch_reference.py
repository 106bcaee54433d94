"""PyTorch baselines for the benchmarks: the zoo's real torchvision and timm twins where they exist
(``cnn.models.torch_twins``), and networks rebuilt here from ``torch.nn`` primitives for the models that
have none (the seed's network, LeNet-5, the CIFAR ResNets), in PyTorch's NCHW layout::

    model = build("resnet18_cifar", num_classes=10)   # torch.nn.Module
    optimizer = make_optimizer(model, "sgd")
"""

from __future__ import annotations

import functools
import time
from typing import Callable, Dict, Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F


# --- small networks (cnn/models/simple.py) -------------------------------------------------------
def simple_cnn(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """The seed's Keras MNIST network: conv32-pool-conv64-pool-dense128-dense."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 5 * 5, 128), nn.ReLU(), nn.Linear(128, num_classes),
    )


def lenet5(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """LeNet-5 with ReLU and max pooling, 28x28 input padded by 2."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, num_classes),
    )


# --- ResNets (cnn/models/resnet.py) ---------------------------------------------------------------
def _conv_bn(in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, stride, padding=kernel // 2, bias=False), nn.BatchNorm2d(out_channels)
    )


class _ZeroPadShortcut(nn.Module):
    """Option A (He et al. 2016): subsample, then pad channels with zeros on both sides."""

    def __init__(self, out_channels: int, stride: int):
        super().__init__()
        self.out_channels, self.stride = out_channels, stride

    def forward(self, x):
        x = x[:, :, :: self.stride, :: self.stride]
        extra = self.out_channels - x.shape[1]
        return F.pad(x, (0, 0, 0, 0, extra // 2, extra - extra // 2))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int, shortcut: str):
        super().__init__()
        self.conv1, self.conv2 = _conv_bn(in_channels, planes, 3, stride), _conv_bn(planes, planes, 3)
        self.shortcut = _shortcut(in_channels, planes * self.expansion, stride, shortcut)

    def forward(self, x):
        return F.relu(self.conv2(F.relu(self.conv1(x))) + self.shortcut(x))


class Bottleneck(nn.Module):
    """ResNet v1.5: the stride on the 3x3 conv, as torchvision."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int, shortcut: str):
        super().__init__()
        self.conv1, self.conv2 = _conv_bn(in_channels, planes, 1), _conv_bn(planes, planes, 3, stride)
        self.conv3 = _conv_bn(planes, planes * 4, 1)
        self.shortcut = _shortcut(in_channels, planes * self.expansion, stride, shortcut)

    def forward(self, x):
        y = F.relu(self.conv2(F.relu(self.conv1(x))))
        return F.relu(self.conv3(y) + self.shortcut(x))


def _shortcut(in_channels: int, out_channels: int, stride: int, kind: str) -> nn.Module:
    if in_channels == out_channels and stride == 1:
        return nn.Identity()
    return _conv_bn(in_channels, out_channels, 1, stride) if kind == "projection" else _ZeroPadShortcut(out_channels, stride)


class ResNet(nn.Module):
    def __init__(self, block, stage_sizes: Sequence[int], num_classes: int, widths=(64, 128, 256, 512),
                 stem: str = "imagenet", stem_width: int = 64, shortcut: str = "projection", in_channels: int = 3):
        super().__init__()
        if stem == "imagenet":
            layers = [nn.Conv2d(in_channels, stem_width, 7, 2, 3, bias=False), nn.BatchNorm2d(stem_width), nn.ReLU(),
                      nn.MaxPool2d(3, 2, 1)]
        else:
            layers = [nn.Conv2d(in_channels, stem_width, 3, 1, 1, bias=False), nn.BatchNorm2d(stem_width), nn.ReLU()]
        channels = stem_width
        for stage, (blocks, width) in enumerate(zip(stage_sizes, widths)):
            for index in range(blocks):
                layers.append(block(channels, width, 2 if stage > 0 and index == 0 else 1, shortcut))
                channels = width * block.expansion
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


# --- VGG (cnn/models/vgg.py) -------------------------------------------------------------------------
VGG_LAYERS = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}


def vgg(depth: int, num_classes: int, batch_norm: bool = False, cifar: bool = False, in_channels: int = 3) -> nn.Module:
    layers, channels = [], in_channels
    for item in VGG_LAYERS[depth]:
        if item == "M":
            layers.append(nn.MaxPool2d(2))
            continue
        layers += [nn.Conv2d(channels, item, 3, padding=1)] + ([nn.BatchNorm2d(item)] if batch_norm else []) + [nn.ReLU()]
        channels = item
    if cifar:  # global pool, one dense layer
        head = [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)]
    else:
        head = [nn.AdaptiveAvgPool2d(7), nn.Flatten(), nn.Linear(channels * 49, 4096), nn.ReLU(), nn.Dropout(0.5),
                nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(0.5), nn.Linear(4096, num_classes)]
    return nn.Sequential(*layers, *head)


# --- registry ------------------------------------------------------------------------------------------
REFERENCES: Dict[str, Callable[..., nn.Module]] = {"simple_cnn": simple_cnn, "lenet5": lenet5}
for _name, _sizes, _block in (("resnet18", (2, 2, 2, 2), BasicBlock), ("resnet34", (3, 4, 6, 3), BasicBlock),
                              ("resnet50", (3, 4, 6, 3), Bottleneck), ("resnet101", (3, 4, 23, 3), Bottleneck),
                              ("resnet152", (3, 8, 36, 3), Bottleneck)):
    REFERENCES[_name] = functools.partial(ResNet, _block, _sizes)
REFERENCES["resnet18_cifar"] = functools.partial(ResNet, BasicBlock, (2, 2, 2, 2), stem="cifar")
REFERENCES["resnet50_cifar"] = functools.partial(ResNet, Bottleneck, (3, 4, 6, 3), stem="cifar")
for _depth in (20, 32, 44, 56, 110):
    _n = (_depth - 2) // 6
    REFERENCES[f"resnet{_depth}_cifar"] = functools.partial(
        ResNet, BasicBlock, (_n, _n, _n), widths=(16, 32, 64), stem="cifar", stem_width=16, shortcut="zero_pad"
    )
for _depth in VGG_LAYERS:
    REFERENCES[f"vgg{_depth}"] = functools.partial(vgg, _depth)
    REFERENCES[f"vgg{_depth}_bn"] = functools.partial(vgg, _depth, batch_norm=True)
REFERENCES["vgg16_cifar"] = functools.partial(vgg, 16, batch_norm=True, cifar=True)


# --- depthwise-separable families (cnn/models/mobilenet.py, cnn/models/convnext.py) ----------------
def _conv_bn_relu6(cin, cout, kernel, stride=1, groups=1, act=True):
    layers = [nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, *([nn.ReLU6()] if act else []))


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expansion):
        super().__init__()
        hidden, self.residual = cin * expansion, stride == 1 and cin == cout
        self.block = nn.Sequential(*([_conv_bn_relu6(cin, hidden, 1)] if expansion != 1 else []),
                                   _conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden), _conv_bn_relu6(hidden, cout, 1, act=False))

    def forward(self, x):
        return x + self.block(x) if self.residual else self.block(x)


class MobileNetV2(nn.Module):
    """torchvision's MobileNetV2 (width 1.0), from primitives."""

    def __init__(self, num_classes=1000, in_channels=3):
        super().__init__()
        layers, cin = [_conv_bn_relu6(in_channels, 32, 3, 2)], 32
        for t, c, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                           (6, 320, 1, 1)):
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        self.features = nn.Sequential(*layers, _conv_bn_relu6(320, 1280, 1))
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x).mean(dim=(2, 3)))


class LayerNorm2d(nn.LayerNorm):
    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim, drop_path):
        super().__init__()
        self.depthwise = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.mlp = nn.Sequential(nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.layer_scale, self.drop_path = nn.Parameter(torch.full((dim, 1, 1), 1e-6)), drop_path

    def forward(self, x):
        y = self.layer_scale * self.mlp(self.depthwise(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        if self.training and self.drop_path > 0:  # stochastic depth, torchvision's "row" mode
            keep = torch.empty(x.shape[0], 1, 1, 1).bernoulli_(1 - self.drop_path)
            y = y * keep / (1 - self.drop_path)
        return x + y


class ConvNeXt(nn.Module):
    """torchvision's ConvNeXt (T by default: stochastic depth 0.1), from primitives."""

    def __init__(self, num_classes=1000, in_channels=3, depths=(3, 3, 9, 3), widths=(96, 192, 384, 768), drop_path=0.1):
        super().__init__()
        layers, index, total = [nn.Conv2d(in_channels, widths[0], 4, 4), LayerNorm2d(widths[0], eps=1e-6)], 0, sum(depths)
        for stage, (depth, width) in enumerate(zip(depths, widths)):
            if stage > 0:
                layers += [LayerNorm2d(widths[stage - 1], eps=1e-6), nn.Conv2d(widths[stage - 1], width, 2, 2)]
            for _ in range(depth):
                layers.append(ConvNeXtBlock(width, drop_path * index / (total - 1)))
                index += 1
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.LayerNorm(widths[-1], eps=1e-6), nn.Linear(widths[-1], num_classes))

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


def mobilenet_v2(num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
    return MobileNetV2(num_classes, in_channels)


def convnext_tiny(num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
    return ConvNeXt(num_classes, in_channels)


REFERENCES["mobilenet_v2"] = mobilenet_v2
REFERENCES["convnext_tiny"] = convnext_tiny


def import_twin_libraries():
    """torchvision and timm, imported beside the CPU build of torch (whose fake-op registration they cannot
    use: it is replaced by a no-op first)."""
    torch.library.register_fake = lambda *args, **kwargs: (lambda fn: fn)
    import timm
    import torchvision

    return torchvision, timm


def _twins() -> dict:
    from cnn.models.torch_twins import TWINS

    return TWINS


def names():
    return sorted(set(REFERENCES) | set(_twins()))


def build(name: str, *, num_classes: int, in_channels: int = 3, image_size: Optional[int] = None,
          **overrides) -> nn.Module:
    """The PyTorch twin of ``cnn.models.create(name, num_classes=..., **overrides)``: the real torchvision or
    timm class where the zoo model has one, else the network rebuilt here. ``image_size`` sizes a ViT's
    position embedding."""
    twins = _twins()
    if name in twins:
        twin = twins[name]
        torchvision, timm = import_twin_libraries()
        kwargs = {**twin.kwargs, **overrides, "num_classes": num_classes}
        if twin.library == "timm":
            if twin.name.startswith("vit") and image_size:
                kwargs["img_size"] = image_size
            return timm.create_model(twin.name, in_chans=in_channels, **kwargs)
        if in_channels != 3:
            raise ValueError(f"torchvision's {twin.name} takes 3 input channels, not {in_channels}")
        return torchvision.models.get_model(twin.name, **kwargs)
    if name not in REFERENCES:
        raise ValueError(f"no PyTorch reference for model {name!r}; references exist for: {', '.join(names())}")
    return REFERENCES[name](num_classes=num_classes, in_channels=in_channels)


def make_optimizer(model: nn.Module, name: str, learning_rate: float, momentum: float = 0.9) -> torch.optim.Optimizer:
    """``adam`` (torch's defaults: betas 0.9/0.999, eps 1e-8, as optax) or ``sgd`` with momentum."""
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=learning_rate)
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=learning_rate, momentum=momentum)
    raise ValueError(f"optimizer {name!r}; expected 'adam' or 'sgd'")


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class TrainingRunner:
    """``build(name)`` trained in eager mode on one resident batch, for ``experiments/benchmark.py``.

    ``host_batch`` holds uint8 images ``[N, H, W, C]`` and int labels; each step converts to float / 255
    and NCHW on the device, as ours does. On CUDA: channels-last memory format, cuDNN autotuning and,
    with ``bfloat16``, autocast (AMP), as torchvision's recipes.
    """

    def __init__(self, name: str, host_batch: dict, num_classes: int, optimizer: str, learning_rate: float, *,
                 threads: int = 0, seed: int = 0, bfloat16: bool = False, overrides: Optional[dict] = None):
        if threads:
            torch.set_num_threads(threads)
        torch.manual_seed(seed)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        cuda = self.device.type == "cuda"
        self.memory_format = torch.channels_last if cuda else torch.contiguous_format
        model = build(name, num_classes=num_classes, in_channels=host_batch["image"].shape[-1],
                      image_size=host_batch["image"].shape[-2], **(overrides or {}))
        self.params = parameter_count(model)
        self.model = model.to(self.device, memory_format=self.memory_format).train()
        self.optimizer = make_optimizer(self.model, optimizer, learning_rate)
        self.images = torch.from_numpy(host_batch["image"].copy()).to(self.device)  # uint8 [N, H, W, C]
        self.labels = torch.from_numpy(host_batch["label"].astype("int64")).to(self.device)
        self.autocast_dtype = torch.bfloat16 if bfloat16 else None
        if cuda:
            torch.backends.cudnn.benchmark = True
            torch.cuda.reset_peak_memory_stats()

    def step(self) -> torch.Tensor:
        x = self.images.float().div_(255.0)
        x = x.movedim(-1, 1)  # channels first: NCHW, or NCTHW for clips
        if x.ndim == 4:
            x = x.contiguous(memory_format=self.memory_format)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                            enabled=self.autocast_dtype is not None):
            logits = self.model(x)
        if isinstance(logits, tuple):  # auxiliary heads in training: the main logits first
            logits = logits[0]
        loss = F.cross_entropy(logits.float(), self.labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss

    def run(self, steps: int) -> float:
        """Seconds for ``steps`` steps, the device synchronised at the end."""
        start = time.perf_counter()
        for _ in range(steps):
            loss = self.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        float(loss.detach())
        return time.perf_counter() - start

    def device_peak_mb(self):
        return round(torch.cuda.max_memory_allocated() / 2**20, 1) if self.device.type == "cuda" else None
