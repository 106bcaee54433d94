"""Export to StableHLO through ``jax.export``: one self-contained file, weights included, any batch size.

The file is ``jax.export.Exported.serialize()`` of the evaluation forward pass; ``load_stablehlo(path)``
deserialises it and returns a function of the images that any JAX program (or a later JAX version,
within jax.export's compatibility window) can call without the model's Python code.
"""

from __future__ import annotations

import pathlib
from typing import Any, Callable, Sequence

import jax
from flax import linen as nn

from cnn.export.forward import forward, input_spec


def export_stablehlo(model: nn.Module, variables: Any, *, input_shape: Sequence[int]) -> jax.export.Exported:
    """The ``jax.export.Exported`` of ``model``'s evaluation forward pass on ``[batch, *input_shape]``."""
    return jax.export.export(jax.jit(forward(model, variables)))(input_spec(input_shape))


def to_stablehlo(model: nn.Module, variables: Any, path: Any, *, input_shape: Sequence[int]) -> pathlib.Path:
    """Writes the serialised StableHLO program of ``model`` (``images [N, *input_shape] -> logits``) to ``path``."""
    exported = export_stablehlo(model, variables, input_shape=input_shape)
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
