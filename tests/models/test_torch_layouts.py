"""Every zoo model with a twin pairs each of its tensors with one of the twin's state-dict keys, at full size:
the same keys (BatchNorm's ``num_batches_tracked`` aside), the same shapes after each layout change.

The twins are built on PyTorch's meta device (shapes, no memory), our models with ``jax.eval_shape``.
"""

import pytest

import cnn.models
from cnn.models.torch_keys import layout
from cnn.models.torch_weights import _input_shape, _shapes


def _meta_twin(twins, spec):
    with twins.torch.device("meta"):
        if spec.library == "torchvision":
            return twins.torchvision.models.get_model(spec.name, weights=None, **spec.kwargs)
        return twins.timm.create_model(spec.name, pretrained=False, **spec.kwargs)


@pytest.mark.parametrize("name", sorted(cnn.models.TWINS))
def test_every_tensor_pairs_with_one_twin_key_of_the_same_shape(name, twins):
    spec = cnn.models.twin(name)
    theirs = {key: tuple(value.shape) for key, value in _meta_twin(twins, spec).state_dict().items()}
    fields = {**spec.overrides, **(spec.from_keys(set(theirs)) if spec.from_keys else {})}
    model = cnn.models.create(name, num_classes=cnn.models.entry(name).default_num_classes, **fields)
    plan = layout(spec, model, _shapes(model, _input_shape(name, 3, None)))
    ours = {entry.torch_key: entry.torch_shape for entry in plan.entries}

    assert plan.unmatched == ()
    assert len(ours) == len(plan.entries), "two of our tensors under one key"
    assert set(ours) | set(plan.torch_only) == set(theirs)
    assert all(key.endswith(".num_batches_tracked") for key in plan.torch_only)
    wrong = {key: (shape, theirs[key]) for key, shape in ours.items() if shape != theirs[key]}
    assert not wrong, f"(ours, twin's) shapes differ: {wrong}"


def test_mobilenet_v1_twin_is_timms_relu6_network(twins):
    """timm's mobilenetv1_100 has our layers but ReLU6 activations; the loader builds ours with ReLU6."""
    twin = _meta_twin(twins, cnn.models.twin("mobilenet_v1"))
    activations = {type(module).__name__ for module in twin.modules() if "ReLU" in type(module).__name__}
    assert activations == {"ReLU6"}
    assert cnn.models.twin("mobilenet_v1").overrides["act"] is cnn.layers.relu6


def test_a_model_without_twin_is_refused():
    with pytest.raises(ValueError, match="'lenet5' has no torchvision or timm twin; models with one: alexnet"):
        cnn.models.twin("lenet5")
