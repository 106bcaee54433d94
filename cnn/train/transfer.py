"""Transfer learning in a run: the weights it starts from, its head, and what stays frozen.

- **Starting weights** (``model.init_from``): a weights file of the model's torchvision or timm twin
  (``.safetensors``, ``.pth``, ``.pt``: ``cnn.models.load_torch_weights``), or a finished run's workdir (its
  newest checkpoint, read by ``cnn.analysis.runs`` without the engine). They replace the fresh parameters and
  BatchNorm statistics when a run starts from scratch, never on resume. A head whose class count differs (or
  every head, with ``model.reinit_head``) keeps its fresh initialisation, and the run says so in one line.
- **The head**: the parameters whose shapes depend on the class count (the final classifier, and the last
  layers of GoogLeNet's and Inception-v3's auxiliary heads), found by comparing the model's shapes at two
  class counts: what ``load_torch_weights`` re-initialises, and the group ``optimizer.backbone_lr_scale``
  leaves at the full learning rate.
- **Frozen** (``model.freeze``, regexes over parameter paths such as ``stage1_block1/conv1/conv/kernel``):
  those parameters do not move (optax, ``cnn.train.optim``), and a BatchNorm layer whose parameters are all
  frozen keeps its statistics and normalises with them (evaluation mode). ``model.linear_probe`` freezes
  everything but the head and runs every module off the way to the head in evaluation mode (BatchNorm with
  its running statistics, no dropout or stochastic depth): a linear classifier on fixed features.

Evaluation mode is set without touching the models: ``flax.linen.intercept_methods`` catches the chosen
modules' calls and makes them with ``train=False``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import logging
import os
import pathlib
import re
from typing import Any, Callable, Dict, FrozenSet, Mapping, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

import cnn.models
from cnn.layers.norm import BatchNorm

log = logging.getLogger(__name__)
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt")


def leaf_paths(tree: Any) -> Dict[str, Any]:
    """``{"stage1_block1/conv1/conv/kernel": leaf, ...}`` of a nested dict of arrays (or shapes)."""
    return {"/".join(str(getattr(k, "key", k)) for k in path): leaf
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _variable_shapes(model: nn.Module, input_shape: Sequence[int]) -> Dict[str, Any]:
    init = lambda key: model.init({"params": key, "dropout": key}, jnp.zeros((1, *input_shape), jnp.float32), train=False)  # noqa: E731
    return jax.eval_shape(init, jax.random.PRNGKey(0))


def head_paths(model: nn.Module, input_shape: Sequence[int]) -> FrozenSet[str]:
    """The parameter paths (``"head/fc/kernel"``) whose shapes depend on the class count: the model's head.

    ``input_shape`` is one example's, without the batch axis. Only shapes are computed (nothing allocated).
    """
    if not getattr(model, "num_classes", 0):
        raise ValueError(f"{type(model).__name__} has no classes (num_classes=0), so it has no head")
    here = {p: s.shape for p, s in leaf_paths(_variable_shapes(model, input_shape)["params"]).items()}
    other = leaf_paths(_variable_shapes(model.clone(num_classes=model.num_classes + 1), input_shape)["params"])
    return frozenset(p for p, shape in here.items() if p not in other or other[p].shape != shape)


def path_matcher(patterns: Sequence[str]) -> Callable[[str], bool]:
    """``path -> bool``: whether any regex of ``patterns`` is found in the path (``re.search``)."""
    compiled = [re.compile(p) for p in patterns]
    return lambda path: any(c.search(path) for c in compiled)


# ----------------------------------------------------------------------------- what is frozen


@dataclasses.dataclass(frozen=True)
class Freezing:
    """Which parameters stay fixed and which modules run in evaluation mode, from ``model.freeze`` and
    ``model.linear_probe``; ``head`` is the model's head (``head_paths``)."""

    patterns: Tuple[str, ...] = ()
    linear_probe: bool = False
    head: FrozenSet[str] = frozenset()

    def __post_init__(self):
        object.__setattr__(self, "_matches", path_matcher(self.patterns))
        object.__setattr__(self, "_head_modules", frozenset(p.rsplit("/", 1)[0] for p in self.head))

    @property
    def active(self) -> bool:
        return bool(self.patterns) or self.linear_probe

    def frozen(self, path: str) -> bool:
        """Whether parameter ``path`` stays fixed."""
        return self._matches(path) or (self.linear_probe and path not in self.head)

    def evaluation_mode(self, module: nn.Module) -> bool:
        """Whether a call of ``module`` (bound, inside ``apply``) runs with ``train=False``."""
        path = "/".join(module.path)
        if not path:  # the model itself
            return False
        if isinstance(module, BatchNorm) and self.frozen(f"{path}/scale") and self.frozen(f"{path}/bias"):
            return True
        if not self.linear_probe:
            return False
        on_the_way = any(h == path or h.startswith(path + "/") or path.startswith(h + "/") for h in self._head_modules)
        return not on_the_way

    def apply_fn(self, apply: Callable) -> Callable:
        """``apply`` (a model's ``apply``) with the calls of ``evaluation_mode`` modules made with ``train=False``."""
        if not self.active:
            return apply

        def interceptor(next_fun, args, kwargs, context):
            if context.method_name == "__call__" and self.evaluation_mode(context.module):
                args, kwargs = _train_off(type(context.module), args, kwargs)
            return next_fun(*args, **kwargs)

        def apply_in_modes(variables, *args, **kwargs):
            with nn.intercept_methods(interceptor):
                return apply(variables, *args, **kwargs)

        return apply_in_modes


def _train_off(module_type: type, args: tuple, kwargs: dict) -> Tuple[tuple, dict]:
    """The call's arguments with its ``train`` argument (keyword or positional) set to False."""
    if "train" in kwargs:
        return args, {**kwargs, "train": False}
    names = [p for p in inspect.signature(module_type.__call__).parameters][1:]  # without self
    if "train" in names and names.index("train") < len(args):
        index = names.index("train")
        return args[:index] + (False,) + args[index + 1:], kwargs
    return args, kwargs  # no train argument given: nothing to switch


# ----------------------------------------------------------------------------- starting weights


@dataclasses.dataclass
class Initial:
    """Values a run starts from: ``variables`` (``{"params": ..., "batch_stats": ...}``, numpy), the variable
    paths that keep their fresh values (``"params/head/fc/kernel"`` -> why), the warning line and the
    record written to ``init_from.json``."""

    variables: Dict[str, Any]
    reinitialised: Dict[str, str]
    summary: str
    record: Dict[str, Any]


def source_kind(path: str) -> str:
    """``"run"`` for a folder (a run's workdir), ``"weights"`` for a weights file; ValueError otherwise."""
    if os.path.isdir(path):
        return "run"
    if not os.path.exists(path):
        raise ValueError(f"model.init_from={path!r} does not exist; expected a weights file ({', '.join(WEIGHT_SUFFIXES)}) "
                         f"or a finished run's workdir")
    if not path.endswith(WEIGHT_SUFFIXES):
        raise ValueError(f"model.init_from={path!r} is not a weights file; expected a {', '.join(WEIGHT_SUFFIXES)} file "
                         f"of the model's torchvision/timm twin, or a finished run's workdir")
    return "weights"


def check_source(path: str, model_name: str) -> None:
    """What can be told of ``model.init_from`` without reading any weights (``validate.check`` calls it)."""
    from cnn.analysis import runs

    if source_kind(path) == "weights":
        if model_name not in cnn.models.TWINS:
            raise ValueError(f"model.init_from={path!r}: model {model_name!r} has no torchvision or timm twin, so a "
                             f"weights file cannot fill it; give a finished run's workdir (models with a twin: "
                             f"{', '.join(sorted(cnn.models.TWINS))})")
        if path.endswith((".pth", ".pt")):
            import importlib.util

            if importlib.util.find_spec("torch") is None:
                raise ValueError(f"model.init_from={path!r}: reading a .pth/.pt file needs PyTorch (pip install torch); "
                                 f"or convert it to .safetensors")
        return
    folder = pathlib.Path(path)
    if not (folder / "config.json").exists() or not (folder / "results.json").exists():
        raise ValueError(f"model.init_from={path!r} holds no finished run (no config.json and results.json); give the "
                         f"workdir of a run that finished, or a weights file")
    source_model = runs.read_config(path).model.name
    if source_model != model_name:
        raise ValueError(f"model.init_from={path!r} holds a run of {source_model!r}, not {model_name!r}; start "
                         f"from a run of the same model")
    if not runs.checkpoint_steps(path):
        raise ValueError(f"model.init_from={path!r} holds no checkpoint (deleted?); nothing to start from")


def file_record(path: str) -> Dict[str, Any]:
    """Path, size and sha256 of a weights file: what this run started from (a file changed later differs)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return {"path": os.path.abspath(path), "bytes": os.path.getsize(path), "sha256": digest.hexdigest()}


def _numpy(tree: Any) -> Any:
    return jax.tree.map(np.asarray, jax.device_get(tree))


def load_initial(config: Any, model: nn.Module, input_shape: Sequence[int], head: FrozenSet[str]) -> Initial:
    """The values ``config.model.init_from`` gives ``model`` (inputs of ``input_shape``, one example), checked
    against the model's own variables: every tensor present with its shape, but the head's when the classes
    differ (re-initialised and reported). ValueError, listing every mismatch, otherwise."""
    path = config.model.init_from
    kind = source_kind(path)
    reinitialised: Dict[str, str] = {}
    adapted: Mapping[str, str] = {}
    if kind == "weights":
        size = tuple(input_shape[-3:-1]) if len(input_shape) >= 3 else None
        try:
            loaded = cnn.models.load_torch_weights(config.model.name, path, num_classes=int(model.num_classes),
                                                   in_channels=int(input_shape[-1]), image_size=size,
                                                   **dict(config.model.overrides))
        except ValueError as error:  # the loader's problems, one a line, in one line
            lines = [line.strip() for line in str(error).splitlines()]
            problems = lines[1:] or lines
            raise ValueError(f"model.init_from={path!r} does not fit {config.model.name} ({len(problems)} problem(s)): "
                             + "; ".join(problems[:6]) + (f"; and {len(problems) - 6} more" if len(problems) > 6 else "")) from None
        variables, report = _numpy(loaded.variables), loaded.report
        reinitialised.update(report.reinitialised)
        adapted = report.adapted
        record = {"kind": "weights", **file_record(path), "loaded": len(report.loaded),
                  "skipped_keys": dict(report.skipped)}
    else:
        from cnn.analysis import runs

        step, variables = runs.restore_variables(path)
        variables = _numpy(variables)
        record = {"kind": "run", "path": os.path.abspath(path), "step": step,
                  "results": runs.read_results(path)}
    expected = {p: s.shape for p, s in leaf_paths(_variable_shapes(model, input_shape)).items()}
    found = leaf_paths(variables)
    head_variables = {f"params/{p}" for p in head}
    problems = []
    for name, shape in expected.items():
        if name in reinitialised:
            continue
        if name not in found:
            problems.append(f"{name} {shape} is not in it")
        elif tuple(np.shape(found[name])) != tuple(shape):
            if name in head_variables:  # the last axis of a head's kernel and bias counts the classes
                reinitialised[name] = (f"head: the checkpoint has {np.shape(found[name])[-1]} classes, the model "
                                       f"{model.num_classes}")
            else:
                problems.append(f"{name} has shape {tuple(np.shape(found[name]))} there, {tuple(shape)} here")
    modules = {name.split("/")[1] for name in expected}
    skipped = {}
    for name in found:
        if name in expected:
            continue
        if getattr(model, "aux_logits", True) is False and name.split("/")[1] not in modules:
            skipped[name] = "an auxiliary head: the model is built without them (aux_logits=False)"
        else:
            problems.append(f"{name} {tuple(np.shape(found[name]))} has no place in the model")
    if problems:
        raise ValueError(f"model.init_from={path!r} does not fit {config.model.name} ({len(problems)} problem(s)): "
                         + "; ".join(problems[:6]) + (f"; and {len(problems) - 6} more" if len(problems) > 6 else ""))
    reinitialised = {name: why for name, why in reinitialised.items() if name in expected}
    if config.model.reinit_head:
        for name in sorted(head_variables):
            reinitialised.setdefault(name, "model.reinit_head")
    loaded_count = sum(1 for name in found if name in expected and name not in reinitialised)
    parts = [f"{loaded_count} tensors loaded"]
    parts.append(f"{len(adapted)} adapted" + (f" ({'; '.join(f'{k}: {v}' for k, v in adapted.items())})" if adapted else ""))
    parts.append(f"{len(reinitialised)} re-initialised" + _grouped(reinitialised))
    if skipped:
        parts.append(f"{len(skipped)} skipped" + _grouped(skipped))
    summary = f"model.init_from={path!r}: " + ", ".join(parts)
    record.update(reinitialised=dict(reinitialised), adapted=dict(adapted), skipped_variables=skipped)
    kept = {name: value for name, value in found.items() if name not in skipped}
    return Initial(_nested(kept), reinitialised, summary, record)


def _grouped(reasons: Mapping[str, str]) -> str:
    """`` (a, b: why; c: why2)``: names grouped by their reason, or nothing."""
    groups: Dict[str, list] = {}
    for name, why in reasons.items():
        groups.setdefault(why, []).append(name)
    return " (" + "; ".join(f"{', '.join(names)}: {why}" for why, names in groups.items()) + ")" if groups else ""


def _nested(flat: Mapping[str, Any]) -> Dict[str, Any]:
    """``{"params/a/b": x}`` -> ``{"params": {"a": {"b": x}}}``."""
    tree: Dict[str, Any] = {}
    for name, value in flat.items():
        node = tree
        *parents, leaf = name.split("/")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return tree


def start_state(state: Any, initial: Initial) -> Any:
    """A fresh train state (host or one device) with ``initial``'s values in place of its fresh ones; the
    optimizer state (and an EMA) start from the loaded parameters."""
    variables = cnn.models.insert_variables(state.variables(), initial.variables, exclude=tuple(initial.reinitialised))
    params = variables["params"]
    return state.replace(
        params=params,
        batch_stats=variables.get("batch_stats", state.batch_stats),
        opt_state=state.tx.init(params),
        ema_params=jax.tree.map(jnp.copy, params) if state.ema_params is not None else None,
    )
