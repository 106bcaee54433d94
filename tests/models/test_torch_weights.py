"""``load_torch_weights``'s contract, checked against torchvision and timm: strict errors that name every key
and both shapes at once, ``strict=False``'s report, a re-initialised head, the sources it reads (and refuses),
timm's input-conv and position-embedding adaptation, torchvision's ``transform_input``, ``insert_variables``.

A narrow torchvision ResNet (one basic block per stage, 10 classes) is the twin wherever any will do.
"""

import sys

import jax
import numpy as np
import pytest
from flax import linen as nn

import cnn.models
import twin_reference as ref  # tests/helpers, on pytest's pythonpath
from cnn.layers.inception import transform_input
from cnn.models.weight_adapt import adapt_input_conv, resample_pos_embed

SMALL = {"stage_sizes": (1, 1, 1, 1)}


@pytest.fixture(scope="module")
def small_twin(twins):
    models = twins.torchvision.models
    twins.torch.manual_seed(0)
    return ref.randomise(twins, models.ResNet(models.resnet.BasicBlock, [1, 1, 1, 1], num_classes=10), seed=0)


@pytest.fixture(scope="module")
def loaded(small_twin):
    """The small twin loaded from a mapping of its tensors."""
    return cnn.models.load_torch_weights("resnet18", small_twin.state_dict(), **SMALL)


def _logits(twins, twin, x):
    with twins.torch.no_grad():
        return twin.eval()(ref.nchw(twins, x)).numpy()


def test_a_mapping_of_tensors_loads_and_reports_every_key(twins, small_twin, loaded):
    model, variables = loaded
    report = loaded.report
    state = small_twin.state_dict()
    assert report.num_classes == report.checkpoint_classes == 10 and model.num_classes == 10
    assert set(report.loaded) == {k for k in state if not k.endswith("num_batches_tracked")}
    assert set(report.dropped) == {k for k in state if k.endswith("num_batches_tracked")}
    assert not report.skipped and not report.reinitialised and not report.adapted
    np.testing.assert_array_equal(variables["params"]["stem"]["conv"]["kernel"],
                                  state["conv1.weight"].numpy().transpose(2, 3, 1, 0))  # OIHW -> HWIO
    np.testing.assert_array_equal(variables["params"]["head"]["fc"]["kernel"], state["fc.weight"].numpy().T)
    assert "resnet18 from a mapping: 62 tensors loaded, 0 adapted, 0 re-initialised, 0 skipped, 12 num_batches_tracked dropped" in str(report)


def _broken(state):
    state = dict(state)
    state["layer1.0.conv1.weight"] = state["layer1.0.conv1.weight"][..., :1]  # (64, 64, 3, 1)
    del state["layer2.0.bn1.running_var"]
    state["layer9.0.conv1.weight"] = state["conv1.weight"]
    state["extra.num_batches_tracked"] = state["bn1.num_batches_tracked"]  # only BatchNorm's own counters drop
    return state


def test_strict_loading_names_every_key_and_both_shapes_at_once(small_twin):
    with pytest.raises(ValueError) as error:
        cnn.models.load_torch_weights("resnet18", _broken(small_twin.state_dict()), **SMALL)
    message = str(error.value)
    assert message.startswith("resnet18 from a mapping: 4 problem(s)")
    assert ("key 'layer1.0.conv1.weight' has shape (64, 64, 3, 1), expected (64, 64, 3, 3) "
            "(ours: params/stage1_block1/conv1/conv/kernel (3, 3, 64, 64))") in message
    assert "missing key 'layer2.0.bn1.running_var', expected shape (128,)" in message
    assert "unexpected key 'layer9.0.conv1.weight' of shape (64, 3, 7, 7)" in message
    assert "unexpected key 'extra.num_batches_tracked'" in message


def test_strict_false_skips_and_reinitialises_and_says_so(small_twin, loaded):
    _, variables = cnn.models.load_torch_weights("resnet18", _broken(small_twin.state_dict()), strict=False, **SMALL)
    report = cnn.models.load_torch_weights("resnet18", _broken(small_twin.state_dict()), strict=False, **SMALL).report
    assert set(report.skipped) == {"layer1.0.conv1.weight", "layer9.0.conv1.weight", "extra.num_batches_tracked"}
    assert set(report.reinitialised) == {"params/stage1_block1/conv1/conv/kernel", "batch_stats/stage2_block1/conv1/norm/var"}
    assert "is not in the checkpoint" in report.reinitialised["batch_stats/stage2_block1/conv1/norm/var"]
    kept = variables["params"]["stage1_block1"]["conv1"]["conv"]["kernel"]
    assert kept.shape == (3, 3, 64, 64) and not np.array_equal(kept, loaded[1]["params"]["stage1_block1"]["conv1"]["conv"]["kernel"])
    np.testing.assert_array_equal(variables["batch_stats"]["stage2_block1"]["conv1"]["norm"]["var"], np.ones(128))
    np.testing.assert_array_equal(variables["params"]["head"]["fc"]["kernel"], loaded[1]["params"]["head"]["fc"]["kernel"])


def test_another_class_count_reinitialises_the_head_and_reports_it(small_twin, loaded):
    new = cnn.models.load_torch_weights("resnet18", small_twin.state_dict(), num_classes=7, **SMALL)
    again = cnn.models.load_torch_weights("resnet18", small_twin.state_dict(), num_classes=7, key=jax.random.key(1), **SMALL)
    model, variables = new
    assert model.num_classes == 7 and variables["params"]["head"]["fc"]["kernel"].shape == (512, 7)
    assert set(new.report.reinitialised) == {"params/head/fc/kernel", "params/head/fc/bias"}
    assert new.report.reinitialised["params/head/fc/kernel"] == "head: the checkpoint has 10 classes, the model 7"
    assert set(new.report.skipped) == {"fc.weight", "fc.bias"}
    kernel = np.asarray(variables["params"]["head"]["fc"]["kernel"])
    assert 0.8 < kernel.std() * np.sqrt(512) < 1.2  # a fresh LeCun-normal draw, from `key`
    assert not np.array_equal(kernel, again[1]["params"]["head"]["fc"]["kernel"])
    trunk = lambda v: {k: t for k, t in v["params"].items() if k != "head"}  # noqa: E731
    jax.tree_util.tree_map(np.testing.assert_array_equal, trunk(variables), trunk(loaded[1]))

    features_only = cnn.models.load_torch_weights("resnet18", small_twin.state_dict(), num_classes=0, **SMALL)
    assert "head" not in features_only[1]["params"] and not features_only.report.reinitialised
    assert set(features_only.report.skipped) == {"fc.weight", "fc.bias"}


def test_features_only_drops_the_auxiliary_heads(twins):
    state = twins.torchvision.models.googlenet(aux_logits=True, init_weights=False).state_dict()
    model, variables = loaded = cnn.models.load_torch_weights("googlenet", state, num_classes=0)
    assert model.aux_logits is False and not {"aux1", "aux2", "head"} & set(variables["params"])
    assert {"fc.weight", "aux1.fc1.weight", "aux2.fc2.bias", "aux1.conv.bn.running_var"} <= set(loaded.report.skipped)
    assert not loaded.report.reinitialised


def test_files_pth_and_safetensors_and_what_is_refused(twins, small_twin, loaded, tmp_path, monkeypatch):
    safetensors_path, pth_path = ref.save(twins, small_twin, str(tmp_path))
    wrapped = tmp_path / "checkpoint.pth"
    twins.torch.save({"model": small_twin.state_dict(), "epoch": 3}, wrapped)  # a training checkpoint
    for source in (safetensors_path, pth_path, wrapped):
        _, variables = cnn.models.load_torch_weights("resnet18", source, **SMALL)
        jax.tree_util.tree_map(np.testing.assert_array_equal, variables, loaded[1])
    assert cnn.models.load_torch_weights("resnet18", wrapped, **SMALL).report.source == f"{str(wrapped)!r}['model']"

    (tmp_path / "weights.npz").write_bytes(b"")
    with pytest.raises(ValueError, match=r"weights.npz': expected a .safetensors, .pth or .pt file"):
        cnn.models.load_torch_weights("resnet18", tmp_path / "weights.npz")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        cnn.models.load_torch_weights("resnet18", tmp_path / "absent.safetensors")
    twins.torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="holds a list, not a state dict"):
        cnn.models.load_torch_weights("resnet18", tmp_path / "list.pth")
    monkeypatch.setitem(sys.modules, "torch", None)  # as if PyTorch were not installed
    with pytest.raises(ImportError, match=r"needs PyTorch \(pip install torch\); or pass a .safetensors file"):
        cnn.models.load_torch_weights("resnet18", pth_path, **SMALL)
    _, variables = cnn.models.load_torch_weights("resnet18", safetensors_path, **SMALL)  # no PyTorch needed


def test_save_writes_only_what_the_twin_has(loaded, tmp_path):
    _, variables = loaded
    with pytest.raises(ValueError, match="writes .safetensors files"):
        cnn.models.save_torch_weights("resnet18", variables, tmp_path / "w.pth", **SMALL)
    extra = {**variables, "params": {**variables["params"], "probe": {"kernel": np.zeros((512, 2))}}}
    with pytest.raises(ValueError, match="variables params/probe/kernel have no counterpart in torchvision's resnet18"):
        cnn.models.save_torch_weights("resnet18", extra, tmp_path / "w.safetensors", **SMALL)
    assert not list(tmp_path.iterdir()), "a refused save leaves no file"


@pytest.mark.parametrize("channels", [1, 2, 5])
def test_first_conv_adapts_to_other_channel_counts_as_timm(twins, small_twin, channels):
    weight = small_twin.state_dict()["conv1.weight"]
    np.testing.assert_allclose(adapt_input_conv(weight.numpy(), channels),
                               twins.timm.models.adapt_input_conv(channels, weight.clone()).numpy(), rtol=1e-6)

    model, variables = (loaded := cnn.models.load_torch_weights("resnet18", small_twin.state_dict(),
                                                                 in_channels=channels, **SMALL))
    assert loaded.report.adapted == {"conv1.weight": "3 -> %d input channels (%s)" % (
        channels, "summed" if channels == 1 else f"repeated and scaled by 3/{channels}")}
    adapted = ref.copy.deepcopy(small_twin)
    adapted.conv1 = twins.torch.nn.Conv2d(channels, 64, 7, 2, 3, bias=False)
    with twins.torch.no_grad():
        adapted.conv1.weight.copy_(twins.timm.models.adapt_input_conv(channels, weight.clone()))
    x = ref.images((2, 40, 40, channels))
    ours = ref.jit(lambda v, inputs: model.apply(v, inputs, train=False))(variables, x)
    ref.assert_equal_outputs(ours, _logits(twins, adapted, x), f"{channels} channels")


@pytest.mark.parametrize("grid, old", [((6, 6), 14), ((20, 20), 14), ((10, 21), 14), ((3, 5), 7)])
@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_position_embedding_resamples_as_timm(twins, grid, old, interpolation):
    pos_embed = ref.images((1, 1 + old * old, 8))
    theirs = twins.timm.layers.resample_abs_pos_embed(twins.torch.from_numpy(pos_embed), list(grid),
                                                      interpolation=interpolation, num_prefix_tokens=1).numpy()
    ours = resample_pos_embed(pos_embed, grid, interpolation=interpolation)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(ours[:, 0], pos_embed[:, 0])  # the class token is kept


def test_vit_loads_at_another_resolution_as_timm_does(twins):
    """A ViT trained at 32 px (4 x 4 patches) applied at 48 px (6 x 6): timm's own checkpoint filter and ours."""
    timm, torch = twins.timm, twins.torch
    shape = dict(patch_size=8, embed_dim=48, depth=1, num_heads=3, num_classes=5)
    torch.manual_seed(0)
    state = ref.randomise(twins, timm.create_model("vit_tiny_patch16_224", img_size=32, **shape), seed=0).state_dict()
    ours = dict(patch_size=8, dim=48, depth=1, heads=3)
    x = ref.images((2, 48, 48, 3))
    apply = None
    for interpolation in ("bicubic", "bilinear"):
        wide = timm.create_model("vit_tiny_patch16_224", img_size=48, **shape)
        wide.load_state_dict(timm.models.vision_transformer.checkpoint_filter_fn(state, wide, interpolation=interpolation))
        loaded = cnn.models.load_torch_weights("vit_tiny_patch16_224", state, image_size=48, interpolation=interpolation,
                                               **ours)
        assert loaded.report.adapted == {"pos_embed": f"16 -> 6x6 patches ({interpolation}), class token kept"}
        model, variables = loaded
        apply = apply or ref.jit(lambda v, inputs: model.apply(v, inputs, train=False))
        ref.assert_equal_outputs(apply(variables, x), _logits(twins, wide, x), f"ViT at 48 px, {interpolation}")


def test_transform_input_is_torchvisions(twins):
    """The re-normalisation against both twins' ``_transform_input`` (the models with the field on are checked
    against their twins in ``test_torch_twins.py``)."""
    models = twins.torchvision.models
    x = ref.images((2, 8, 8, 3))
    for twin in (models.googlenet(transform_input=True, aux_logits=False, init_weights=False),
                 models.inception_v3(transform_input=True, aux_logits=False, init_weights=False)):
        expected = ref.channels_last(twin._transform_input(ref.nchw(twins, x)))
        np.testing.assert_allclose(transform_input(x), expected, rtol=1e-6, atol=1e-6)


def test_mobilenet_v1_with_relu_is_timms_with_relu(twins):
    """Our default MobileNet v1 (ReLU, as the paper) against timm's class built with ReLU (``act_layer="relu"``):
    the loader's ``act=relu6`` is the only difference from timm's ``mobilenetv1_100``."""
    twins.torch.manual_seed(0)
    twin = ref.randomise(twins, twins.timm.create_model("mobilenetv1_100", act_layer="relu", num_classes=10), seed=0)
    model, variables = cnn.models.load_torch_weights("mobilenet_v1", twin.state_dict(), act=nn.relu)
    x = ref.images((2, 40, 40, 3))
    ours = ref.jit(lambda v, inputs: model.apply(v, inputs, train=False))(variables, x)
    ref.assert_equal_outputs(ours, _logits(twins, twin, x), "MobileNet v1 with ReLU")


def test_insert_variables_grafts_a_loaded_model_into_a_larger_tree(loaded):
    _, variables = loaded
    fresh = jax.tree_util.tree_map(np.zeros_like, variables)
    larger = {"params": {"backbone": fresh["params"], "probe": {"kernel": np.ones((512, 3))}},
              "batch_stats": {"backbone": fresh["batch_stats"]}}
    result = cnn.models.insert_variables(larger, variables, at=("backbone",), exclude=["params/head/fc/bias"])
    np.testing.assert_array_equal(result["params"]["backbone"]["stem"]["conv"]["kernel"],
                                  variables["params"]["stem"]["conv"]["kernel"])
    np.testing.assert_array_equal(result["params"]["backbone"]["head"]["fc"]["bias"], np.zeros(10))  # excluded
    np.testing.assert_array_equal(result["params"]["probe"]["kernel"], np.ones((512, 3)))
    np.testing.assert_array_equal(larger["params"]["backbone"]["stem"]["conv"]["kernel"], 0)  # the input is unchanged

    small = {"params": {"backbone": {**fresh["params"], "head": {"fc": {"kernel": np.zeros((512, 3))}}}},
             "batch_stats": {"backbone": fresh["batch_stats"]}}
    with pytest.raises(ValueError, match=r"2 loaded variable\(s\) do not fit:\n  params/backbone/head/fc/bias is not in "
                                         r"the variables\n  params/backbone/head/fc/kernel has shape \(512, 3\), the "
                                         r"loaded value \(512, 10\)"):
        cnn.models.insert_variables(small, variables, at=("backbone",))
