"""The model zoo: ``create(name, num_classes=...)`` and ``names()``.

Importing this package registers every family. Adding a model is one file (or one entry in its
family's file) with its ``register`` line, whose parameter count ``tests/models/test_registry.py``
checks together with a training step, the features of ``num_classes=0`` and a row in docs/models.md.
"""

from cnn.models import alexnet, resnet, simple, vgg  # noqa: F401  (each registers its models)
from cnn.models import cnn1d, convnext, densenet, efficientnet, inception, mobilenet, squeezenet, video, vit  # noqa: F401
from cnn.models.registry import check_input, create, entry, from_config, input_shape, names, register

__all__ = ["check_input", "create", "entry", "from_config", "input_shape", "names", "register"]
