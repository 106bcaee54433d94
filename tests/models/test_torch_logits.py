"""Whole ``resnet18`` and ``vgg11_bn`` in eval mode give PyTorch's logits for the same weights.

The references are compact torchvision-equivalent networks written here from ``torch.nn`` modules;
our parameters and random, non-trivial BatchNorm statistics are copied into them (HWIO -> OIHW
kernels, the first VGG dense layer's rows permuted from NHWC to NCHW flatten order). They run in
float64 on the same float32 values, so the tolerance bounds our float32 error through the network.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn.models import create

torch = pytest.importorskip("torch", reason="PyTorch is the numerical reference (pip install -e '.[dev]')")
nn = torch.nn
pytestmark = pytest.mark.torch

# Elementwise, and relative to the largest logit: measured errors are below 1e-6 of the largest logit.
RTOL = 1e-5


class TorchBasicBlock(nn.Module):
    """torchvision's BasicBlock: conv3x3(stride)-bn-relu-conv3x3-bn, plus identity or 1x1 conv + bn, relu."""

    def __init__(self, in_channels, channels, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride, bias=False),
                                            nn.BatchNorm2d(channels))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + identity)


class TorchResNet18(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths, in_channels = (64, 128, 256, 512), 64
        for stage, width in enumerate(widths):
            stride = 1 if stage == 0 else 2
            blocks = [TorchBasicBlock(in_channels, width, stride), TorchBasicBlock(width, width, 1)]
            setattr(self, f"layer{stage + 1}", nn.Sequential(*blocks))
            in_channels = width
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


VGG11 = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class TorchVGG11BN(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        layers, in_channels = [], 3
        for item in VGG11:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(in_channels, item, 3, padding=1), nn.BatchNorm2d(item), nn.ReLU()]
                in_channels = item
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), nn.ReLU(), nn.Dropout(),
            nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def _random_variables(model, input_shape, seed):
    """Every variable drawn at random with magnitudes that keep activations O(1) through the network.

    Norm scales are never zero (the zero-initialised last scales would hide each block's branch) and
    the running statistics are not the defaults, so that eval mode really reads them.
    """
    shapes = jax.eval_shape(lambda key: model.init(key, jnp.zeros(input_shape), train=False), jax.random.key(0))
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = path[-1].key
        if name == "kernel":  # He-scaled, uniform (much faster to draw than normal for VGG's 100M weights)
            fan_in = int(np.prod(leaf.shape[:-1]))
            kernel = rng.random(leaf.shape, dtype=np.float32)
            kernel -= np.float32(0.5)
            kernel *= np.float32(2 * np.sqrt(3 * 2.0 / fan_in))
            return kernel
        if name in ("scale", "var"):
            return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
        return (0.1 * rng.standard_normal(leaf.shape)).astype(np.float32)  # bias, mean

    return jax.tree_util.tree_map_with_path(draw, shapes)


def _empty(module_cls, num_classes):
    """The reference network with uninitialised float64 tensors (its own init would be slow and is overwritten)."""
    with torch.device("meta"):
        module = module_cls(num_classes).double()
    return module.to_empty(device="cpu").eval()


def _set(tensor, source, view=None):
    """Copies our float32 values (converted by PyTorch) into ``tensor``, or into ``tensor.view(view)``."""
    source = torch.from_numpy(np.asarray(source)) if not isinstance(source, torch.Tensor) else source
    with torch.no_grad():
        (tensor if view is None else tensor.view(view)).copy_(source)
    tensor.copied_from_ours = True


def _assert_all_copied(module):
    """Every parameter and running statistic was overwritten (left uninitialised, it would be garbage)."""
    tensors = dict(module.named_parameters()) | {
        name: buffer for name, buffer in module.named_buffers() if not name.endswith("num_batches_tracked")
    }
    missing = [name for name, tensor in tensors.items() if not getattr(tensor, "copied_from_ours", False)]
    assert not missing, f"not copied: {missing}"


def _copy_conv(conv, params):
    _set(conv.weight, torch.from_numpy(np.asarray(params["kernel"])).permute(3, 2, 0, 1))  # HWIO -> OIHW
    if conv.bias is not None:
        _set(conv.bias, params["bias"])


def _copy_norm(norm, params, stats):
    _set(norm.weight, params["scale"])
    _set(norm.bias, params["bias"])
    _set(norm.running_mean, stats["mean"])
    _set(norm.running_var, stats["var"])


def _copy_unit(conv, norm, variables, name):
    """One of our ConvNormAct units (``name/conv``, ``name/norm``) into a torch conv and norm."""
    _copy_conv(conv, variables["params"][name]["conv"])
    _copy_norm(norm, variables["params"][name]["norm"], variables["batch_stats"][name]["norm"])


def _copy_dense(linear, params):
    _set(linear.weight, torch.from_numpy(np.asarray(params["kernel"])).T)
    _set(linear.bias, params["bias"])


def _torch_resnet18(variables, num_classes):
    reference = _empty(TorchResNet18, num_classes)
    _copy_unit(reference.conv1, reference.bn1, variables, "stem")
    for stage in range(4):
        for index, block in enumerate(getattr(reference, f"layer{stage + 1}")):
            ours = {collection: tree[f"stage{stage + 1}_block{index + 1}"] for collection, tree in variables.items()}
            _copy_unit(block.conv1, block.bn1, ours, "conv1")
            _copy_unit(block.conv2, block.bn2, ours, "conv2")
            assert (block.downsample is None) == ("shortcut" not in ours["params"])
            if block.downsample is not None:
                _copy_unit(block.downsample[0], block.downsample[1], ours, "shortcut")
    _copy_dense(reference.fc, variables["params"]["head"]["fc"])
    _assert_all_copied(reference)
    return reference


def _torch_vgg11_bn(variables, num_classes):
    reference = _empty(TorchVGG11BN, num_classes)
    convs = [m for m in reference.features if isinstance(m, nn.Conv2d)]
    norms = [m for m in reference.features if isinstance(m, nn.BatchNorm2d)]
    for index, (conv, norm) in enumerate(zip(convs, norms), start=1):
        _copy_unit(conv, norm, variables, f"conv{index}")
    head = variables["params"]["head"]
    # Our flatten reads [N, 7, 7, 512] in (h, w, c) order, PyTorch's [N, 512, 7, 7] in (c, h, w) order:
    # our kernel [7 * 7 * 512, 4096] becomes PyTorch's weight [4096, 512 * 7 * 7].
    first = reference.classifier[0]
    kernel = torch.from_numpy(np.asarray(head["hidden0"]["kernel"])).reshape(7, 7, 512, 4096)
    _set(first.weight, kernel.permute(3, 2, 0, 1), view=(4096, 512, 7, 7))
    _set(first.bias, head["hidden0"]["bias"])
    _copy_dense(reference.classifier[3], head["hidden1"])
    _copy_dense(reference.classifier[6], head["fc"])
    _assert_all_copied(reference)
    return reference


def _compare(name, build_reference, input_shape, num_classes, seed):
    model = create(name, num_classes=num_classes)
    variables = _random_variables(model, input_shape, seed)
    x = np.random.default_rng(seed + 1).standard_normal(input_shape, dtype=np.float32)
    ours = np.asarray(jax.jit(lambda v, inputs: model.apply(v, inputs, train=False))(variables, x), np.float64)

    reference = build_reference(variables, num_classes)
    with torch.no_grad():
        expected = reference(torch.from_numpy(np.moveaxis(x, -1, 1).astype(np.float64))).numpy()
    assert ours.shape == expected.shape == (input_shape[0], num_classes)
    assert np.std(expected) > 0.1  # the logits are not washed out, so a wrong layer cannot hide
    scale = np.max(np.abs(expected))
    np.testing.assert_allclose(ours, expected, rtol=RTOL, atol=RTOL * scale)
    return np.max(np.abs(ours - expected)) / scale


def test_resnet18_eval_logits_match_torch():
    """64x64 input: every stage strides, the max pool pads, the global pool averages a 2x2 map."""
    _compare("resnet18", _torch_resnet18, (2, 64, 64, 3), num_classes=1000, seed=0)


def test_vgg11_bn_eval_logits_match_torch():
    """64x64 input: the last feature map is 2x2, which PyTorch's adaptive pool spreads unevenly over 7x7,
    so both the pooling and the flatten-order permutation of the first dense layer are exercised."""
    _compare("vgg11_bn", _torch_vgg11_bn, (2, 64, 64, 3), num_classes=1000, seed=1)


def test_resnet18_eval_logits_match_torch_at_224():
    """The ImageNet resolution, one image."""
    _compare("resnet18", _torch_resnet18, (1, 224, 224, 3), num_classes=1000, seed=2)
