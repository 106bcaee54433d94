"""The model zoo: ``create(name, num_classes=...)`` and ``names()``; weights to and from the models' torchvision
and timm twins (``load_torch_weights``, ``save_torch_weights``); feature maps by stage (``features``).

Importing this package registers every family; adding a model is one file (or one line in its
family's file) plus one test.
"""

from cnn.models import alexnet, resnet, simple, vgg  # noqa: F401  (each registers its models)
from cnn.models import cnn1d, convnext, densenet, efficientnet, inception, mobilenet, squeezenet, video, vit  # noqa: F401
from cnn.models.features import feature_stages, features
from cnn.models.registry import create, entry, from_config, input_shape, names, register
from cnn.models.torch_twins import TWINS, twin
from cnn.models.torch_weights import LoadReport, insert_variables, load_torch_weights, save_torch_weights

__all__ = [
    "LoadReport",
    "TWINS",
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
