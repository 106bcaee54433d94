"""The model zoo: ``create(name, num_classes=...)`` and ``names()``; weights to and from the models' torchvision
and timm twins (``load_torch_weights``, ``save_torch_weights``); feature maps by stage (``features``).

Importing this package registers every family. Adding a model is one file (or one entry in its
family's file) with its ``register`` line, whose parameter count ``tests/models/test_registry.py``
checks together with a training step, the features of ``num_classes=0`` and a row in docs/models.md.
"""

from cnn.models import alexnet, resnet, simple, vgg  # noqa: F401  (each registers its models)
from cnn.models import cnn1d, convnext, densenet, efficientnet, inception, mobilenet, squeezenet, video, vit  # noqa: F401
from cnn.models.features import feature_stages, features
from cnn.models.registry import check_input, create, entry, from_config, input_shape, names, register
from cnn.models.torch_twins import TWINS, twin
from cnn.models.torch_weights import LoadReport, insert_variables, load_torch_weights, save_torch_weights

__all__ = [
    "LoadReport",
    "TWINS",
    "check_input",
    "create",
    "entry",
    "feature_stages",
    "features",
    "from_config",
    "input_shape",
    "insert_variables",
    "load_torch_weights",
    "names",
    "register",
    "save_torch_weights",
    "twin",
]
