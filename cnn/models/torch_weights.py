"""Weights in and out of the zoo: torchvision and timm state dicts <-> our ``params`` and ``batch_stats``.

``load_torch_weights(name, source)`` builds zoo model ``name`` as its twin (``cnn.models.torch_twins``)
and fills it from the twin's state dict: a ``.safetensors`` file (read with ``safetensors.numpy``; no
PyTorch needed), a ``.pth``/``.pt`` file (read with ``torch.load(weights_only=True)`` only: never plain
unpickling) or a mapping of names to arrays. Every tensor on both sides is used exactly once and every
shape is checked; all problems are collected and reported together. ``num_batches_tracked`` is the only
key that may be left over. A head whose class count differs from the checkpoint's is re-initialised and
reported; ``strict=False`` re-initialises what is missing or misshapen and skips what is unknown, and
says so. ``save_torch_weights`` writes the twin's ``.safetensors`` back.

BatchNorm needs nothing converted: PyTorch's ``momentum=0.1`` is our ``bn_momentum=0.9`` and each family's
epsilon is already its twin's (1e-3 for GoogLeNet, Inception-v3 and MobileNetV3, 1e-5 elsewhere).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Dict, Mapping, Optional, Sequence, Set, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy
from flax import linen as nn

from cnn.models import registry
from cnn.models.torch_keys import Entry, Layout, Twin, layout
from cnn.models.torch_twins import twin
from cnn.models.weight_adapt import adapt_input_conv, resample_pos_embed

Source = Union[str, os.PathLike, Mapping[str, Any]]
TORCH_SUFFIXES = (".pth", ".pt")
log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LoadReport:
    """What ``load_torch_weights`` did with each tensor.

    Attributes:
      loaded: checkpoint keys copied into the model.
      adapted: checkpoint keys changed on the way (first conv to ``in_channels``, position embedding to
        ``image_size``): key -> what was done.
      reinitialised: our variables left at a fresh initialisation (``"params/head/fc/kernel"``): path -> why.
      skipped: checkpoint keys not used: key -> why (an old head, or with ``strict=False`` an unknown or
        misshapen tensor).
      dropped: BatchNorm ``num_batches_tracked`` counters (nothing here keeps them).
    """

    name: str
    source: str
    num_classes: int
    checkpoint_classes: Optional[int]
    loaded: Tuple[str, ...]
    adapted: Mapping[str, str]
    reinitialised: Mapping[str, str]
    skipped: Mapping[str, str]
    dropped: Tuple[str, ...]

    def __str__(self) -> str:
        lines = [f"{self.name} from {self.source}: {len(self.loaded)} tensors loaded, {len(self.adapted)} adapted, "
                 f"{len(self.reinitialised)} re-initialised, {len(self.skipped)} skipped, "
                 f"{len(self.dropped)} num_batches_tracked dropped"]
        lines += [f"  adapted {key}: {why}" for key, why in self.adapted.items()]
        lines += [f"  re-initialised {path}: {why}" for path, why in self.reinitialised.items()]
        lines += [f"  skipped {key}: {why}" for key, why in self.skipped.items()]
        return "\n".join(lines)


class LoadedWeights(tuple):
    """``(model, variables)``, unpacked as a pair; ``.report`` is the ``LoadReport``."""

    def __new__(cls, model: nn.Module, variables: Dict[str, Any], report: LoadReport):
        loaded = super().__new__(cls, (model, variables))
        loaded.report = report
        return loaded

    model = property(lambda self: self[0])
    variables = property(lambda self: self[1])


# ----------------------------------------------------------------------------- reading a state dict


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch.Tensor (numpy has no view of a bfloat16 one)
        value = value.detach().cpu()
        return (value.float() if str(value.dtype) == "torch.bfloat16" else value).numpy()
    return np.asarray(value)


def read_state_dict(source: Source) -> Tuple[Dict[str, np.ndarray], str]:
    """``(name -> array, description)`` of a ``.safetensors`` file, a ``.pth``/``.pt`` file or a mapping."""
    if isinstance(source, Mapping):
        return {str(k): _to_numpy(v) for k, v in source.items()}, "a mapping"
    path = os.fspath(source)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file {path!r} does not exist")
    if path.endswith(".safetensors"):
        return dict(safetensors.numpy.load_file(path)), repr(path)
    if not path.endswith(TORCH_SUFFIXES):
        raise ValueError(f"weights file {path!r}: expected a .safetensors, .pth or .pt file, or a mapping of arrays")
    try:
        import torch  # optional: only .pth/.pt files need it
    except ImportError as error:
        raise ImportError(f"reading {path!r} needs PyTorch (pip install torch); or pass a .safetensors file") from error
    state = torch.load(path, weights_only=True, map_location="cpu")  # tensors and containers only: no code runs
    description = repr(path)
    for wrapper in ("state_dict", "model"):  # training checkpoints keep the weights one level down
        if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
            state, description = state[wrapper], f"{path!r}[{wrapper!r}]"
            break
    if not isinstance(state, Mapping):
        raise ValueError(f"{path!r} holds a {type(state).__name__}, not a state dict of named tensors")
    return {str(k): _to_numpy(v) for k, v in state.items()}, description


# ----------------------------------------------------------------------------- loading


def _input_shape(name: str, in_channels: int, image_size: Optional[Tuple[int, int]]) -> Tuple[int, ...]:
    shape = registry.input_shape(name)
    if image_size is not None:
        shape = shape[:-3] + tuple(image_size) + shape[-1:]
    return (1,) + shape[:-1] + (in_channels,)


def _shapes(model: nn.Module, input_shape: Tuple[int, ...]) -> Dict[str, Any]:
    init = lambda key: model.init(key, jnp.zeros(input_shape, jnp.float32), train=False)  # noqa: E731
    return jax.eval_shape(init, jax.random.key(0))


def _set(tree: Dict[str, Any], path: Sequence[str], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _get(tree: Any, path: Sequence[str]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def _fresh(model: nn.Module, input_shape: Tuple[int, ...], paths: Sequence[Tuple[str, ...]], key: jax.Array):
    """``model.init(key)``'s values at ``paths`` only (XLA drops the initialisers of everything else)."""

    def init(key):
        variables = model.init(key, jnp.zeros(input_shape, jnp.float32), train=False)
        return [_get(variables, path) for path in paths]

    return jax.jit(init)(key) if paths else []


def _adapt(entry: Entry, value: np.ndarray, spec: Twin, in_channels: int, grid: Optional[Tuple[int, int]],
           interpolation: str) -> Tuple[np.ndarray, Optional[str]]:
    """The first conv to ``in_channels``, the position embedding to ``grid``; anything else unchanged."""
    if entry.torch_key == spec.first_conv and value.ndim >= 3 and value.shape[1] != in_channels:
        rule = "summed" if in_channels == 1 else f"repeated and scaled by 3/{in_channels}"
        return adapt_input_conv(value, in_channels), f"{value.shape[1]} -> {in_channels} input channels ({rule})"
    if entry.torch_key == "pos_embed" and grid is not None and value.shape != entry.torch_shape:
        resampled = resample_pos_embed(value, grid, interpolation=interpolation)
        return resampled, f"{value.shape[1] - 1} -> {grid[0]}x{grid[1]} patches ({interpolation}), class token kept"
    return value, None


def _class_count(spec: Twin, state: Mapping[str, np.ndarray]) -> Optional[int]:
    weight = state.get(spec.classifier)
    return int(weight.shape[0]) if weight is not None and weight.ndim >= 1 else None


def load_torch_weights(
    name: str,
    source: Source,
    *,
    num_classes: Optional[int] = None,
    strict: bool = True,
    in_channels: Optional[int] = None,
    image_size: Union[int, Tuple[int, int], None] = None,
    interpolation: str = "bicubic",
    key: Optional[jax.Array] = None,
    **overrides: Any,
) -> LoadedWeights:
    """Zoo model ``name`` built as its twin and filled from ``source`` (the twin's state dict): ``(model, variables)``.

    ``num_classes`` defaults to the checkpoint's; another count re-initialises the head (from ``key``,
    default ``jax.random.key(0)``). ``in_channels`` adapts the first conv to grey or multispectral inputs;
    ``image_size`` (ViT) resamples the position embedding (``interpolation``: ``"bicubic"`` or ``"bilinear"``).
    ``overrides`` set any other model field. The result unpacks as ``model, variables``; its ``.report``
    (a ``LoadReport``, also logged) lists what was loaded, adapted, re-initialised, skipped and dropped.
    """
    spec = twin(name)
    state, description = read_state_dict(source)
    keys: Set[str] = set(state)
    checkpoint_classes = _class_count(spec, state)
    if num_classes is None:
        num_classes = checkpoint_classes if checkpoint_classes is not None else registry.entry(name).default_num_classes
    checkpoint_fields = {**spec.overrides, **(spec.from_keys(keys) if spec.from_keys else {}), **overrides}
    fields = dict(checkpoint_fields)
    if num_classes == 0 and fields.get("aux_logits") and "aux_logits" not in overrides:
        fields["aux_logits"] = False  # features only: auxiliary classifiers have nothing to predict
    model = registry.create(name, num_classes=num_classes, **fields)

    first = state.get(spec.first_conv)
    source_channels = int(first.shape[1]) if first is not None and first.ndim >= 3 else registry.input_shape(name)[-1]
    in_channels = source_channels if in_channels is None else in_channels
    size = (image_size, image_size) if isinstance(image_size, int) else image_size
    if size is None and hasattr(model, "patch_size") and "pos_embed" in state:  # the checkpoint's resolution
        side = int(np.sqrt(state["pos_embed"].shape[1] - 1))
        size = (side * model.patch_size, side * model.patch_size)
    grid = None
    if size is not None and hasattr(model, "patch_size"):
        if size[0] % model.patch_size or size[1] % model.patch_size:
            raise ValueError(f"image_size={image_size} is not a multiple of the patch size {model.patch_size}")
        grid = (size[0] // model.patch_size, size[1] // model.patch_size)
    input_shape = _input_shape(name, in_channels, size)
    plan = layout(spec, model, _shapes(model, input_shape))

    head_keys: Set[str] = set()  # the checkpoint's head, when its class count is not the model's
    if checkpoint_classes != num_classes:
        other = registry.create(name, num_classes=checkpoint_classes or num_classes + 1, **checkpoint_fields)
        other_layout = layout(spec, other, _shapes(other, input_shape))
        ours, theirs = plan.by_key(), other_layout.by_key()
        head_keys = {k for k in set(ours) | set(theirs) if k not in ours or k not in theirs or ours[k].shape != theirs[k].shape}
        head_keys |= set(other_layout.torch_only) - set(plan.torch_only)  # a dropped head's BatchNorm counters
    head_reason = (f"head: the checkpoint has {checkpoint_classes} classes, the model {num_classes}"
                   if checkpoint_classes is not None else f"head: the checkpoint has no {spec.classifier!r}")

    problems, loaded, adapted, reinitialised, skipped = [], [], {}, {}, {}
    values: Dict[Tuple[str, ...], np.ndarray] = {}
    for path in plan.unmatched:
        if strict:
            problems.append(f"{path} has no counterpart in {spec.library}'s {spec.name}")
        reinitialised[path] = f"no counterpart in {spec.library}'s {spec.name}"
    for entry in plan.entries:
        where = f"(ours: {entry.our_name} {entry.shape})"
        if entry.torch_key in head_keys:
            reinitialised[entry.our_name] = head_reason
            continue
        if entry.torch_key not in state:
            if strict:
                problems.append(f"missing key {entry.torch_key!r}, expected shape {entry.torch_shape} {where}")
            reinitialised[entry.our_name] = f"{entry.torch_key!r} is not in the checkpoint"
            continue
        value, change = _adapt(entry, state[entry.torch_key], spec, in_channels, grid, interpolation)
        if tuple(value.shape) != entry.torch_shape:
            if strict:
                problems.append(f"key {entry.torch_key!r} has shape {tuple(value.shape)}, expected {entry.torch_shape} {where}")
            reinitialised[entry.our_name] = f"{entry.torch_key!r} has shape {tuple(value.shape)}, not {entry.torch_shape}"
            skipped[entry.torch_key] = f"shape {tuple(value.shape)}, expected {entry.torch_shape} {where}"
            continue
        if change:
            adapted[entry.torch_key] = change
        values[entry.path] = np.asarray(entry.transform.to_ours(value), np.float32)
        loaded.append(entry.torch_key)
    expected = {entry.torch_key for entry in plan.entries}
    dropped = tuple(sorted(k for k in keys if k in plan.torch_only))
    for k in sorted(keys & head_keys):
        skipped[k] = head_reason
    for k in sorted(keys - expected - set(dropped) - head_keys):
        if strict:
            problems.append(f"unexpected key {k!r} of shape {tuple(state[k].shape)}: {spec.name} has no such tensor")
        else:
            skipped[k] = f"{spec.name} has no such tensor"
    if problems:
        raise ValueError(f"{name} from {description}: {len(problems)} problem(s) (strict=False re-initialises missing "
                         f"or misshapen tensors and skips unknown ones):\n  " + "\n  ".join(problems))

    fresh_paths = [tuple(path.split("/")) for path in reinitialised]
    fresh = _fresh(model, input_shape, fresh_paths, jax.random.key(0) if key is None else key)
    variables: Dict[str, Any] = {}
    for path, value in values.items():
        _set(variables, path, jax.device_put(value))  # (jnp.asarray would compile a program per shape)
    for path, value in zip(fresh_paths, fresh):
        _set(variables, path, value)
    report = LoadReport(name, description, num_classes, checkpoint_classes, tuple(loaded), adapted, reinitialised,
                        skipped, dropped)
    log.info("%s", report)
    return LoadedWeights(model, variables, report)


# ----------------------------------------------------------------------------- saving


def torch_state_dict(name: str, variables: Mapping[str, Any], **overrides: Any) -> Dict[str, np.ndarray]:
    """Our ``variables`` under the twin's keys and layouts (float32; ``num_batches_tracked`` as int64 zeros)."""
    spec = twin(name)
    fields = {**spec.overrides, **overrides}
    model = registry.create(name, num_classes=registry.entry(name).default_num_classes, **fields)
    plan: Layout = layout(spec, model, variables)
    if plan.unmatched:
        raise ValueError(f"{name}: variables {', '.join(plan.unmatched)} have no counterpart in {spec.library}'s "
                         f"{spec.name}")
    state = {entry.torch_key: np.ascontiguousarray(entry.transform.to_torch(np.asarray(_get(variables, entry.path),
                                                                                     np.float32)))
             for entry in plan.entries}
    state.update({k: np.zeros((), np.int64) for k in plan.torch_only})
    return state


def save_torch_weights(name: str, variables: Mapping[str, Any], path: Union[str, os.PathLike], **overrides: Any) -> None:
    """Writes ``variables`` of zoo model ``name`` as its twin's ``.safetensors`` state dict, which
    ``twin.load_state_dict(safetensors.torch.load_file(path))`` accepts. Written whole or not at all."""
    path = os.fspath(path)
    if not path.endswith(".safetensors"):
        raise ValueError(f"path {path!r}: save_torch_weights writes .safetensors files")
    state = torch_state_dict(name, variables, **overrides)
    partial = f"{path}.partial-{os.getpid()}"
    try:
        safetensors.numpy.save_file(state, partial, metadata={"format": "pt"})
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


# ----------------------------------------------------------------------------- grafting


def insert_variables(variables: Mapping[str, Any], loaded: Mapping[str, Any], *, at: Sequence[str] = (),
                     exclude: Sequence[str] = ()) -> Dict[str, Any]:
    """A copy of ``variables`` with every leaf of ``loaded`` put in its place, under ``at`` in each collection.

    ``loaded`` is ``{"params": ..., "batch_stats": ...}`` (e.g. from ``load_torch_weights``); ``at`` the
    module path of the loaded model inside a larger one (``("backbone",)``); ``exclude`` lists paths of
    ``loaded`` to keep from ``variables`` (``report.reinitialised``, say). Every leaf must exist in
    ``variables`` with the same shape; all mismatches are reported together. Pure: nothing is modified.
    """
    result = _thaw(variables)  # new containers, the same leaves
    problems, excluded = [], set(exclude)
    for path, leaf in jax.tree_util.tree_flatten_with_path(loaded)[0]:
        names = tuple(str(getattr(k, "key", k)) for k in path)
        if "/".join(names) in excluded:
            continue
        target = (names[0],) + tuple(at) + names[1:]
        try:
            current = _get(result, target)
        except (KeyError, TypeError):
            problems.append(f"{'/'.join(target)} is not in the variables")
            continue
        if np.shape(current) != np.shape(leaf):
            problems.append(f"{'/'.join(target)} has shape {np.shape(current)}, the loaded value {np.shape(leaf)}")
            continue
        _set(result, target, jax.device_put(np.asarray(leaf, getattr(current, "dtype", None))))
    if problems:
        raise ValueError(f"{len(problems)} loaded variable(s) do not fit:\n  " + "\n  ".join(problems))
    return result


def _thaw(tree: Any) -> Any:
    return {k: _thaw(v) for k, v in tree.items()} if isinstance(tree, Mapping) else tree
