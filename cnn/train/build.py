"""Everything a run is made of, built from its config before anything is written: the parallel mode, the
data, the model, the optimizer, the step options and the shapes of the train state (nothing compiled)."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

import cnn.models
from cnn.data.chain import preprocessing
from cnn.layers import cpu_kernels
from cnn.robust import parse_attack
from cnn.train import feed, optim, transfer, validate
from cnn.train.parallel import Parallel
from cnn.train.state import TrainState, create_train_state
from cnn.train.steps import StepOptions

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@dataclasses.dataclass
class Experiment:
    """A config made concrete. Batches count examples over all devices and processes."""

    config: Any
    parallel: Parallel
    train_source: Any
    test_source: Any
    model: nn.Module
    tx: Any
    learning_rate: Callable[[Any], Any]
    options: StepOptions
    update_batch: int  # examples of one optimizer update (micro-batches included)
    eval_batch: int
    on_device: bool  # the training and test splits held on the device (cnn.train.feed)
    unroll_calls: bool  # the steps of a call written out on the CPU backend, not a loop (cnn.train.steps)
    steps_per_epoch: int  # optimizer updates per epoch
    total_steps: int
    init: Callable[[jax.Array], TrainState]
    state_shapes: Any  # the TrainState as ShapeDtypeStructs
    params: int
    seed: int
    head: frozenset = frozenset()  # the head's parameter paths (cnn.train.transfer), when a transfer field needs them
    freezing: transfer.Freezing = transfer.Freezing()  # model.freeze and model.linear_probe

    @property
    def identity(self) -> dict:
        """What the checkpoints record of the run (read by older checkpoint readers and the tests)."""
        return {"model": self.config.model.name, "dataset": self.config.data.name,
                "num_classes": int(self.train_source.num_classes), "params": int(self.params)}


def model_fields(model: nn.Module) -> set:
    return {f.name for f in dataclasses.fields(model)}


def build_model(config: Any, num_classes: int, parallel: Parallel) -> nn.Module:
    """The model of ``config.model`` with the compute dtype, the pmap axis of its BatchNorm and, when
    ``config.model.cpu_kernels`` says so, the CPU kernels: the one place a run's model is made. A run that
    starts from a twin's weights file is built as the twin (``twin.overrides``, e.g. timm's ReLU6 MobileNet)."""
    model = cnn.models.from_config(config.model, num_classes=num_classes, dtype=DTYPES[config.training.dtype])
    if config.model.get("init_from") and transfer.source_kind(config.model.init_from) == "weights":
        twin_fields = {k: v for k, v in cnn.models.twin(config.model.name).overrides.items()
                       if k not in config.model.overrides}
        model = model.clone(**twin_fields) if twin_fields else model
    if parallel.model_axis_name and "axis_name" in model_fields(model):
        model = model.clone(axis_name=parallel.model_axis_name)
    if cpu_kernels.enabled(config.model.cpu_kernels):
        model = cpu_kernels.use_cpu_kernels(model)
    return model


def open_sources(config: Any):
    """The train and test sources (prepared on first use); processes take turns preparing."""
    from cnn.data import source

    data = config.data
    common = dict(data_dir=data.data_dir or None, prepared_dir=data.prepared_dir or None, **dict(data.options))
    if jax.process_count() == 1:
        opened = tuple(source(data.name, split, **common) for split in (data.train_split, data.test_split))
    else:
        # The first process prepares the files (on a shared or its own disk), the others then find them
        # ready, or prepare their own copy, never racing on one folder.
        from jax.experimental import multihost_utils

        opened = None
        for turn in range(jax.process_count()):
            if turn == jax.process_index():
                opened = tuple(source(data.name, split, **common) for split in (data.train_split, data.test_split))
            multihost_utils.sync_global_devices(f"cnn.data.prepare.{turn}")
    for path, split, opened_source in zip(("data.train_split", "data.test_split"), (data.train_split, data.test_split),
                                          opened):
        try:
            examples = len(opened_source)
        except ValueError:  # tfds's source of a split whose end comes before its start has a negative length
            examples = 0
        validate.check_split(path, split, examples)
    train, test = opened
    if data.get("train_per_class"):
        from cnn.data import per_class

        train = per_class(train, data.train_per_class, seed=data.train_subset_seed, what="data.train_per_class")
    return train, test


def pixel_normalisation(mean, std) -> dict:
    """The preprocessing's normalisation in [0, 1] pixel units: ``inputs = (pixels - mean) / std``."""
    if mean is None:  # pixels / 255
        return {"pixel_mean": 0.0, "pixel_std": 1.0}
    return {"pixel_mean": tuple(float(m) / 255.0 for m in mean), "pixel_std": tuple(float(s) / 255.0 for s in std)}


def build(config: Any) -> Experiment:
    """Builds the run of ``config`` (already checked by ``validate.check``); raises ValueError for what only
    the data or the model can tell (a batch the devices cannot split, an input too small for the model)."""
    training = config.training
    kernels = cpu_kernels.enabled(config.model.cpu_kernels)
    parallel = Parallel(config.parallel, per_device_batch_norm=training.per_device_batch_norm,
                        compiler_options=cpu_kernels.compiler_options() if kernels else {})
    parallel.check_batch(training.batch_size)
    eval_batch = training.eval_batch_size or training.batch_size
    parallel.check_batch(eval_batch, "training.eval_batch_size")

    train_source, test_source = open_sources(config)
    validate.check_augment(config.data.augment, train_source.image_shape)
    accumulate = config.optimizer.accumulate_steps
    update_batch = training.batch_size * accumulate
    if update_batch > len(train_source):
        what = f" ({training.batch_size} x optimizer.accumulate_steps={accumulate})" if accumulate > 1 else ""
        raise ValueError(f"training.batch_size={training.batch_size}{what} is larger than the {len(train_source)} "
                         f"training examples of {config.data.name}[{config.data.train_split}]; use a batch of at most "
                         f"{len(train_source) // accumulate}")
    steps_per_epoch = len(train_source) // update_batch
    total_steps = training.steps or int(training.epochs * steps_per_epoch)
    if total_steps < 1:
        raise ValueError(f"training.epochs={training.epochs!r} of {steps_per_epoch} updates make no step; raise "
                         f"training.epochs or set training.steps")

    num_classes = train_source.num_classes
    model = build_model(config, num_classes, parallel)
    cnn.models.check_input(config.model.name, train_source.image_shape, what=f"{config.data.name} images")
    model_config = config.model
    needs_head = model_config.init_from or model_config.linear_probe or config.optimizer.backbone_lr_scale != 1
    head = transfer.head_paths(model, train_source.image_shape) if needs_head else frozenset()
    freezing = transfer.Freezing(tuple(model_config.freeze), bool(model_config.linear_probe), head)
    tx, learning_rate = optim.build(config.optimizer, steps_per_epoch=steps_per_epoch, total_steps=total_steps,
                                    global_batch=update_batch, frozen=freezing.frozen if freezing.active else None,
                                    head=head.__contains__ if head else None)
    mean, std = (train_source.mean, train_source.std) if config.data.normalize == "dataset" else (None, None)
    options = StepOptions(
        preprocess=preprocessing(config.data.augment, num_classes=num_classes, mean=mean, std=std),
        eval_preprocess=preprocessing("", num_classes=num_classes, mean=mean, std=std),
        label_smoothing=float(training.label_smoothing),
        l2=float(training.l2),
        l2_mask=optim.decay_mask,
        ema_decay=training.ema_decay or None,
        accumulate_steps=accumulate,
        axis_name=parallel.axis_name,
        compute_dtype=DTYPES[training.dtype],
        adversarial=parse_attack(training.adversarial),
        **pixel_normalisation(mean, std),
    )
    init = functools.partial(create_train_state, model, tx, input_shape=train_source.image_shape,
                             ema=bool(training.ema_decay), loss_scale=training.dtype == "float16",
                             apply_fn=freezing.apply_fn(model.apply))
    seed = int(training.seed)
    state_shapes = jax.eval_shape(init, jax.random.PRNGKey(seed))  # nothing allocated or compiled yet
    paths = list(transfer.leaf_paths(state_shapes.params))
    for pattern in model_config.freeze:
        if not any(transfer.path_matcher([pattern])(p) for p in paths):
            raise ValueError(f"model.freeze: {pattern!r} matches no parameter of {model_config.name}; its parameters are "
                             f"named like {', '.join(paths[:3])}, ..., {paths[-1]}")
    if freezing.active and all(freezing.frozen(p) for p in paths):
        raise ValueError(f"model.freeze={tuple(model_config.freeze)!r} (linear_probe={model_config.linear_probe}) "
                         f"freezes every parameter of {model_config.name}; nothing would train")
    if state_shapes.batch_stats and parallel.model_axis_name and "axis_name" not in model_fields(model):
        raise ValueError(f"model {config.model.name!r} keeps batch_stats but has no axis_name field, so under "
                         f"parallel='pmap' its BatchNorm would keep per-device statistics without a word; give it "
                         f"an axis_name field (cnn.layers.batch_norm) or set training.per_device_batch_norm=True")
    params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state_shapes.params))
    on_device = feed.use_device_feed(config.data.on_device, train_source, parallel, config.data.device_memory_mb)
    return Experiment(config, parallel, train_source, test_source, model, tx, learning_rate, options, update_batch,
                      eval_batch, on_device, kernels or jax.default_backend() == "cpu", steps_per_epoch, total_steps,
                      init, state_shapes, params, seed,
                      head, freezing)
