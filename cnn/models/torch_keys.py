"""How a zoo model's tensors pair with its torchvision/timm twin's state-dict keys.

A family's table (``cnn.models.torch_twins``) is a list of ``Rule``s: a regular expression over one of our
module paths (``"stage2_block1/shortcut/norm"``), the twin's module name for it (``"layer2.0.downsample.1"``:
a string, or a function of the expression's groups, numbers as ints) and the module's ``Kind``, which pairs
its tensors on both sides (``kernel`` <-> ``weight``, ``mean`` <-> ``running_mean``, ...) with the layout
change between them:

- conv kernels: PyTorch ``[O, I, *k]`` <-> our ``[*k, I, O]`` (OIHW <-> HWIO, any rank);
- linear weights: PyTorch ``[out, in]`` <-> our ``[in, out]``;
- the first linear layer after a flatten (VGG, AlexNet, GoogLeNet's auxiliary ``fc1``): PyTorch
  flattens ``[N, C, H, W]`` in (c, h, w) order, we flatten ``[N, H, W, C]`` in (h, w, c) order, so
  its input rows are permuted, not only transposed;
- torchvision's squeeze-and-excitation 1x1 convs ``[O, I, 1, 1]`` <-> our dense ``[I, O]``;
- ConvNeXt's layer scale ``[C, 1, 1]`` <-> our ``[C]``.

``layout(twin, model, variables)`` applies a twin's table to a variables tree (or its shapes): one ``Entry``
per tensor.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Set, Tuple, Union

import jax
import numpy as np

Shape = Tuple[int, ...]


# ----------------------------------------------------------------------------- tensors


@dataclasses.dataclass(frozen=True)
class Transform:
    """How one tensor's layout differs between PyTorch and us; ``torch_shape`` maps our shape to PyTorch's."""

    name: str
    to_ours: Callable[[np.ndarray], np.ndarray]
    to_torch: Callable[[np.ndarray], np.ndarray]
    torch_shape: Callable[[Shape], Shape]


SAME = Transform("same layout", lambda a: a, lambda a: a, lambda s: s)
CONV_KERNEL = Transform(
    "[O, I, *k] <-> [*k, I, O]",
    lambda w: np.transpose(w, tuple(range(2, w.ndim)) + (1, 0)),
    lambda k: np.transpose(k, (k.ndim - 1, k.ndim - 2) + tuple(range(k.ndim - 2))),
    lambda s: (s[-1], s[-2]) + tuple(s[:-2]),
)
DENSE_KERNEL = Transform("[out, in] <-> [in, out]", lambda w: w.T, lambda k: k.T, lambda s: s[::-1])
CONV1X1_AS_DENSE = Transform(
    "[O, I, 1, 1] <-> [I, O]",
    lambda w: w.reshape(w.shape[:2]).T,
    lambda k: k.T.reshape(k.shape[::-1] + (1, 1)),
    lambda s: (s[1], s[0], 1, 1),
)
CHANNEL_VECTOR = Transform("[C, 1, 1] <-> [C]", lambda w: w.reshape(-1), lambda v: v.reshape(-1, 1, 1),
                           lambda s: tuple(s) + (1, 1))


def flattened_dense_kernel(height: int, width: int) -> Transform:
    """The first dense layer after flattening a ``[height, width, C]`` map: rows in (c, h, w) <-> (h, w, c) order."""

    def to_ours(w):  # [out, C*H*W] -> [H*W*C, out]
        out = w.shape[0]
        return w.reshape(out, -1, height, width).transpose(2, 3, 1, 0).reshape(-1, out)

    def to_torch(k):  # [H*W*C, out] -> [out, C*H*W]
        out = k.shape[1]
        return k.reshape(height, width, -1, out).transpose(3, 2, 0, 1).reshape(out, -1)

    return Transform(f"[out, (c h w)] <-> [(h w c), out], {height}x{width} map", to_ours, to_torch, lambda s: s[::-1])


@dataclasses.dataclass(frozen=True)
class Kind:
    """A kind of module: ``leaves`` pairs (collection, our leaf) with (PyTorch leaf, transform);
    ``torch_only`` leaves have no counterpart here (dropped when loading, written as 0 when saving)."""

    name: str
    leaves: Mapping[Tuple[str, str], Tuple[str, Transform]]
    torch_only: Tuple[str, ...] = ()


CONV = Kind("conv", {("params", "kernel"): ("weight", CONV_KERNEL), ("params", "bias"): ("bias", SAME)})
LINEAR = Kind("linear", {("params", "kernel"): ("weight", DENSE_KERNEL), ("params", "bias"): ("bias", SAME)})
SE_CONV = Kind("1x1 conv as dense", {("params", "kernel"): ("weight", CONV1X1_AS_DENSE), ("params", "bias"): ("bias", SAME)})
LAYER_NORM = Kind("layer norm", {("params", "scale"): ("weight", SAME), ("params", "bias"): ("bias", SAME)})
BATCH_NORM = Kind(
    "batch norm",
    {("params", "scale"): ("weight", SAME), ("params", "bias"): ("bias", SAME),
     ("batch_stats", "mean"): ("running_mean", SAME), ("batch_stats", "var"): ("running_var", SAME)},
    torch_only=("num_batches_tracked",),
)
LAYER_SCALE = Kind("layer scale", {("params", "layer_scale"): ("layer_scale", CHANNEL_VECTOR)})
VIT_TOKENS = Kind("class token and position embedding",
                  {("params", "cls_token"): ("cls_token", SAME), ("params", "pos_embed"): ("pos_embed", SAME)})


def flattened_linear(height: int, width: int) -> Kind:
    return Kind("linear after flatten",
                {("params", "kernel"): ("weight", flattened_dense_kernel(height, width)), ("params", "bias"): ("bias", SAME)})


# ----------------------------------------------------------------------------- rules


@dataclasses.dataclass(frozen=True)
class Rule:
    """Our module paths matching ``pattern`` are the twin's module ``torch`` (a template or a function of the groups)."""

    pattern: str
    torch: Union[str, Callable[..., str]]
    kind: Kind

    def name(self, path: str) -> Optional[str]:
        match = re.fullmatch(self.pattern, path)
        if match is None:
            return None
        if isinstance(self.torch, str):
            return self.torch
        groups = [int(g) if g.isdigit() else g for g in match.groups()]
        return self.torch(*groups)


def unit(pattern: str, torch: Union[str, Callable[..., str]], conv: str = "0", norm: str = "1") -> List[Rule]:
    """Our ``ConvNormAct`` (``.../conv``, ``.../norm``) as the twin's conv and BatchNorm ``torch.{conv}``, ``torch.{norm}``."""
    prefix = (lambda *g: torch) if isinstance(torch, str) else torch
    return [Rule(pattern + "/conv", lambda *g: _join(prefix(*g), conv), CONV),
            Rule(pattern + "/norm", lambda *g: _join(prefix(*g), norm), BATCH_NORM)]


def _join(prefix: str, leaf: str) -> str:
    return f"{prefix}.{leaf}" if prefix else leaf


# ----------------------------------------------------------------------------- twins


@dataclasses.dataclass(frozen=True)
class Twin:
    """A zoo model's PyTorch twin.

    Attributes:
      library, name: ``torchvision.models.get_model(name, **kwargs)`` or ``timm.create_model(name, **kwargs)``.
      family: our model class, and ``rules(model, our_module_paths) -> [Rule]`` its table.
      classifier: the twin's final classifier weight; its first axis is the checkpoint's class count.
      first_conv: the twin's input conv weight (``in_channels=`` adapts it).
      kwargs: the twin's constructor arguments that give it our layout (auxiliary heads on, ...).
      overrides: our model fields that make the model the twin (``act=relu6`` for timm's MobileNet v1).
      from_keys: model fields read off the checkpoint's keys (auxiliary heads present or not).
    """

    library: str
    name: str
    family: type
    rules: Callable[[Any, Set[str]], List[Rule]]
    classifier: str
    first_conv: str
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    from_keys: Optional[Callable[[Set[str]], Dict[str, Any]]] = None


# ----------------------------------------------------------------------------- one entry per tensor


@dataclasses.dataclass(frozen=True)
class Entry:
    """One tensor: the twin's ``torch_key``, our ``path`` (``("params", "stem", "conv", "kernel")``) and shape."""

    torch_key: str
    path: Tuple[str, ...]
    shape: Shape
    transform: Transform

    @property
    def torch_shape(self) -> Shape:
        return tuple(self.transform.torch_shape(tuple(self.shape)))

    @property
    def our_name(self) -> str:
        return "/".join(self.path)


@dataclasses.dataclass(frozen=True)
class Layout:
    """Every tensor of a model paired with the twin's key; ``torch_only``: the twin's keys with no counterpart
    (BatchNorm's ``num_batches_tracked``); ``unmatched``: our tensors no rule names (a model that is not the twin)."""

    entries: Tuple[Entry, ...]
    torch_only: Tuple[str, ...]
    unmatched: Tuple[str, ...]

    def by_key(self) -> Dict[str, Entry]:
        return {entry.torch_key: entry for entry in self.entries}


def layout(spec: Twin, model: Any, variables: Any) -> Layout:
    """Pairs every leaf of ``variables`` (arrays or shapes: ``{"params": ..., "batch_stats": ...}``) with a key of
    ``spec``'s twin, by its family's table. Two of our tensors under one key is a bug in a table (``AssertionError``)."""
    if not isinstance(model, spec.family):
        raise ValueError(f"the model is a {type(model).__name__}; the table of {spec.name} is for {spec.family.__name__}")
    unknown = sorted(set(variables) - {"params", "batch_stats"})
    if unknown:
        raise ValueError(f"variables hold collections {unknown}; a twin's weights are 'params' and 'batch_stats'")
    leaves = [(tuple(str(getattr(k, "key", k)) for k in path), tuple(np.shape(leaf)))
              for path, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]]
    modules = {"/".join(path[1:-1]) for path, _ in leaves}
    rules = spec.rules(model, modules)
    names: Dict[str, Tuple[str, Kind]] = {}
    for module in modules:
        for rule in rules:
            try:
                torch_name = rule.name(module)
            except (KeyError, IndexError):  # a number the table does not know: not the twin's layout
                torch_name = None
            if torch_name is not None:
                names[module] = (torch_name, rule.kind)
                break
    entries, torch_only, unmatched, seen = [], set(), [], {}
    for path, shape in leaves:
        module = "/".join(path[1:-1])
        if module not in names or (path[0], path[-1]) not in names[module][1].leaves:
            unmatched.append("/".join(path))
            continue
        torch_name, kind = names[module]
        torch_leaf, transform = kind.leaves[(path[0], path[-1])]
        entry = Entry(_join(torch_name, torch_leaf), path, shape, transform)
        assert entry.torch_key not in seen, f"{entry.torch_key} names both {seen[entry.torch_key]} and {entry.our_name}"
        seen[entry.torch_key] = entry.our_name
        entries.append(entry)
        torch_only.update(_join(torch_name, leaf) for leaf in kind.torch_only)
    return Layout(tuple(entries), tuple(sorted(torch_only)), tuple(unmatched))
