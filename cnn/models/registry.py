"""Name -> model factory. ``create("resnet50", num_classes=1000, dtype=jnp.bfloat16)``.

A family file registers its variants with one line each, with the parameter count on record (for
``default_num_classes`` at ``input_shape``; the test over ``names()`` checks it) and the smallest input
side the architecture accepts (smaller inputs shrink some feature map to nothing)::

    register("resnet18", functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block=BasicBlock),
             params=11_689_512)
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from flax import linen as nn

from cnn.models.layout import LAYOUTS
from cnn.text import a_or_an


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    name: str
    factory: Callable[..., nn.Module]
    input_shape: Tuple[int, ...]  # one example, without the batch axis, e.g. (224, 224, 3)
    default_num_classes: int
    params: int  # the parameter count at default_num_classes and input_shape
    min_size: int  # the smallest side of every spatial axis the model accepts

    @property
    def spatial_rank(self) -> int:
        """1 for sequences ``[N, L, C]``, 2 for images ``[N, H, W, C]``, 3 for clips ``[N, T, H, W, C]``."""
        return len(self.input_shape) - 1


_REGISTRY: Dict[str, ModelEntry] = {}


def register(
    name: str,
    factory: Callable[..., nn.Module],
    *,
    params: int,
    input_shape: Tuple[int, ...] = (224, 224, 3),
    default_num_classes: int = 1000,
    min_size: int = 1,
) -> Callable[..., nn.Module]:
    """Adds ``name``; the factory takes ``num_classes=`` and any module field as keywords."""
    if name != name.lower():
        raise ValueError(f"model names are lower-case; got {name!r}")
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is registered twice")
    _REGISTRY[name] = ModelEntry(name, factory, tuple(input_shape), default_num_classes, int(params), int(min_size))
    return factory


def names() -> List[str]:
    """Every registered model name, sorted."""
    return sorted(_REGISTRY)


def entry(name: str) -> ModelEntry:
    """The registry entry of ``name``; an unknown name is a ``ValueError`` that lists close matches."""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model {name!r}.{hint} Known models: {', '.join(names())}")
    return _REGISTRY[name]


def _fields(factory: Callable[..., nn.Module]) -> Optional[List[str]]:
    target = factory.func if isinstance(factory, functools.partial) else factory
    if isinstance(target, type) and dataclasses.is_dataclass(target):
        return [f.name for f in dataclasses.fields(target) if f.init and f.name not in ("parent", "name")]
    return None


def create(name: str, *, num_classes: int, **overrides: Any) -> nn.Module:
    """Builds model ``name`` with ``num_classes`` outputs; ``overrides`` set any other module field."""
    model_entry = entry(name)
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 0:
        raise ValueError(f"num_classes={num_classes!r}; expected a non-negative int (0 = features only)")
    fields = _fields(model_entry.factory)
    if fields is not None:
        unknown = sorted(set(overrides) - set(fields))
        if unknown:
            raise ValueError(f"model {name!r} has no field {', '.join(map(repr, unknown))}; its fields: {', '.join(fields)}")
        _check_types(name, model_entry.factory, overrides)
    return model_entry.factory(num_classes=num_classes, **overrides)




def _check_types(name: str, factory: Callable[..., nn.Module], overrides: Dict[str, Any]) -> None:
    """A ValueError naming the field when an override's type differs from its default's (int, float, str, bool, tuple)."""
    target = factory.func if isinstance(factory, functools.partial) else factory
    defaults = {f.name: f.default for f in dataclasses.fields(target)}
    defaults.update(factory.keywords if isinstance(factory, functools.partial) else {})
    accepts = {bool: (bool,), int: (int,), float: (int, float), str: (str,), tuple: (tuple, list), list: (tuple, list)}
    for field, value in overrides.items():
        kind = type(defaults.get(field))
        if kind in accepts and (not isinstance(value, accepts[kind]) or (isinstance(value, bool) and kind is not bool)):
            raise ValueError(
                f"model {name!r}: {field}={value!r} is {a_or_an(type(value).__name__)}; expected {a_or_an(kind.__name__)} "
                f"like its default {defaults[field]!r}"
            )


def input_shape(name: str) -> Tuple[int, ...]:
    """The input shape (no batch axis) model ``name`` is usually fed, e.g. ``(224, 224, 3)``."""
    return entry(name).input_shape



def check_input(name: str, shape: Sequence[int], *, what: str = "the input") -> None:
    """A ValueError unless one example of ``shape`` (no batch axis) suits model ``name``: its spatial rank
    and, on every spatial axis, at least the model's smallest side."""
    model_entry = entry(name)
    shape, rank = tuple(int(d) for d in shape), model_entry.spatial_rank
    if len(shape) != rank + 1:
        raise ValueError(f"model {name!r} takes {LAYOUTS.get(rank, rank)} inputs ({rank} spatial axes and channels "
                         f"last); {what} have shape {shape}")
    small = [d for d in shape[:-1] if d < model_entry.min_size]
    if small:
        side = "x".join([str(model_entry.min_size)] * rank)
        raise ValueError(f"model {name!r} needs inputs of at least {side} (smaller ones shrink a feature map to "
                         f"nothing and give NaN); {what} are {'x'.join(map(str, shape))}: resize them or choose a model "
                         f"for small inputs")


def from_config(model_config: Any, *, num_classes: int, dtype: Any = None) -> nn.Module:
    """The model a config's ``model`` group names: ``name`` with its ``overrides`` (any module field).

    The class count comes from the data, so ``overrides.num_classes`` is refused; ``dtype`` (the compute
    dtype) is set unless the overrides set it.
    """
    overrides = dict(model_config.get("overrides", {}) or {})
    if "num_classes" in overrides:
        raise ValueError(f"model.overrides.num_classes={overrides['num_classes']!r}: the class count comes from the "
                         f"dataset ({num_classes} classes); remove the override")
    if dtype is not None:
        overrides.setdefault("dtype", dtype)
    return create(model_config.name, num_classes=num_classes, **overrides)
