"""cnn: convolutional networks in JAX/Flax.

Pure Linen modules with explicit ``params`` and ``batch_stats``, a model zoo behind
``cnn.models.create``, one train step under jit, pmap and sharded jit.
"""

__version__ = "0.1.0"
