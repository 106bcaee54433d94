"""The fields every config has, with their defaults. Configs call ``base(...)`` and change what differs.

Empty strings and zeros mean "off" or "default" so every field can be set from the command line
(``--config.training.ema_decay=0.999``).
"""

import ml_collections


def base(*, model: str, dataset: str, batch_size: int, epochs: float, learning_rate: float, optimizer: str = "sgd"):
    config = ml_collections.ConfigDict()
    config.parallel = "single"  # single | pmap | sharded
    config.distributed = False  # join a multi-process run with jax.distributed.initialize() (see launch/)
    config.distributed_timeout_seconds = 300
    config.force = False  # start over in a workdir that holds another experiment's checkpoints

    config.model = ml_collections.ConfigDict()
    config.model.name = model
    config.model.overrides = ml_collections.ConfigDict()  # any module field, e.g. drop_rate
    config.model.cpu_kernels = "auto"  # CPU convs/pooling/XLA options: auto (on the CPU backend) | on | off
    # Transfer learning (docs/transfer.md). The starting weights: "" = a fresh initialisation; a .safetensors,
    # .pth or .pt state dict of the model's torchvision/timm twin; or a finished run's workdir (its newest
    # checkpoint). Loaded only when the run starts from scratch; a head whose class count differs is re-initialised.
    config.model.init_from = ""
    config.model.reinit_head = False  # with init_from: re-initialise the head even when the class counts agree
    config.model.freeze = ()  # regexes over parameter paths that stay fixed, e.g. ("^stem/", "^stage1_"); a
    #                           BatchNorm whose parameters are all frozen keeps its statistics (evaluation mode)
    config.model.linear_probe = False  # train only the head, every other module in evaluation mode

    config.data = ml_collections.ConfigDict()
    config.data.name = dataset
    config.data.data_dir = ""  # raw files; "" = $CNN_DATA_DIR, else ~/.cache/cnn/data
    config.data.prepared_dir = ""  # array_record output; "" = $CNN_PREPARED_DIR, else ~/.cache/cnn/prepared
    config.data.train_split = "train"
    config.data.test_split = "test"
    config.data.augment = ""  # e.g. "crop(4)|flip"; see docs/data.md
    config.data.normalize = "dataset"  # "dataset": per-channel mean/std of the training split; "none": x / 255
    config.data.workers = 0  # grain worker processes
    config.data.prefetch = 2
    config.data.on_device = "auto"  # hold the splits on the device: auto (when they fit, single/sharded) | on | off
    config.data.device_memory_mb = 2048.0  # "auto" holds a training split of at most this many MB on the device
    config.data.options = ml_collections.ConfigDict()  # dataset options (synthetic shapes, image folder)
    config.data.train_per_class = 0  # > 0: train on this many examples of each class (a fixed stratified subset)
    config.data.train_subset_seed = 0  # which subset train_per_class keeps (smaller ones lie inside larger ones)

    config.training = ml_collections.ConfigDict()
    config.training.batch_size = batch_size  # global, over all devices and processes
    config.training.eval_batch_size = 0  # 0 = batch_size
    config.training.epochs = float(epochs)
    config.training.steps = 0  # > 0 overrides epochs
    config.training.seed = 0
    config.training.dtype = "float32"  # compute dtype: float32 | bfloat16 | float16 (with loss scaling)
    config.training.label_smoothing = 0.0
    config.training.l2 = 0.0  # L2 penalty in the loss (besides optimizer.weight_decay)
    config.training.ema_decay = 0.0  # > 0 keeps an exponential moving average of the params
    config.training.adversarial = ""  # adversarial training's attack, e.g. "pgd(eps=0.3,steps=7)", "fgsm_rs(eps=0.3)"
    config.training.per_device_batch_norm = False  # pmap only: statistics of each device's own slice
    config.training.log_every_steps = 100
    config.training.eval_every_steps = 0  # 0 = once per epoch
    config.training.checkpoint_every_steps = 0  # 0 = once per epoch
    config.training.keep_checkpoints = 3
    config.training.best_metric = "test_top1"  # also keep the best checkpoint by this; "" = off
    config.training.best_mode = "max"
    config.training.async_checkpoints = True
    config.training.progress_bar = True
    config.training.steps_per_call = 8  # optimizer steps per dispatched call (lax.scan); results do not depend on it

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = optimizer  # sgd | adam | adamw | lamb | lars
    config.optimizer.learning_rate = float(learning_rate)
    config.optimizer.lr_reference_batch = 0  # > 0: linear scaling rule, lr * batch / reference
    config.optimizer.momentum = 0.9
    config.optimizer.nesterov = False
    config.optimizer.b1 = 0.9
    config.optimizer.b2 = 0.999
    config.optimizer.eps = 1e-8
    config.optimizer.weight_decay = 0.0
    config.optimizer.decay_mask = "weights"  # "weights" spares biases and norm parameters; "all"
    config.optimizer.schedule = "constant"  # constant | steps | warmup_cosine | cosine | one_cycle
    config.optimizer.warmup_epochs = 0.0
    config.optimizer.warmup_steps = 0
    config.optimizer.boundaries_epochs = ()
    config.optimizer.decay_factor = 0.1
    config.optimizer.end_lr_factor = 0.0
    config.optimizer.clip_norm = 0.0  # > 0 clips the global gradient norm
    config.optimizer.accumulate_steps = 1
    config.optimizer.backbone_lr_scale = 1.0  # every parameter but the head's at learning_rate * this
    config.optimizer.prune = ""  # magnitude pruning, e.g. "gradual(0.9, start=0, end=2000, every=100)" (updates)
    return config


def smoke_training(training, *, steps: int, every: int, log_every: int, batch_size: int = 8, eval_batch_size: int = 16):
    """A few steps of small batches, evaluated and checkpointed every ``every`` steps, logged every ``log_every``."""
    training.batch_size = batch_size
    training.eval_batch_size = eval_batch_size
    training.steps = steps
    training.log_every_steps = log_every
    training.eval_every_steps = every
    training.checkpoint_every_steps = every
    training.progress_bar = False
    training.async_checkpoints = False
    return training


def smoke(config, *, image_shape=(28, 28, 1), num_classes=10, overrides=None):
    """Shrinks a config to seconds: generated synthetic data, a few steps, small batches."""
    config.data.name = "synthetic"
    config.data.options = ml_collections.ConfigDict(
        dict(image_shape=tuple(image_shape), num_classes=num_classes, num_train=64, num_test=40, seed=0)
    )
    config.data.train_split, config.data.test_split = "train", "test"
    smoke_training(config.training, steps=6, every=3, log_every=2)
    for key, value in (overrides or {}).items():
        config.model.overrides[key] = value
    return config
