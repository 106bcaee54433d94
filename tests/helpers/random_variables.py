"""Random variables of any model without compiling its init: every leaf drawn at a sensible scale.

Kernels He-normal, BatchNorm scales and variances in [0.5, 1.5], everything else (biases, means, layer
scales) small normals: no parameter is zero, so every layer shows in the logits.
"""

import jax
import jax.numpy as jnp
import numpy as np


def random_variables(model, input_shape, seed=0, gain=2.0):
    """Every variable of ``model`` drawn at random; kernels normal with variance ``gain / fan_in`` (He: 2)."""
    abstract = jax.eval_shape(
        lambda x: model.init(jax.random.key(0), x, train=False), jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    )
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = str(getattr(path[-1], "key", path[-1]))
        if name == "kernel":
            value = rng.normal(size=leaf.shape) * np.sqrt(gain / np.prod(leaf.shape[:-1]))
        elif name in ("scale", "var"):
            value = rng.uniform(0.5, 1.5, size=leaf.shape)
        else:
            value = 0.1 * rng.normal(size=leaf.shape)
        return jnp.asarray(value, leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, abstract)
