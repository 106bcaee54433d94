"""int8 quantisation through qwix: post-training quantisation with calibration, and quantisation-aware training.

Weights are int8 per output channel (absmax scales); activations entering every conv and dense layer
are int8 with one static scale each: the mean over calibration images of each image's largest
|activation|, over 127.5 (qwix's symmetric int8 range; weights likewise per channel). ``qat_model(model)``
is the model with fake quantisation (quantise, dequantise, straight-through gradients) to train or
calibrate with; ``ptq(model, variables, quant_stats)`` returns
the int8 model and its int8 weights: its convolutions and products take int8 operands and accumulate
in int32 (``int8_products`` lists what XLA actually compiles).
"""

from __future__ import annotations

import re
from typing import Any, Callable, Iterable, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import qwix
from flax import linen as nn

from cnn.layers import cpu_kernels


def int8_rules(module_path: str = ".*", *, activations: bool = True) -> List[qwix.QuantizationRule]:
    """int8 weights (per channel) and, with ``activations``, int8 inputs with a calibrated static scale."""
    if activations:
        return [qwix.QuantizationRule(module_path=module_path, weight_qtype=jnp.int8, act_qtype=jnp.int8,
                                      act_static_scale=True)]
    return [qwix.QuantizationRule(module_path=module_path, weight_qtype=jnp.int8)]


def qat_model(model: nn.Module, rules: Optional[Sequence[qwix.QuantizationRule]] = None) -> nn.Module:
    """``model`` with fake int8 quantisation: the float model that QAT trains and calibration runs.
    Its variables are ``model``'s plus a ``quant_stats`` collection (the activation ranges)."""
    return qwix.quantize_model(cpu_kernels.plain(model), qwix.QtProvider(list(rules or int8_rules())))


def calibrate(model: nn.Module, variables: Any, batches: Iterable[Any],
              rules: Optional[Sequence[qwix.QuantizationRule]] = None) -> Any:
    """The ``quant_stats`` (activation ranges) of ``model`` in eval mode over ``batches`` of model inputs.

    Each batch's statistics (a count and a sum of per-batch absolute maxima) are measured from fresh and
    added up here, which gives qwix's running mean over the batches."""
    qat = qat_model(model, rules)
    variables = {k: v for k, v in variables.items() if k != "quant_stats"}

    def measure(variables, images):
        # qwix 0.1.8 records a conv's statistics inside jax.custom_vjp's primal function, which leaks a tracer
        # under jit; through jax.jvp the custom rule's forward half runs instead, inside the traced function.
        apply = lambda x: qat.apply(variables, x, train=False, mutable=["quant_stats"])[1]["quant_stats"]
        return jax.jvp(apply, (images,), (jnp.zeros_like(images),))[0]

    step = jax.jit(measure)
    stats = None
    for images in batches:
        current = step(variables, jnp.asarray(images))
        stats = current if stats is None else jax.tree.map(jnp.add, stats, current)
    if stats is None:
        raise ValueError("calibrate: no calibration batch; pass at least one batch of images")
    return stats


def ptq(model: nn.Module, variables: Any, quant_stats: Any = None,
        rules: Optional[Sequence[qwix.QuantizationRule]] = None, *, input_shape: Sequence[int]) -> Tuple[nn.Module, Any]:
    """``(int8 model, its variables)`` from float ``variables`` (trained with or without QAT) and the
    calibrated ``quant_stats``; the int8 model is applied like the float one (``apply(v, x, train=False)``)."""
    rules = list(rules or int8_rules())
    int8_model = qwix.quantize_model(cpu_kernels.plain(model), qwix.PtqProvider(rules))
    spec = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    abstract = jax.eval_shape(lambda x: int8_model.init(jax.random.key(0), x, train=False), spec)
    params = qwix.quantize_params(variables["params"], abstract["params"], quant_stats if quant_stats is not None else {})
    quantized = {"params": params}
    if "batch_stats" in variables:
        quantized["batch_stats"] = variables["batch_stats"]
    return int8_model, quantized


def weight_bytes(variables: Any) -> int:
    """Bytes of the parameters as stored: int8 values, float32 scales and biases, float32 for a float model."""
    return int(sum(np.asarray(leaf).nbytes for leaf in jax.tree.leaves(variables["params"])))


def int8_products(function: Callable[..., Any], *args: Any) -> List[Tuple[str, str, str, str]]:
    """``[(op, lhs type, rhs type, output type), ...]`` for every convolution and dot in the program XLA
    compiles for ``function(*args)`` on this backend: ``("convolution", "s8", "s8", "s32")`` runs in int8."""
    text = jax.jit(function).lower(*args).compile().as_text()
    types = dict(re.findall(r"(%[\w.\-]+) = (\w+)\[", text))
    found = []
    for line in text.splitlines():
        match = re.search(r"= (\w+)\[[^=]* (convolution|dot)\((%[\w.\-]+), (%[\w.\-]+)\)", line)
        if match:
            found.append((match.group(2), types.get(match.group(3), "?"), types.get(match.group(4), "?"), match.group(1)))
    return found
