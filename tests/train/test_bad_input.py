"""Bad input through the real command line: one clear line, a non-zero status, nothing overwritten.

The design's rule "What bad input gets" (docs/training.md lists the messages). Every case runs ``python -m experiments.train`` in a subprocess and checks
that the last line of stderr is ``error: ...`` naming the bad value and what would be accepted, that the
exit status is 2, and that what was in the workdir before (an earlier run's results, metrics and
checkpoints) is byte-identical afterwards. docs/training.md lists the messages.
"""

import dataclasses
import os
import pathlib
import socket
import time
from typing import Callable, Optional

import pytest

from cli_runs import (  # tests/helpers
    SMOKE, assert_one_clear_line, checkpoint_steps, copy_of, env_for, finished_run, run_cli, snapshot,
)

pytestmark = pytest.mark.xdist_group("bad_input")  # one worker builds the module's fixtures (pyproject: --dist loadgroup)

IMAGES = "train-images-idx3-ubyte.gz"
IMAGES_SIZE = 9912422  # the registered size of the official file (cnn/data/raw_files.py)
SENTINELS = {"results.json": '{"test_accuracy": 0.99, "note": "an earlier run"}\n', "metrics.jsonl": '{"step": 1, "train_loss": 2.3}\n'}


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """Folders every case of this module shares: prepared synthetic data and the XLA compile cache."""
    return tmp_path_factory.mktemp("shared")


# --- files the cases need ---------------------------------------------------------------------------


def config_file(tmp_path, body: str) -> str:
    """A config file in tmp that starts from mnist_simple_cnn and runs ``body`` on ``config``."""
    path = tmp_path / "my_config.py"
    lines = "".join(f"    {line}\n" for line in body.splitlines())
    path.write_text(
        "from experiments.configs import mnist_simple_cnn\n\n\ndef get_config(arg=''):\n"
        f"    config = mnist_simple_cnn.get_config(arg)\n{lines}    return config\n"
    )
    return str(path)


def offline_mnist(tmp_path, image_bytes: Optional[Callable] = None) -> list:
    """mnist with downloading off (the test never touches the network), from ``tmp/data``.

    ``image_bytes(path)`` writes a bad training-images file there; without it the folder is empty.
    Nothing of the real MNIST is copied: a file of the wrong size, or of the right size and the wrong
    bytes, is all a check needs.
    """
    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    if image_bytes is not None:
        image_bytes(folder / IMAGES)
    return [f"--config={config_file(tmp_path, 'config.data.options.download = False')}", f"--config.data.data_dir={tmp_path / 'data'}"]


def weights_file(tmp_path) -> str:
    """A .safetensors file (its content is never read: the model's lack of a twin is found first)."""
    path = tmp_path / "weights.safetensors"
    path.write_bytes(b"")
    return str(path)


def truncated_gzip(path):
    import gzip
    import random

    path.write_bytes(gzip.compress(random.Random(0).randbytes(4096))[:100])  # the first 100 bytes of a gzip


def right_size_wrong_bytes(path):
    with open(path, "wb") as stream:
        stream.write(b"\x1f\x8b\x08\x00")  # a gzip header, then zeros up to the official size
        stream.truncate(IMAGES_SIZE)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- the cases that fail before training --------------------------------------------------------------


@dataclasses.dataclass
class Case:
    id: str
    args: Callable  # tmp_path -> command-line arguments (besides --workdir)
    needles: Callable  # tmp_path -> substrings the last line must hold
    env: Callable = lambda tmp_path: {}
    max_seconds: Optional[float] = None  # for a case that could hang: it must fail this fast


def smoke(*flags):
    return lambda tmp_path: [f"--config={SMOKE}", *flags]


def my_config(body):
    return lambda tmp_path: [f"--config={config_file(tmp_path, body)}:smoke"]


def says(*needles):
    return lambda tmp_path: list(needles)


CASES = [
    Case("config_file_missing", lambda t: [f"--config={t / 'nope.py'}:smoke"],
         lambda t: [f"no config file {t / 'nope.py'}", "experiments/configs/mnist_simple_cnn.py"]),
    Case("config_file_raises", my_config("raise ValueError('no such recipe')"),
         lambda t: [f"--config={t / 'my_config.py'}:smoke: cannot load it (ValueError: no such recipe)"]),
    Case("unknown_config_field", smoke("--config.training.nope=3"),
         says("--config.training.nope=3", "no field training.nope", "training has:", "batch_size", "steps")),
    Case("misspelled_config_group", smoke("--config.trainig.steps=3"), says("no field trainig.steps", "did you mean training.steps?")),
    Case("model_override_from_command_line", smoke("--config.model.overrides.drop_rate=0.5"),
         says("no field model.overrides.drop_rate", "set them in a config file")),
    Case("int_field_given_text", smoke("--config.training.batch_size=abc"),
         says("--config.training.batch_size=abc", "takes an int", "the config's 8")),
    Case("float_field_given_text", smoke("--config.optimizer.learning_rate=fast"),
         says("--config.optimizer.learning_rate=fast", "takes a float")),
    Case("unexpected_argument", smoke("steps=100"), says("unexpected arguments: steps=100", "--config.training.steps=100")),
    Case("unknown_model", smoke("--config.model.name=resnet_nope"), says("unknown model 'resnet_nope'", "Known models:", "resnet18")),
    Case("unknown_dataset", smoke("--config.data.name=imagenot"), says("unknown dataset 'imagenot'", "mnist", "cifar10", "tfds:")),
    Case("unknown_optimizer", smoke("--config.optimizer.name=adamax"), says("optimizer.name='adamax'", "sgd, adam, adamw, lamb, lars")),
    Case("unknown_schedule", smoke("--config.optimizer.schedule=linear"), says("optimizer.schedule='linear'", "warmup_cosine")),
    Case("unknown_parallel_mode", smoke("--config.parallel=ddp"), says("parallel='ddp'", "single, pmap, sharded")),
    Case("batch_devices_cannot_split", smoke("--config.parallel=sharded", "--config.training.batch_size=12"),
         says("training.batch_size=12", "8 devices", "multiple of 8"), env=lambda t: {"JAX_NUM_CPU_DEVICES": 8}),
    Case("eval_batch_devices_cannot_split", smoke("--config.parallel=pmap", "--config.training.eval_batch_size=12"),
         says("training.eval_batch_size=12", "8 devices", "multiple of 8"), env=lambda t: {"JAX_NUM_CPU_DEVICES": 8}),
    Case("batch_larger_than_data", smoke("--config.training.batch_size=128"),
         says("training.batch_size=128", "64 training examples", "at most 64")),
    Case("unknown_dtype", smoke("--config.training.dtype=float8"), says("training.dtype='float8'", "float32, bfloat16, float16")),
    Case("unknown_augmentation", smoke("--config.data.augment=crop(4)|flop"), says("unknown augmentation 'flop'", "flip")),
    Case("bad_augmentation_argument", smoke("--config.data.augment=crop(x)"), says("crop: padding='x'", "non-negative integer")),
    Case("unknown_normalization", smoke("--config.data.normalize=imagenet"), says("data.normalize='imagenet'", "one of dataset, none")),
    Case("unknown_split", smoke("--config.data.train_split=validation"), says("bad split 'validation'", "splits: test, train")),
    Case("negative_steps", smoke("--config.training.steps=-3"), says("training.steps=-3", "an integer >= 0")),
    Case("zero_epochs", smoke("--config.training.steps=0", "--config.training.epochs=0"), says("training.epochs=0.0", "training.epochs > 0")),
    # Values out of range, refused before anything runs.
    Case("negative_learning_rate", smoke("--config.optimizer.learning_rate=-0.01"),
         says("optimizer.learning_rate=-0.01", "a finite number in (0, inf)")),
    Case("nan_learning_rate", smoke("--config.optimizer.learning_rate=nan"), says("optimizer.learning_rate=nan", "finite")),
    Case("infinite_learning_rate", smoke("--config.optimizer.learning_rate=inf"), says("optimizer.learning_rate=inf", "finite")),
    Case("momentum_above_one", smoke("--config.optimizer.momentum=2"), says("optimizer.momentum=2.0", "[0, 1)")),
    Case("label_smoothing_above_one", smoke("--config.training.label_smoothing=1.5"),
         says("training.label_smoothing=1.5", "[0, 1)")),
    Case("ema_decay_above_one", smoke("--config.training.ema_decay=1.5"), says("training.ema_decay=1.5", "[0, 1)")),
    Case("zero_accumulation", smoke("--config.optimizer.accumulate_steps=0"), says("optimizer.accumulate_steps=0", ">= 1")),
    Case("negative_workers", smoke("--config.data.workers=-1"), says("data.workers=-1", "an integer >= 0")),
    Case("negative_eval_interval", smoke("--config.training.eval_every_steps=-1"),
         says("training.eval_every_steps=-1", "an integer >= 0")),
    Case("negative_checkpoint_interval", smoke("--config.training.checkpoint_every_steps=-5"),
         says("training.checkpoint_every_steps=-5", "an integer >= 0")),
    Case("zero_checkpoints_kept", smoke("--config.training.keep_checkpoints=0"), says("training.keep_checkpoints=0", ">= 1")),
    Case("best_metric_typo", smoke("--config.training.best_metric=test_acc"),
         says("training.best_metric='test_acc'", "test_top1, test_top5, test_loss")),
    Case("ema_best_metric_without_ema", smoke("--config.training.best_metric=test_top1_ema"),
         says("training.best_metric='test_top1_ema'", "test_top1")),
    Case("crop_larger_than_images", smoke("--config.data.augment=crop(100000)"),
         says("crop(100000) on 28x28 images", "below 28")),
    Case("cutout_larger_than_images", smoke("--config.data.augment=cutout(1000)"), says("cutout(1000)", "below 28")),
    Case("empty_split", smoke("--config.data.train_split=train[50%:10%]"),
         says("data.train_split='train[50%:10%]' selects no examples")),
    Case("empty_workdir", lambda t: [f"--config={SMOKE}", "--workdir="], says("--workdir='' names no folder")),
    Case("input_too_small_for_the_model", smoke("--config.model.name=vgg11"),
         says("model 'vgg11' needs inputs of at least 32x32", "synthetic images are 28x28x1")),
    Case("inception_on_mnist_sized_images", smoke("--config.model.name=inception_v3"),
         says("model 'inception_v3' needs inputs of at least 75x75")),
    Case("model_override_unknown_field", my_config("config.model.overrides.depth = 3"),
         says("model 'simple_cnn' has no field 'depth'", "its fields: num_classes, widths, hidden, drop_rate")),
    Case("model_override_wrong_type", my_config("config.model.overrides.hidden = 'wide'"),
         says("hidden='wide' is a str", "expected an int like its default 128")),
    Case("model_override_num_classes", my_config("config.model.overrides.num_classes = 5"),
         says("model.overrides.num_classes=5", "comes from the dataset (10 classes)")),
    # Transfer learning (docs/transfer.md).
    Case("init_from_missing", smoke("--config.model.init_from=nope.safetensors"),
         says("model.init_from='nope.safetensors' does not exist", "a weights file (.safetensors, .pth, .pt)",
              "a finished run's workdir")),
    Case("init_from_weights_without_a_twin", lambda t: [f"--config={SMOKE}", f"--config.model.init_from={weights_file(t)}"],
         says("model 'simple_cnn' has no torchvision or timm twin", "give a finished run's workdir")),
    Case("freeze_matching_nothing", smoke("--config.model.freeze=('^stem/',)"),
         says("model.freeze: '^stem/' matches no parameter of simple_cnn", "named like conv1/conv/bias")),
    Case("zero_backbone_lr_scale", smoke("--config.optimizer.backbone_lr_scale=0"),
         says("optimizer.backbone_lr_scale=0.0", "a finite number in (0, inf)")),
    Case("more_labels_per_class_than_the_split_has", smoke("--config.data.train_per_class=100"),
         says("data.train_per_class=100: class", "expected at most")),
    Case("missing_data_file", lambda t: offline_mnist(t),
         lambda t: [f"missing {IMAGES} in {t / 'data' / 'mnist'}/", f"http://yann.lecun.com/exdb/mnist/{IMAGES}"]),
    Case("truncated_data_file", lambda t: offline_mnist(t, truncated_gzip),
         lambda t: [str(t / "data" / "mnist" / IMAGES), "has 100 bytes, expected 9,912,422", "truncated", "download it again"]),
    Case("corrupt_data_file", lambda t: offline_mnist(t, right_size_wrong_bytes),
         lambda t: [str(t / "data" / "mnist" / IMAGES), "expected 440fcabf73cc546fa21475e81ea37026", "corrupt"]),
    Case("process_id_out_of_range", smoke("--config.distributed=True"), says("JAX_PROCESS_ID=2 must be in [0, JAX_NUM_PROCESSES=2)"),
         env=lambda t: {"JAX_COORDINATOR_ADDRESS": "127.0.0.1:1", "JAX_NUM_PROCESSES": 2, "JAX_PROCESS_ID": 2}),
    Case("distributed_without_a_cluster", smoke("--config.distributed=True"), says("no cluster was found", "JAX_COORDINATOR_ADDRESS")),
    Case("more_processes_requested_than_started", smoke("--config.distributed=True", "--config.distributed_timeout_seconds=5"),
         says("could not join the distributed run within 5s", "2 processes", "start every process"),
         env=lambda t: {"JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{free_port()}", "JAX_NUM_PROCESSES": 2, "JAX_PROCESS_ID": 0},
         max_seconds=60),  # JAX's own abort (a C++ stack trace) would come after 65 s
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_one_clear_line_and_changes_nothing(case, shared, tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    for name, text in SENTINELS.items():  # an earlier run's files, which must survive untouched
        (workdir / name).write_text(text)
    before = snapshot(workdir)
    started = time.monotonic()
    result = run_cli(workdir, case.args(tmp_path), env_for(shared, tmp_path, **case.env(tmp_path)), timeout=120)
    assert_one_clear_line(result, *case.needles(tmp_path))
    assert case.max_seconds is None or time.monotonic() - started < case.max_seconds
    assert snapshot(workdir) == before
    assert checkpoint_steps(workdir) == []


# --- workdirs that cannot be used ---------------------------------------------------------------------


def test_workdir_that_is_a_file(shared, tmp_path):
    target = tmp_path / "run"
    target.write_text("not a folder\n")
    assert_one_clear_line(run_cli(target, [f"--config={SMOKE}"], env_for(shared, tmp_path)), f"workdir {target} is a file", "another --workdir")
    assert target.read_text() == "not a folder\n"


def test_workdir_under_a_file(shared, tmp_path):
    (tmp_path / "file").write_text("x")
    workdir = tmp_path / "file" / "run"
    assert_one_clear_line(run_cli(workdir, [f"--config={SMOKE}"], env_for(shared, tmp_path)), f"workdir {workdir} cannot be created", "Not a directory")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_workdir_in_a_read_only_folder(shared, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        result = run_cli(locked / "run", [f"--config={SMOKE}"], env_for(shared, tmp_path))
        assert_one_clear_line(result, f"workdir {locked / 'run'}", "choose a folder you can write to")
    finally:
        locked.chmod(0o755)


# --- cases that need a trained workdir ------------------------------------------------------------------

TRAINED_FLAGS = [f"--config={SMOKE}", "--config.training.keep_checkpoints=1", "--config.training.best_metric="]


@pytest.fixture(scope="module")
def trained(shared, tmp_path_factory):
    """A finished 6-step smoke run that kept only its last checkpoint (step 6): no earlier one to fall back on."""
    workdir = tmp_path_factory.mktemp("trained") / "run"
    finished_run(workdir, TRAINED_FLAGS, env_for(shared, workdir.parent))
    assert checkpoint_steps(workdir) == [6]
    return workdir


def test_another_experiments_checkpoints_are_refused(trained, shared, tmp_path):
    workdir = copy_of(trained, tmp_path)
    before = snapshot(workdir)
    result = run_cli(workdir, [*TRAINED_FLAGS, "--config.model.name=lenet5"], env_for(shared, tmp_path))
    assert_one_clear_line(result, f"workdir {workdir} holds another experiment", "model.name: 'simple_cnn' -> 'lenet5'",
                          "--force")
    assert snapshot(workdir) == before


def overwrite_with_garbage(folder: pathlib.Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            size = path.stat().st_size
            path.write_bytes((b"\x00garbage" * (size // 8 + 1))[:size])


@pytest.mark.parametrize("part", ["state", "every file"])
def test_corrupt_checkpoint_with_no_earlier_one_is_an_error_not_a_fresh_start(part, trained, shared, tmp_path):
    workdir = copy_of(trained, tmp_path)
    (workdir / "results.json").unlink()  # so the run does not just report the finished results
    overwrite_with_garbage(workdir / "checkpoints" / "6" / ("state" if part == "state" else ""))
    before = snapshot(workdir)
    result = run_cli(workdir, TRAINED_FLAGS, env_for(shared, tmp_path))
    assert_one_clear_line(result, f"no checkpoint in {workdir / 'checkpoints'} can be restored", "step 6", "--force")
    assert "skipping checkpoint at step 6" in result.stderr or "unreadable metadata" in result.stderr
    assert snapshot(workdir) == before  # not trained over from scratch


def test_a_diverging_run_stops_without_a_checkpoint(shared, tmp_path):
    workdir = tmp_path / "run"
    result = run_cli(workdir, [f"--config={SMOKE}", "--config.optimizer.name=sgd", "--config.optimizer.learning_rate=1e30"],
                     env_for(shared, tmp_path))
    assert_one_clear_line(result, "non-finite loss at step 2", "the last checkpoint is kept", "optimizer.learning_rate")
    assert checkpoint_steps(workdir) == []  # no state of the non-finite step was written
    assert not (workdir / "results.json").exists()
