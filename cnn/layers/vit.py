"""Vision Transformer pieces (Dosovitskiy et al. 2021, timm layout): patch embedding and a
pre-norm transformer encoder block with fused-QKV multi-head self-attention.

Tokens are ``[N, L, D]``. LayerNorm epsilon is 1e-6 and GELU is exact, as timm's ViT.
The fused ``qkv`` projection splits its output as ``(3, heads, head_dim)``, timm's order, so
a checkpoint's weights map without reshuffling.
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
from flax import linen as nn

from cnn.layers.activations import gelu_exact
from cnn.layers.drop_path import DropPath

Dtype = Any
ModuleDef = Any

vit_init = nn.initializers.truncated_normal(0.02)


class PatchEmbedding(nn.Module):
    """``[N, H, W, C] -> [N, (H/p)*(W/p), dim]``: a p x p stride-p conv, rows then columns."""

    patch_size: int = 16
    dim: int = 768
    conv: ModuleDef = nn.Conv
    dtype: Optional[Dtype] = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        height, width = x.shape[1:3]
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(f"image {height}x{width} is not a multiple of patch_size={self.patch_size}")
        p = self.patch_size
        x = self.conv(self.dim, (p, p), strides=(p, p), padding="VALID", dtype=self.dtype, param_dtype=jnp.float32,
                    name="proj")(x)
        return x.reshape((x.shape[0], -1, self.dim))


class SelfAttention(nn.Module):
    """Multi-head self-attention ``[N, L, D] -> [N, L, D]``; softmax in float32."""

    heads: int
    qkv_bias: bool = True
    attention_drop_rate: float = 0.0
    drop_rate: float = 0.0
    dtype: Optional[Dtype] = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        batch, length, dim = x.shape
        if dim % self.heads:
            raise ValueError(f"embedding dim {dim} is not divisible by heads={self.heads}")
        head_dim = dim // self.heads
        qkv = nn.Dense(3 * dim, use_bias=self.qkv_bias, kernel_init=vit_init, dtype=self.dtype, name="qkv")(x)
        qkv = qkv.reshape(batch, length, 3, self.heads, head_dim)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # each [N, L, heads, head_dim]
        logits = jnp.einsum("nqhd,nkhd->nhqk", q * head_dim**-0.5, k).astype(jnp.float32)
        weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        weights = nn.Dropout(self.attention_drop_rate, deterministic=not train)(weights)
        out = jnp.einsum("nhqk,nkhd->nqhd", weights, v).reshape(batch, length, dim)
        out = nn.Dense(dim, kernel_init=vit_init, dtype=self.dtype, name="proj")(out)
        return nn.Dropout(self.drop_rate, deterministic=not train)(out)


class Mlp(nn.Module):
    """dense ``hidden`` -> GELU -> dropout -> dense back to the input width -> dropout."""

    hidden: int
    drop_rate: float = 0.0
    dtype: Optional[Dtype] = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        dim = x.shape[-1]
        x = gelu_exact(nn.Dense(self.hidden, kernel_init=vit_init, dtype=self.dtype, name="fc1")(x))
        x = nn.Dropout(self.drop_rate, deterministic=not train)(x)
        x = nn.Dense(dim, kernel_init=vit_init, dtype=self.dtype, name="fc2")(x)
        return nn.Dropout(self.drop_rate, deterministic=not train)(x)


class EncoderBlock(nn.Module):
    """Pre-norm block: ``x + attn(LN(x))`` then ``x + mlp(LN(x))``, each branch with stochastic depth."""

    heads: int
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_rate: float = 0.0
    attention_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    epsilon: float = 1e-6
    dtype: Optional[Dtype] = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        y = nn.LayerNorm(epsilon=self.epsilon, dtype=self.dtype, name="norm1")(x)
        y = SelfAttention(self.heads, self.qkv_bias, self.attention_drop_rate, self.drop_rate, dtype=self.dtype,
                          name="attn")(y, train)
        x = x + DropPath(self.drop_path_rate, name="drop_path1")(y, train)
        y = nn.LayerNorm(epsilon=self.epsilon, dtype=self.dtype, name="norm2")(x)
        y = Mlp(int(x.shape[-1] * self.mlp_ratio), self.drop_rate, dtype=self.dtype, name="mlp")(y, train)
        return x + DropPath(self.drop_path_rate, name="drop_path2")(y, train)
