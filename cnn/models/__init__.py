"""The model zoo: ``create(name, num_classes=...)`` and ``names()``.

Importing this package registers every family; adding a model is one file (or one line in its
family's file) plus one test.
"""

from cnn.models import alexnet, resnet, simple, vgg  # noqa: F401  (each registers its models)
from cnn.models import cnn1d, convnext, densenet, efficientnet, inception, mobilenet, squeezenet, video, vit  # noqa: F401
from cnn.models.registry import create, entry, from_config, input_shape, names, register

__all__ = ["create", "entry", "from_config", "input_shape", "names", "register"]
