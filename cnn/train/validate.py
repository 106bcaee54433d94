"""Every value of a training config checked before anything runs: one line naming the field, the value
and what is accepted (DESIGN: "Every value is checked before any training starts")."""

from __future__ import annotations

import math
import re
from typing import Any, Iterable, Optional

from cnn.export import pruning
from cnn.layers import cpu_kernels
from cnn.robust import parse_attack
from cnn.train import optim, transfer
from cnn.train.parallel import MODES

DTYPES = ("float32", "bfloat16", "float16")
METRICS = ("test_top1", "test_top5", "test_loss")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fail(path: str, value: Any, expected: str) -> None:
    raise ValueError(f"{path}={value!r}; expected {expected}")


def integer(path: str, value: Any, least: int) -> None:
    if not _is_int(value) or value < least:
        _fail(path, value, f"an integer >= {least}")


def number(path: str, value: Any, low: float, high: float = math.inf, *, low_open: bool = False,
           high_open: bool = False) -> None:
    ok = _is_number(value) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        left, right = "(" if low_open else "[", ")" if high_open or high == math.inf else "]"
        high_text = "inf" if high == math.inf else f"{high:g}"
        _fail(path, value, f"a finite number in {left}{low:g}, {high_text}{right}")


def boolean(path: str, value: Any) -> None:
    if not isinstance(value, bool):
        _fail(path, value, "True or False")


def regexes(path: str, value: Any) -> None:
    """A tuple of regular expressions (over parameter paths)."""
    if isinstance(value, str) or not isinstance(value, (tuple, list)):
        _fail(path, value, "a tuple of regular expressions, e.g. ('^stem/', 'stage1_')")
    for pattern in value:
        try:
            re.compile(pattern)
        except (re.error, TypeError) as error:
            raise ValueError(f"{path}: {pattern!r} is not a regular expression ({error}); expected a tuple of "
                             f"regular expressions, e.g. ('^stem/', 'stage1_')") from None


def choice(path: str, value: Any, accepted: Iterable[str]) -> None:
    accepted = tuple(accepted)
    if value not in accepted:
        _fail(path, value, f"one of {', '.join(accepted)}")


def check(config: Any) -> None:
    """Raises ValueError for the first field whose value is out of range or unknown."""
    choice("parallel", config.parallel, MODES)
    choice("model.cpu_kernels", config.model.cpu_kernels, cpu_kernels.SETTINGS)
    check_transfer(config.model)
    data, training, opt = config.data, config.training, config.optimizer
    choice("data.normalize", data.normalize, ("dataset", "none"))
    integer("data.workers", data.workers, 0)
    integer("data.prefetch", data.prefetch, 1)
    choice("data.on_device", data.on_device, ("auto", "on", "off"))
    number("data.device_memory_mb", data.device_memory_mb, 0, math.inf, low_open=True)
    integer("data.train_per_class", data.train_per_class, 0)
    integer("data.train_subset_seed", data.train_subset_seed, 0)

    integer("training.batch_size", training.batch_size, 1)
    integer("training.eval_batch_size", training.eval_batch_size, 0)
    integer("training.steps", training.steps, 0)
    number("training.epochs", training.epochs, 0)
    if training.steps == 0 and training.epochs <= 0:
        raise ValueError(f"training.steps={training.steps} and training.epochs={training.epochs!r} make no steps; set "
                         f"training.steps > 0, or training.steps=0 and training.epochs > 0")
    integer("training.seed", training.seed, 0)
    choice("training.dtype", training.dtype, DTYPES)
    number("training.label_smoothing", training.label_smoothing, 0, 1, high_open=True)
    number("training.l2", training.l2, 0, math.inf)
    number("training.ema_decay", training.ema_decay, 0, 1, high_open=True)
    integer("training.log_every_steps", training.log_every_steps, 1)
    integer("training.eval_every_steps", training.eval_every_steps, 0)
    integer("training.checkpoint_every_steps", training.checkpoint_every_steps, 0)
    integer("training.keep_checkpoints", training.keep_checkpoints, 1)
    integer("training.steps_per_call", training.steps_per_call, 1)
    try:
        parse_attack(training.adversarial)
    except (ValueError, TypeError) as error:
        raise ValueError(f"training.adversarial={training.adversarial!r}: {error}") from None
    metrics = METRICS + (tuple(f"{m}_ema" for m in METRICS) if training.ema_decay else ())
    if training.best_metric and training.best_metric not in metrics:
        _fail("training.best_metric", training.best_metric, f"one of {', '.join(metrics)} (or '' for none)")
    choice("training.best_mode", training.best_mode, ("max", "min"))
    if training.per_device_batch_norm and config.parallel != "pmap":
        raise ValueError(f"training.per_device_batch_norm=True needs parallel='pmap' (got {config.parallel!r})")

    choice("optimizer.name", opt.name, optim.OPTIMIZERS)
    choice("optimizer.schedule", opt.schedule, optim.SCHEDULES)
    number("optimizer.learning_rate", opt.learning_rate, 0, math.inf, low_open=True)
    integer("optimizer.lr_reference_batch", opt.lr_reference_batch, 0)
    number("optimizer.momentum", opt.momentum, 0, 1, high_open=True)
    number("optimizer.b1", opt.b1, 0, 1, high_open=True)
    number("optimizer.b2", opt.b2, 0, 1, high_open=True)
    number("optimizer.eps", opt.eps, 0, math.inf, low_open=True)
    number("optimizer.weight_decay", opt.weight_decay, 0, math.inf)
    choice("optimizer.decay_mask", opt.decay_mask, ("weights", "all"))
    number("optimizer.warmup_epochs", opt.warmup_epochs, 0, math.inf)
    integer("optimizer.warmup_steps", opt.warmup_steps, 0)
    for boundary in opt.boundaries_epochs:
        number("optimizer.boundaries_epochs", boundary, 0, math.inf, low_open=True)
    if list(opt.boundaries_epochs) != sorted(opt.boundaries_epochs):
        _fail("optimizer.boundaries_epochs", tuple(opt.boundaries_epochs), "increasing epochs")
    number("optimizer.decay_factor", opt.decay_factor, 0, 1, low_open=True)
    number("optimizer.end_lr_factor", opt.end_lr_factor, 0, 1)
    number("optimizer.clip_norm", opt.clip_norm, 0, math.inf)
    integer("optimizer.accumulate_steps", opt.accumulate_steps, 1)
    number("optimizer.backbone_lr_scale", opt.backbone_lr_scale, 0, math.inf, low_open=True)
    if opt.get("prune"):
        pruning.parse_schedule(opt.prune)  # "optimizer.prune='...': ..." on a bad schedule


def check_transfer(model: Any) -> None:
    """``model.init_from`` (a weights file of the model's twin, or a finished run's workdir, that exists),
    ``model.reinit_head``, ``model.freeze`` and ``model.linear_probe``."""
    if not isinstance(model.init_from, str):
        _fail("model.init_from", model.init_from, "a path (a weights file or a finished run's workdir), or '' for none")
    if model.init_from:
        transfer.check_source(model.init_from, model.name)
    boolean("model.reinit_head", model.reinit_head)
    if model.reinit_head and not model.init_from:
        raise ValueError("model.reinit_head=True re-initialises the head of loaded weights, but model.init_from is ''; "
                         "set model.init_from or model.reinit_head=False")
    regexes("model.freeze", model.freeze)
    boolean("model.linear_probe", model.linear_probe)


def check_split(path: str, split: str, examples: int) -> None:
    """A split that selects no example (``train[50%:10%]``) is refused with its field."""
    if examples < 1:
        raise ValueError(f"{path}={split!r} selects no examples; a tfds split such as 'train', 'train[:90%]' or "
                         f"'train[-5000:]' with its start before its end")


def check_augment(augment: str, image_shape: Optional[tuple]) -> None:
    """Crop padding and cutout sizes that would leave images black are refused (``crop(100000)``)."""
    if not image_shape:
        return
    side = min(image_shape[:2])
    for op, limit in (("crop", side), ("cutout", side)):
        for match in re.finditer(rf"\b{op}\(\s*(\d+)", augment):
            if int(match.group(1)) >= limit:
                raise ValueError(f"data.augment={augment!r}: {op}({match.group(1)}) on {image_shape[0]}x{image_shape[1]} "
                                 f"images would leave them (nearly) blank; expected a size below {limit}")
