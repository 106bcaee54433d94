"""The real torchvision and timm classes as references for the zoo: build a twin with random weights and
non-trivial BatchNorm statistics, save its state dict, load it through ``cnn.models.load_torch_weights``,
and compare logits, train-mode outputs, updated statistics and feature maps.

The twin runs in float32, as it ships (PyTorch's float64 convolutions, depthwise ones above all, take
seconds where float32 takes milliseconds); measured differences are ~1e-7 of the largest logit in evaluation.
Import through the ``twins`` fixture (tests/conftest.py), which replaces ``torch.library.register_fake``
first: torchvision's wheel registers fake ops that the CPU build of PyTorch rejects.
"""

import copy
import os
import types

import jax
import numpy as np

import cnn.models
from cnn.models.features import stage_table
from cnn.models.torch_weights import torch_state_dict
from compile_options import fast_compile_options  # tests/helpers

# XLA CPU: no backend optimisation and the classic emitters compile 3-8x faster (as tests/models/test_registry.py).
FAST_COMPILE = fast_compile_options()
RELATIVE = 1e-5  # max |ours - twin| / max |twin|, in evaluation
# In training, BatchNorm divides by the standard deviation of a small batch (2 images of a few pixels at the last
# stages): float32 rounding grows with 1/std. Measured up to 4e-5 at 2 x 64 x 64; 5e-6 at 2 x 128 x 128.
TRAIN_RELATIVE = 1e-4


def jit(fn, options=FAST_COMPILE):
    return jax.jit(fn, compiler_options=options)


def import_libraries():
    """``torch``, ``torchvision``, ``timm`` (and torchvision's feature extractor), importable beside a CPU torch."""
    import torch

    torch.library.register_fake = lambda *args, **kwargs: (lambda fn: fn)  # the CPU build rejects the fake ops
    import timm
    import torchvision
    from torchvision.models.feature_extraction import create_feature_extractor

    return types.SimpleNamespace(torch=torch, torchvision=torchvision, timm=timm,
                                 create_feature_extractor=create_feature_extractor)


def randomise(libs, module, seed):
    """Every norm's scale, bias and running statistics, every bias, ViT's tokens and ConvNeXt's layer scale drawn
    at random (the twin's own initialisation leaves them at 1, 0 or tiny), so that a swapped or dropped tensor shows."""
    torch = libs.torch
    generator = torch.Generator().manual_seed(seed)
    uniform = lambda t: torch.rand(t.shape, generator=generator, dtype=t.dtype) + 0.5  # noqa: E731
    normal = lambda t, std: torch.randn(t.shape, generator=generator, dtype=t.dtype) * std  # noqa: E731
    norms = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.LayerNorm)
    with torch.no_grad():
        for name, tensor in module.state_dict(keep_vars=True).items():
            if not tensor.is_floating_point():
                continue
            leaf = name.rsplit(".", 1)[-1]
            owner = module.get_submodule(name.rsplit(".", 1)[0]) if "." in name else module
            if isinstance(owner, norms) and leaf == "weight" or leaf in ("running_var", "layer_scale"):
                tensor.copy_(uniform(tensor))
            elif leaf in ("bias", "running_mean", "cls_token", "pos_embed"):
                tensor.copy_(normal(tensor, 0.1))
    return module.eval()


def save(libs, module, directory, stem="twin"):
    """The twin's state dict as ``stem.safetensors`` and ``stem.pth``; returns both paths."""
    import safetensors.torch

    state = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
    paths = os.path.join(directory, f"{stem}.safetensors"), os.path.join(directory, f"{stem}.pth")
    safetensors.torch.save_file(state, paths[0])
    libs.torch.save(state, paths[1])
    return paths


def nchw(libs, images):
    """``[N, *spatial, C]`` numpy -> a float32 ``[N, C, *spatial]`` tensor."""
    return libs.torch.from_numpy(np.ascontiguousarray(np.moveaxis(images, -1, 1), np.float32))


def channels_last(tensor):
    return np.moveaxis(tensor.detach().numpy(), 1, -1)


def relative_error(ours, reference):
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    assert ours.shape == reference.shape, f"shape {ours.shape} != twin's {reference.shape}"
    scale = np.max(np.abs(reference))
    assert scale > 0, "an all-zero reference cannot show a wrong layer"
    return float(np.max(np.abs(ours - reference)) / scale)


def assert_equal_outputs(ours, reference, what, limit=RELATIVE):
    error = relative_error(ours, reference)
    print(f"{what}: max |ours - twin| / max |twin| = {error:.1e}")
    assert error <= limit, f"{what}: max |ours - twin| / max |twin| = {error:.2e} > {limit}"


def images(shape, seed=1):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def quiet_dropout(libs, module):
    """Train mode with every dropout and stochastic depth off (BatchNorm uses batch statistics)."""
    module.train()
    for sub in module.modules():
        if type(sub).__name__ in ("Dropout", "StochasticDepth", "DropPath"):
            sub.eval()
    return module


RATES = ("drop_rate", "drop_path_rate", "aux_drop_rate", "attention_drop_rate")


def no_dropout_fields(name, **overrides):
    """Our model's dropout and stochastic-depth rates set to 0, where it has them."""
    model = cnn.models.create(name, num_classes=1)
    return {**{rate: 0.0 for rate in RATES if hasattr(model, rate)}, **overrides}


def check_twin(libs, name, twin, tmp_path, *, sizes, train_size=None, train_batch=2, overrides=None, features=True,
               clip=None, compiler_options=FAST_COMPILE):
    """Loads ``twin``'s saved weights into zoo model ``name`` and checks against the twin:

    eval logits at each of ``sizes`` (the features too at the last one), train-mode logits (auxiliary ones
    included) and the updated running statistics at ``train_size`` (none if ``None``) on ``train_batch`` inputs
    (BatchNorm over the auxiliary heads' 1x1 maps needs more than 2 to be well conditioned), the same variables from
    ``.pth`` as from ``.safetensors``, and the round trip ``save_torch_weights`` -> ``twin.load_state_dict``.
    ``clip`` (frames) makes the inputs ``[N, clip, H, W, 3]`` video; ``compiler_options`` are XLA's (the fast-compiling
    ones by default; full-size models run faster fully optimised). Returns the loaded variables.
    """
    torch = libs.torch
    overrides = no_dropout_fields(name, **(overrides or {}))
    safetensors_path, pth_path = save(libs, twin, str(tmp_path))
    model, variables = cnn.models.load_torch_weights(name, safetensors_path, **overrides)
    _, from_pth = cnn.models.load_torch_weights(name, pth_path, **overrides)
    jax.tree_util.tree_map(np.testing.assert_array_equal, variables, from_pth)

    reference = twin.eval()
    shape = lambda size, batch=2: (batch,) + ((clip,) if clip else ()) + (size, size, 3)  # noqa: E731
    evaluate = jit(lambda v, x: model.apply(v, x, train=False), compiler_options)
    with_features = jit(lambda v, x: (model.apply(v, x, train=False), cnn.models.features(model, v, x)), compiler_options)
    for index, size in enumerate(sizes):
        x = images(shape(size), seed=index)
        with torch.no_grad():
            expected = reference(nchw(libs, x)).numpy()
        assert np.std(expected) > 1e-3, "washed-out logits could hide a wrong layer"
        if features and index == len(sizes) - 1:  # one compile for the logits and the feature maps
            logits, maps = with_features(variables, x)
            check_features(libs, name, model, maps, reference, x)
        else:
            logits = evaluate(variables, x)
        assert_equal_outputs(logits, expected, f"{name} eval logits at {size}px")

    if train_size is not None:
        check_train_mode(libs, name, model, variables, reference, images(shape(train_size, train_batch), seed=7), overrides,
                         compiler_options)
    check_round_trip(libs, name, variables, twin, images(shape(sizes[0]), seed=8), tmp_path, overrides)
    for path in (safetensors_path, pth_path):  # full-size twins weigh up to 0.5 GB a file
        os.remove(path)
    return variables


def check_features(libs, name, model, ours, reference, x):
    """``ours`` (``cnn.models.features``) against the twin's intermediate outputs: torchvision's feature extractor,
    timm's ``forward_intermediates`` (what its ``features_only`` models return)."""
    table = stage_table(model)
    assert set(ours) == {stage for stage, _, _ in table}  # (jit returns dicts in sorted order)
    spec = cnn.models.twin(name)
    with libs.torch.no_grad():
        if spec.library == "torchvision":
            nodes = {node: stage for stage, _, node in table}
            extractor = libs.create_feature_extractor(reference, return_nodes=nodes)
            theirs = {stage: channels_last(t) for stage, t in extractor(nchw(libs, x)).items()}
        else:
            indices = [int(node.split(".")[1]) for _, _, node in table]
            outputs = reference.forward_intermediates(nchw(libs, x), indices=indices, intermediates_only=True)
            theirs = {stage: channels_last(t) for (stage, _, _), t in zip(table, outputs)}
    for stage, _, _ in table:
        assert_equal_outputs(ours[stage], theirs[stage], f"{name} features {stage}")


def _train_outputs(libs, name, twin, x, overrides, double=False):
    """The twin's train-mode outputs ``{what: array}``: logits, auxiliary logits, running statistics after the step."""
    torch = libs.torch
    twin = quiet_dropout(libs, copy.deepcopy(twin).double() if double else copy.deepcopy(twin))
    with torch.no_grad():
        outputs = twin(nchw(libs, x).double() if double else nchw(libs, x))
    if isinstance(outputs, torch.Tensor):
        outputs = [outputs]
    else:  # torchvision's GoogLeNetOutputs(logits, aux2, aux1), InceptionOutputs(logits, aux)
        outputs = [outputs[0]] + [a for a in outputs[1:][::-1] if a is not None]
    found = {"logits": outputs[0].numpy()}
    found.update({f"auxiliary logits {i}": a.numpy() for i, a in enumerate(outputs[1:], start=1)})
    found.update({k: v.numpy() for k, v in twin.state_dict().items() if k.endswith(("running_mean", "running_var"))})
    return found


def check_train_mode(libs, name, model, variables, reference, x, overrides, compiler_options=FAST_COMPILE):
    """Logits with batch statistics (and auxiliary logits), and the running statistics after one step.

    In training a deep network's output is far more sensitive to rounding than in evaluation (BatchNorm over
    the batch amplifies perturbations with depth): PyTorch's own float32 ResNet-152 differs from its float64 by
    3e-4. Where ours differs from the float32 twin by more than ``TRAIN_RELATIVE``, it must be no further from
    the float64 twin than twice the float32 twin is."""
    train = jit(lambda v, inputs: model.apply(v, inputs, train=True, mutable=["batch_stats", "intermediates"]),
                compiler_options)
    ours, state = train(variables, x)
    mine = {"logits": np.asarray(ours)}
    mine.update({f"auxiliary logits {i}": np.asarray(a)
                 for i, a in enumerate(jax.tree_util.tree_leaves(state.get("intermediates", {})), start=1)})
    if "batch_stats" in state:
        updated = torch_state_dict(name, {"params": variables["params"], "batch_stats": state["batch_stats"]},
                                   **_layout_fields(overrides))
        mine.update({k: v for k, v in updated.items() if k.endswith(("running_mean", "running_var"))})
    theirs = _train_outputs(libs, name, reference, x, overrides)
    assert set(mine) == set(theirs), f"ours give {sorted(set(mine) ^ set(theirs))} where the twin does not, or back"
    errors = {what: relative_error(mine[what], theirs[what]) for what in theirs}
    worst = max(errors, key=errors.get)
    print(f"{name} train mode: logits {errors['logits']:.1e}, worst {worst} {errors[worst]:.1e}")
    beyond = [what for what, error in errors.items() if error > TRAIN_RELATIVE]
    if beyond:
        exact = _train_outputs(libs, name, reference, x, overrides, double=True)
        for what in beyond:
            twin_error, our_error = relative_error(theirs[what], exact[what]), relative_error(mine[what], exact[what])
            print(f"{name} train mode {what}: from float64, ours {our_error:.1e}, the float32 twin's {twin_error:.1e}")
            assert our_error <= 2 * twin_error, f"{name} train-mode {what}: {our_error:.2e} from float64, twin {twin_error:.2e}"


def _layout_fields(overrides):
    return {k: v for k, v in overrides.items() if k not in ("drop_rate", "drop_path_rate", "aux_drop_rate",
                                                            "attention_drop_rate")}


def check_round_trip(libs, name, variables, twin, x, tmp_path, overrides):
    """``save_torch_weights`` gives a file the twin loads strictly, with the same tensors and logits."""
    import safetensors.torch

    torch = libs.torch
    path = os.path.join(str(tmp_path), "round_trip.safetensors")
    cnn.models.save_torch_weights(name, variables, path, **_layout_fields(overrides))
    fresh = copy.deepcopy(twin)
    with torch.no_grad():
        for tensor in fresh.state_dict().values():
            tensor.fill_(float("nan") if tensor.is_floating_point() else -1)  # whatever is not loaded shows
    fresh.load_state_dict(safetensors.torch.load_file(path))  # strict: every key, every shape
    for key, value in twin.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(fresh.state_dict()[key], value), f"{key} changed in the round trip"
    with torch.no_grad():
        assert torch.equal(fresh.eval()(nchw(libs, x)), twin.eval()(nchw(libs, x)))
    os.remove(path)
