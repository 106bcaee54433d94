"""Transfer learning through the training loop: a run starts from a torchvision checkpoint or from a finished
run, re-initialises a head of another class count, keeps frozen layers (and their BatchNorm statistics) as
loaded, probes linearly, resumes without reloading, and trains on a few labels per class."""

import hashlib
import json
import logging
import shutil

import numpy as np
import pytest

from cnn.train import build, transfer, validate
from cnn.train.loop import train_and_evaluate
from experiments.configs import cifar10_resnet20, common

SMALL_RESNET = dict(stage_sizes=(1, 1, 1), widths=(4, 8, 8), stem_width=4, zero_init_last=False)


@pytest.fixture(autouse=True)
def prepared(tmp_path, monkeypatch):
    monkeypatch.setenv("CNN_PREPARED_DIR", str(tmp_path / "prepared"))


def small_run_config(num_classes=10, steps=4):
    """A ResNet-8 of 4-8-8 channels (BatchNorm in every unit) on synthetic 16x16 images."""
    config = cifar10_resnet20.get_config("smoke")
    common.smoke(config, image_shape=(16, 16, 3), num_classes=num_classes, overrides=SMALL_RESNET)
    config.data.augment = ""
    config.training.steps = steps
    config.training.checkpoint_every_steps = config.training.eval_every_steps = steps
    return config


def newest(saved_state, workdir):
    steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    return saved_state(workdir, steps[-1])


def flat(tree):
    return {k: np.asarray(v) for k, v in transfer.leaf_paths(tree).items()}


def test_linear_probe_from_a_finished_run_with_other_classes_then_resume_without_it(tmp_path, saved_state, caplog,
                                                                                   monkeypatch):
    source = tmp_path / "source"
    train_and_evaluate(small_run_config(num_classes=10), source)
    pretrained = newest(saved_state, source)

    config = small_run_config(num_classes=4, steps=3)
    config.model.init_from = str(source)
    config.model.linear_probe = True
    probe = tmp_path / "probe"
    with caplog.at_level(logging.WARNING, logger="cnn.train.loop"):
        train_and_evaluate(config, probe)
    assert (f"model.init_from={str(source)!r}: 35 tensors loaded, 0 adapted, 2 re-initialised (params/head/fc/bias, "
            f"params/head/fc/kernel: head: the checkpoint has 10 classes, the model 4)") in caplog.text
    record = json.loads((probe / "init_from.json").read_text())
    assert record["kind"] == "run" and record["step"] == 4 and sorted(record["reinitialised"]) == ["params/head/fc/bias",
                                                                                                   "params/head/fc/kernel"]
    trained = newest(saved_state, probe)
    before, after = flat({"params": pretrained["params"], "batch_stats": pretrained["batch_stats"]}), flat(
        {"params": trained["params"], "batch_stats": trained["batch_stats"]})
    for name, value in after.items():  # every tensor but the head's is the source run's, statistics included
        if name.startswith("params/head/"):
            continue
        np.testing.assert_array_equal(value, before[name], err_msg=name)
    assert after["params/head/fc/kernel"].shape == (8, 4)

    # Resuming (the run made longer) takes the run's own checkpoint and never loads the source again.
    monkeypatch.setattr(transfer, "load_initial", lambda *args: pytest.fail("a resumed run loaded model.init_from"))
    config.training.steps = 5
    results = train_and_evaluate(config, probe)
    assert results["resumed_from_step"] == 3 and results["steps"] == 5
    # A source whose checkpoints are gone is refused before anything runs.
    shutil.rmtree(source / "checkpoints")
    with pytest.raises(ValueError, match=f"^model.init_from={str(source)!r} holds no checkpoint"):
        validate.check(config)


def test_resnet18_from_a_torchvision_checkpoint_on_an_image_folder(tmp_path, twins, saved_state, caplog):
    """The stem kernel is the file's tensor transposed after training (frozen), the frozen BatchNorm layers
    kept the file's statistics, the rest trained at a tenth of the head's rate from the file's values."""
    import safetensors.numpy
    import safetensors.torch
    from PIL import Image

    twin = twins.torchvision.models.resnet18()
    with twins.torch.no_grad():  # running statistics that differ from a fresh BatchNorm's
        for module in twin.modules():
            if isinstance(module, twins.torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 1.5)
    weights = tmp_path / "resnet18.safetensors"
    safetensors.torch.save_file(twin.state_dict(), str(weights))
    state = safetensors.numpy.load_file(str(weights))
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("test", 2)):
        for label in ("cat", "dog"):
            (tmp_path / "folder" / split / label).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (36, 40, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / "folder" / split / label / f"{i}.png")

    config = common.base(model="resnet18", dataset="image_folder", batch_size=4, epochs=1, learning_rate=0.05)
    config.data.options.folder = str(tmp_path / "folder")
    config.data.options.image_size = (32, 32)
    common.smoke_training(config.training, steps=2, every=2, log_every=1, batch_size=4, eval_batch_size=4)
    config.model.init_from = str(weights)
    config.model.freeze = ("^stem/", "^stage1_")
    config.optimizer.backbone_lr_scale = 0.1
    with caplog.at_level(logging.WARNING, logger="cnn.train.loop"):
        train_and_evaluate(config, tmp_path / "run")
    assert ("100 tensors loaded, 0 adapted, 2 re-initialised (params/head/fc/bias, params/head/fc/kernel: head: the "
            "checkpoint has 1000 classes, the model 2)") in caplog.text
    record = json.loads((tmp_path / "run" / "init_from.json").read_text())
    assert record["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest() and record["bytes"] == weights.stat().st_size

    trained = saved_state(tmp_path / "run", 2)
    params, stats = trained["params"], trained["batch_stats"]
    np.testing.assert_array_equal(params["stem"]["conv"]["kernel"], state["conv1.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(params["stage1_block2"]["conv2"]["norm"]["scale"], state["layer1.1.bn2.weight"])
    for ours, theirs in ((stats["stem"]["norm"], "bn1"), (stats["stage1_block1"]["conv1"]["norm"], "layer1.0.bn1")):
        np.testing.assert_array_equal(ours["mean"], state[f"{theirs}.running_mean"])
        np.testing.assert_array_equal(ours["var"], state[f"{theirs}.running_var"])
    # Trained: from the file's values, the statistics moved; the head is new (2 classes).
    kernel = params["stage2_block1"]["conv1"]["conv"]["kernel"]
    loaded = state["layer2.0.conv1.weight"].transpose(2, 3, 1, 0)
    assert not np.array_equal(kernel, loaded) and np.corrcoef(kernel.ravel(), loaded.ravel())[0, 1] > 0.9
    assert not np.allclose(stats["stage2_block1"]["conv1"]["norm"]["mean"], state["layer2.0.bn1.running_mean"])
    assert params["head"]["fc"]["kernel"].shape == (512, 2)


def test_reinit_head_keeps_a_fresh_head_when_the_classes_agree(tmp_path):
    source = tmp_path / "source"
    train_and_evaluate(small_run_config(num_classes=10, steps=2), source)
    config = small_run_config(num_classes=10)
    config.model.init_from = str(source)
    config.model.reinit_head = True
    experiment = build.build(config)
    initial = transfer.load_initial(config, experiment.model, experiment.train_source.image_shape, experiment.head)
    assert initial.reinitialised == {"params/head/fc/bias": "model.reinit_head", "params/head/fc/kernel": "model.reinit_head"}
    config.model.reinit_head = False
    assert not transfer.load_initial(config, experiment.model, experiment.train_source.image_shape, experiment.head).reinitialised


def test_a_few_labels_per_class(tmp_path):
    config = small_run_config()
    config.data.train_per_class = 3
    experiment = build.build(config)
    labels = [experiment.train_source[i]["label"] for i in range(len(experiment.train_source))]
    assert np.bincount(labels, minlength=10).tolist() == [3] * 10
    config.data.train_per_class = 100
    with pytest.raises(ValueError, match=r"^data.train_per_class=100: class \d has only \d+ examples"):
        build.build(config)


def test_both_feeds_read_the_same_few_labels_per_class():
    """The grain feed and the split held on the device serve the same examples of the subset, step by step:
    30 of the 64 (3 a class), 3 steps of 8 an epoch, no example twice in an epoch, none outside the subset."""
    import dataclasses

    from cnn.data import in_memory
    from cnn.train.feed import DeviceFeed, GrainFeed, make_feed

    config = small_run_config()
    config.data.train_per_class = 3
    config.data.workers = 0
    experiment = build.build(config)
    subset = experiment.train_source
    whole = in_memory(subset.source)
    kept = in_memory(subset)
    assert len(kept) == 30 and np.bincount(kept.labels, minlength=10).tolist() == [3] * 10
    np.testing.assert_array_equal(kept.images, whole.images[subset.indices])

    device = make_feed(dataclasses.replace(experiment, on_device=True))
    grain = make_feed(dataclasses.replace(experiment, on_device=False))
    assert isinstance(device, DeviceFeed) and isinstance(grain, GrainFeed)
    indices = device.next(6)["index"]  # two epochs
    batches = grain.next(6)
    held = {key: np.asarray(value) for key, value in device.data.items()}
    np.testing.assert_array_equal(held["image"], kept.images)
    np.testing.assert_array_equal(batches["image"], held["image"][indices])
    np.testing.assert_array_equal(batches["label"], held["label"][indices])
    for epoch in indices.reshape(2, -1):
        assert len(set(epoch.tolist())) == 24  # 3 batches of 8 distinct examples of the 30


def test_a_weights_file_that_does_not_fit_is_refused_before_anything_is_written(tmp_path):
    import safetensors.numpy

    weights = tmp_path / "resnet18.safetensors"
    safetensors.numpy.save_file({"conv1.weight": np.zeros((64, 3, 7, 7), np.float32)}, str(weights))
    config = small_run_config()
    config.model.name = "resnet18"
    config.model.overrides = {}
    config.data.options.image_shape = (32, 32, 3)
    config.model.init_from = str(weights)
    with pytest.raises(ValueError, match=r"^model.init_from='.*resnet18.safetensors' does not fit resnet18 \(99 "
                                         r"problem\(s\)\): missing key '.*', expected shape .*; and 93 more$"):
        train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "run" / "config.json").exists()


@pytest.mark.parametrize("field, value, message", [
    ("model.init_from", "nope.safetensors", "model.init_from='nope.safetensors' does not exist; expected a weights file "
                                            "(.safetensors, .pth, .pt) or a finished run's workdir"),
    ("model.init_from", "README.md", "model.init_from='README.md' is not a weights file; expected a .safetensors, .pth, "
                                     ".pt file of the model's torchvision/timm twin, or a finished run's workdir"),
    ("model.init_from", "docs", "model.init_from='docs' holds no finished run (no config.json and results.json); give the "
                                "workdir of a run that finished, or a weights file"),
    ("model.reinit_head", True, "model.reinit_head=True re-initialises the head of loaded weights, but model.init_from is "
                                "''; set model.init_from or model.reinit_head=False"),
    ("model.freeze", ("stem[",), "model.freeze: 'stem[' is not a regular expression (unterminated character set at "
                                 "position 4); expected a tuple of regular expressions, e.g. ('^stem/', 'stage1_')"),
    ("optimizer.backbone_lr_scale", 0.0, "optimizer.backbone_lr_scale=0.0; expected a finite number in (0, inf)"),
    ("data.train_per_class", -1, "data.train_per_class=-1; expected an integer >= 0"),
])
def test_every_transfer_field_is_checked_before_anything_runs(field, value, message):
    config = small_run_config()
    group, name = field.split(".")
    config[group][name] = value
    with pytest.raises(ValueError) as error:
        validate.check(config)
    assert str(error.value) == message


def test_a_weights_file_needs_a_twin_and_a_run_the_same_model(tmp_path):
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"")
    config = small_run_config()
    config.model.init_from = str(weights)
    with pytest.raises(ValueError, match="model 'resnet20_cifar' has no torchvision or timm twin, so a weights file cannot "
                                         "fill it; give a finished run's workdir"):
        validate.check(config)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps({"model": {"name": "lenet5"}}))
    (tmp_path / "run" / "results.json").write_text("{}")
    config.model.init_from = str(tmp_path / "run")
    with pytest.raises(ValueError, match="holds a run of 'lenet5', not 'resnet20_cifar'; start from a run of the same model"):
        validate.check(config)


def test_freezing_everything_is_refused():
    config = small_run_config()
    config.model.freeze = (".",)
    with pytest.raises(ValueError, match=r"^model.freeze=\('.',\) \(linear_probe=False\) freezes every parameter of "
                                         r"resnet20_cifar; nothing would train$"):
        build.build(config)


def test_a_freeze_pattern_that_matches_nothing_is_refused():
    config = small_run_config()
    config.model.freeze = ("^stem/", "^layer1\\.")
    with pytest.raises(ValueError, match=r"^model.freeze: '\^layer1\\\\.' matches no parameter of resnet20_cifar; its "
                                         r"parameters are named like head/fc/bias, head/fc/kernel, "):
        build.build(config)


def test_a_checkpoints_auxiliary_heads_are_skipped_for_a_model_without_them(tmp_path):
    """torchvision's GoogLeNet files hold the auxiliary heads; our googlenet is built without them by default."""
    import jax

    import cnn.models

    with_aux = cnn.models.create("googlenet", num_classes=1000, aux_logits=True)
    shapes = transfer._variable_shapes(with_aux, (64, 64, 3))
    variables = jax.tree.map(lambda s: np.full(s.shape, 0.5, np.float32), shapes)
    cnn.models.save_torch_weights("googlenet", variables, tmp_path / "googlenet.safetensors", aux_logits=True)
    config = common.base(model="googlenet", dataset="synthetic", batch_size=2, epochs=1, learning_rate=0.1)
    config.model.init_from = str(tmp_path / "googlenet.safetensors")
    model = cnn.models.create("googlenet", num_classes=10)
    initial = transfer.load_initial(config, model, (64, 64, 3), transfer.head_paths(model, (64, 64, 3)))
    skipped = initial.record["skipped_variables"]
    assert skipped and all(name.split("/")[1] in ("aux1", "aux2") for name in skipped)
    assert initial.summary.endswith(f"{len(skipped)} skipped ({', '.join(skipped)}: an auxiliary head: the model is built "
                                    f"without them (aux_logits=False))")
    assert sorted(initial.reinitialised) == ["params/head/fc/bias", "params/head/fc/kernel"]


def test_grey_images_from_rgb_weights(tmp_path):
    """A 1-channel dataset from an RGB checkpoint: the first conv summed over its input channels (timm's rule)."""
    import jax

    import cnn.models

    rgb = cnn.models.create("resnet18", num_classes=1000)
    shapes = transfer._variable_shapes(rgb, (32, 32, 3))
    rng = np.random.default_rng(0)
    variables = jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(np.float32), shapes)
    cnn.models.save_torch_weights("resnet18", variables, tmp_path / "resnet18.safetensors")
    config = common.base(model="resnet18", dataset="mnist", batch_size=2, epochs=1, learning_rate=0.1)
    config.model.init_from = str(tmp_path / "resnet18.safetensors")
    grey = cnn.models.create("resnet18", num_classes=10)
    initial = transfer.load_initial(config, grey, (32, 32, 1), transfer.head_paths(grey, (32, 32, 1)))
    assert "1 adapted (conv1.weight: 3 -> 1 input channels (summed))" in initial.summary
    kernel = initial.variables["params"]["stem"]["conv"]["kernel"]
    np.testing.assert_allclose(kernel, variables["params"]["stem"]["conv"]["kernel"].sum(axis=2, keepdims=True), rtol=1e-6)
