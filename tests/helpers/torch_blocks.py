"""Hand-written PyTorch references for the models without a torchvision or timm twin (kuangliu's CIFAR
models, the 1D CNN): random variables, the comparison, and building blocks written from ``torch.nn``
primitives. Models with a twin are checked against its real class (``twin_reference.py``).

Each reference names its submodules as our Flax modules name theirs, so ``load`` can copy our
variables by walking the two trees together: conv kernels HWIO -> OIHW (a dense kernel into a 1x1
conv too), dense kernels transposed, BatchNorm scale/bias/mean/var, LayerNorm, embeddings, and
plain parameters (class token, position embedding, layer scale) by shape. Every torch tensor must
be written exactly once, with exactly its shape, so the two architectures must agree layer by layer.
"""

import jax
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _set(tensor, value, copied):
    value = torch.as_tensor(np.asarray(value, np.float64))
    assert tuple(value.shape) == tuple(tensor.shape), f"shape {tuple(value.shape)} != reference {tuple(tensor.shape)}"
    with torch.no_grad():
        tensor.copy_(value)
    assert id(tensor) not in copied, "a reference tensor was written twice"
    copied.add(id(tensor))


def _load(module, params, stats, copied):
    if isinstance(module, CONVS):
        kernel = np.asarray(params["kernel"])
        if kernel.ndim == 2:  # our dense layer, PyTorch's 1x1 conv (squeeze-and-excitation)
            kernel = kernel.reshape((1,) * (module.weight.ndim - 2) + kernel.shape)
        _set(module.weight, np.moveaxis(kernel, (-1, -2), (0, 1)), copied)
        if module.bias is not None:
            _set(module.bias, params["bias"], copied)
    elif isinstance(module, nn.Linear):
        _set(module.weight, np.asarray(params["kernel"]).T, copied)
        _set(module.bias, params["bias"], copied)
    elif isinstance(module, NORMS):
        for target, value in ((module.weight, params["scale"]), (module.bias, params["bias"]),
                              (module.running_mean, stats["mean"]), (module.running_var, stats["var"])):
            _set(target, value, copied)
    elif isinstance(module, nn.LayerNorm):
        _set(module.weight, params["scale"], copied)
        _set(module.bias, params["bias"], copied)
    elif isinstance(module, nn.Embedding):
        _set(module.weight, params["embedding"], copied)
    else:
        for name in sorted(set(params) | set(stats)):
            value = params.get(name)
            if value is not None and not isinstance(value, dict):  # a parameter of this module itself
                _set(getattr(module, name), np.asarray(value).reshape(getattr(module, name).shape), copied)
            else:
                child = getattr(module, name, None)
                assert isinstance(child, nn.Module), f"reference has no submodule {name!r} in {type(module).__name__}"
                _load(child, params.get(name, {}), stats.get(name, {}), copied)


def load(module, variables):
    """Copies our ``variables`` into the float64 reference ``module`` and checks that nothing was left out."""
    module = module.double().eval()
    copied = set()
    _load(module, variables["params"], variables.get("batch_stats", {}), copied)
    tensors = dict(module.named_parameters()) | {
        n: b for n, b in module.named_buffers() if not n.endswith("num_batches_tracked")
    }
    missing = [name for name, tensor in tensors.items() if id(tensor) not in copied]
    assert not missing, f"reference tensors not copied from ours: {missing}"
    return module


class Unit(nn.Module):
    """conv -> BatchNorm -> activation (our ``ConvNormAct``: submodules ``conv``, ``norm``)."""

    def __init__(self, cin, cout, kernel, stride=1, padding=0, groups=1, act=F.relu, norm=True, eps=1e-5, dims=2,
                 bias=None):
        super().__init__()
        self.conv = CONVS[dims - 1](cin, cout, kernel, stride, padding, groups=groups,
                                    bias=(not norm) if bias is None else bias)
        self.norm = NORMS[dims - 1](cout, eps=eps) if norm else None
        self.act = act

    def forward(self, x):
        x = self.conv(x)
        x = x if self.norm is None else self.norm(x)
        return x if self.act is None else self.act(x)


class Head(nn.Module):
    """Our ``ClassifierHead``: global average pool, optional hidden dense layers (``hidden0``...), ``fc``."""

    def __init__(self, cin, num_classes, hidden=(), act=F.relu):
        super().__init__()
        for i, width in enumerate(hidden):
            setattr(self, f"hidden{i}", nn.Linear(cin, width))
            cin = width
        self.hidden, self.act = len(hidden), act
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = x.mean(dim=tuple(range(2, x.ndim)))
        for i in range(self.hidden):
            x = self.act(getattr(self, f"hidden{i}")(x))
        return self.fc(x)


RTOL = 1e-4


def random_variables(model, x, seed=0):
    shapes = jax.eval_shape(lambda inputs: model.init(jax.random.key(0), inputs, train=False), x)
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = str(path[-1].key)
        if name == "kernel":
            return (rng.standard_normal(leaf.shape) * np.sqrt(2.0 / np.prod(leaf.shape[:-1]))).astype(np.float32)
        if name in ("scale", "var", "layer_scale"):
            return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
        return (0.1 * rng.standard_normal(leaf.shape)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def compare(model, reference, x, assert_close, channels_axis=1, seed=0):
    """Our jitted eval logits against the reference's on the same input; returns the error relative to max |logit|."""
    variables = random_variables(model, x, seed)
    ours = np.asarray(jax.jit(lambda v, inputs: model.apply(v, inputs, train=False))(variables, x), np.float64)
    reference = load(reference, variables)
    torch_x = torch.from_numpy(np.asarray(x))
    torch_x = torch_x.double() if torch_x.is_floating_point() else torch_x
    if torch_x.is_floating_point() and x.ndim > 2:
        torch_x = torch_x.movedim(-1, channels_axis)
    with torch.no_grad():
        expected = reference(torch_x).numpy()
    assert np.std(expected) > 0.05, "washed-out logits could hide a wrong layer"
    error = float(np.max(np.abs(ours - expected)) / np.max(np.abs(expected)))
    print(f"{type(model).__name__}: max |ours - torch| / max |torch| = {error:.1e}")
    assert_close(ours, expected, rtol=RTOL)
    return error


def image(shape, seed=1):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
