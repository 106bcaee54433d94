"""Every zoo model with a twin, at full size, against the twin's real class: eval logits at the native
resolution and at 97 x 97 (where the model takes any size), train-mode logits (auxiliary heads included) and
running statistics at the native resolution, feature maps, ``.pth`` and ``.safetensors``, the round trip.

Slow (minutes for the largest: VGG-19's 0.5 GB of weights, ResNet-152, Inception-v3 at 299 x 299 in
training): runs with ``CNN_RUN_SLOW=1``. ``test_torch_twins.py`` checks each family in seconds.
"""

import pytest

import cnn.models
import twin_reference as ref  # tests/helpers, on pytest's pythonpath


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(cnn.models.TWINS))
def test_full_size_twin(name, twins, tmp_path):
    spec = cnn.models.twin(name)
    twins.torch.manual_seed(0)
    if spec.library == "torchvision":
        twin = twins.torchvision.models.get_model(spec.name, weights=None, **spec.kwargs)
    else:
        twin = twins.timm.create_model(spec.name, pretrained=False, **spec.kwargs)
    twin = ref.randomise(twins, twin, seed=0)
    native = cnn.models.input_shape(name)
    options = {"sizes": (native[-2],) if name.startswith("vit") else (native[-2], 97), "train_size": native[-2]}
    if name == "r3d_18":
        options["clip"] = native[0]
    if name == "inception_v3":
        options["train_batch"] = 4  # BatchNorm over the auxiliary head's 1 x 1 maps needs more than 2 examples
    ref.check_twin(twins, name, twin, tmp_path, compiler_options={}, **options)  # XLA's defaults: faster at full size
