"""Export to StableHLO through ``jax.export``: one self-contained file, weights included, any batch size.

The file is ``jax.export.Exported.serialize()`` of the evaluation forward pass; ``load_stablehlo(path)``
deserialises it and returns a function of the images that any JAX program (or a later JAX version,
within jax.export's compatibility window) can call without the model's Python code.
"""

from __future__ import annotations

import pathlib
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from cnn.export.forward import forward, input_spec


def export_stablehlo(function: Callable[[jax.Array], jax.Array], *, input_shape: Sequence[int],
                     dtype: Any = jnp.float32) -> jax.export.Exported:
    """The ``jax.export.Exported`` of ``function`` (e.g. ``cnn.export.forward.forward(model, variables)``) on
    ``[batch, *input_shape]`` inputs of ``dtype``."""
    return jax.export.export(jax.jit(function))(input_spec(input_shape, dtype))


def to_stablehlo(model: nn.Module, variables: Any, path: Any, *, input_shape: Sequence[int]) -> pathlib.Path:
    """Writes the serialised StableHLO program of ``model`` (``images [N, *input_shape] -> logits``) to ``path``."""
    return write(export_stablehlo(forward(model, variables), input_shape=input_shape), path)


def write(exported: jax.export.Exported, path: Any) -> pathlib.Path:
    """Saves ``exported`` serialised to ``path`` atomically (a temporary file renamed into place)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(exported.serialize())
    temporary.replace(path)  # never a half-written file at ``path``
    return path


def load_stablehlo(path: Any) -> Callable[[jax.Array], jax.Array]:
    """``images [N, *input_shape] -> logits [N, classes]`` from a file written by ``to_stablehlo``."""
    path = pathlib.Path(path)
    try:
        exported = jax.export.deserialize(bytearray(path.read_bytes()))
    except FileNotFoundError:
        raise FileNotFoundError(f"no StableHLO file at {path}") from None
    except Exception:  # noqa: BLE001 - any parse failure means: not a serialised jax.export program
        raise ValueError(f"{path} is not a serialised jax.export program") from None
    return exported.call
