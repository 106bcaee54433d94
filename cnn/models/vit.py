"""Vision Transformer baseline (Dosovitskiy et al. 2021) in timm's layout: ``vit_tiny_patch16_224``
and ``vit_small_patch16_224``.

Patch embedding, a class token, learned position embeddings, ``depth`` pre-norm encoder blocks,
a final LayerNorm, and a linear head on the class token. The position embedding's length is
fixed by the input size at initialisation (197 tokens at 224x224 with 16x16 patches).
"""

from __future__ import annotations

import functools
from typing import Any, Optional

import jax
import jax.numpy as jnp
from flax import linen as nn

from cnn.layers.vit import EncoderBlock, PatchEmbedding, vit_init
from cnn.models.layout import check_layout
from cnn.models.registry import register

Dtype = Any
ModuleDef = Any


class VisionTransformer(nn.Module):
    """Attributes:
      patch_size, dim, depth, heads, mlp_ratio: the architecture (Tiny: 16, 192, 12, 3, 4).
      drop_rate: dropout after the position embedding, in attention/MLP outputs, and before the head.
      attention_drop_rate: dropout on the attention weights.
      drop_path_rate: stochastic depth, rising linearly over the blocks from 0 to this value.
      conv: the module of the patch embedding's conv (``nn.Conv``).
    """

    num_classes: int = 1000
    patch_size: int = 16
    dim: int = 192
    depth: int = 12
    heads: int = 3
    mlp_ratio: float = 4.0
    drop_rate: float = 0.0
    attention_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    conv: ModuleDef = nn.Conv
    dtype: Optional[Dtype] = None

    spatial_rank = 2  # inputs [N, H, W, C]

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        check_layout(self, x)
        x = PatchEmbedding(self.patch_size, self.dim, conv=self.conv, dtype=self.dtype, name="patch_embed")(x, train)
        cls_token = self.param("cls_token", nn.initializers.normal(1e-6), (1, 1, self.dim), jnp.float32)
        x = jnp.concatenate([jnp.broadcast_to(cls_token, (x.shape[0], 1, self.dim)).astype(x.dtype), x], axis=1)
        pos_embed = self.param("pos_embed", vit_init, (1, x.shape[1], self.dim), jnp.float32)
        if pos_embed.shape[1] != x.shape[1]:
            raise ValueError(f"{x.shape[1]} tokens but the position embedding has {pos_embed.shape[1]}; "
                             "apply at the image size the model was initialised with")
        x = nn.Dropout(self.drop_rate, deterministic=not train)(x + pos_embed.astype(x.dtype))
        for i in range(self.depth):
            rate = self.drop_path_rate * i / max(self.depth - 1, 1)
            x = EncoderBlock(self.heads, self.mlp_ratio, drop_rate=self.drop_rate,
                             attention_drop_rate=self.attention_drop_rate, drop_path_rate=rate, dtype=self.dtype,
                             name=f"block{i + 1}")(x, train)
        x = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="norm")(x)[:, 0]
        if self.num_classes == 0:
            return x
        x = nn.Dropout(self.drop_rate, deterministic=not train)(x)
        return nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x)


register("vit_tiny_patch16_224", functools.partial(VisionTransformer, dim=192, depth=12, heads=3), params=5_717_416, min_size=16)
register("vit_small_patch16_224", functools.partial(VisionTransformer, dim=384, depth=12, heads=6), params=22_050_664, min_size=16)
