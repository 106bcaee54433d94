"""3D ResNet for video clips (Tran et al. 2018, "A Closer Look at Spatiotemporal Convolutions"),
torchvision's ``r3d_18``: inputs ``[N, T, H, W, C]``, 400 Kinetics classes by default.

The residual blocks are the 2D ``BasicBlock``s of ``cnn.layers``: ``ConvNormAct`` takes its
rank from the input, so with 5D input every 3x3 conv is 3x3x3 and a stride of 2 halves time,
height and width alike, as in torchvision.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import jax
from flax import linen as nn

from cnn.layers import BasicBlock, ClassifierHead, ConvNormAct, batch_norm
from cnn.models.layout import check_layout
from cnn.models.registry import register

Dtype = Any
ModuleDef = Any


class VideoResNet(nn.Module):
    """Stem conv (3x7x7, stride 1x2x2, no pool), four stages of 3D basic blocks (stages 2-4 stride 2),
    global spatio-temporal pool, dropout (``drop_rate``, 0 as torchvision), fc.

    ``zero_init_last=False`` as torchvision's default; ``True`` starts each block as the identity.
    """

    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    widths: Sequence[int] = (64, 128, 256, 512)
    num_classes: int = 400
    stem_width: int = 64
    zero_init_last: bool = False
    drop_rate: float = 0.0
    conv: ModuleDef = nn.Conv
    axis_name: Optional[str] = None
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    dtype: Optional[Dtype] = None

    spatial_rank = 3  # inputs [N, T, H, W, C]

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        check_layout(self, x)
        norm = batch_norm(self)
        x = ConvNormAct(self.stem_width, (3, 7, 7), (1, 2, 2), padding=(1, 3, 3), use_bias=False, norm=norm,
                        conv=self.conv, dtype=self.dtype, name="stem")(x, train)
        for stage, (num_blocks, width) in enumerate(zip(self.stage_sizes, self.widths)):
            for index in range(num_blocks):
                x = BasicBlock(width, strides=2 if stage > 0 and index == 0 else 1, zero_init_last=self.zero_init_last,
                               norm=norm, conv=self.conv, dtype=self.dtype, name=f"stage{stage + 1}_block{index + 1}")(x, train)
        return ClassifierHead(self.num_classes, pool="avg", drop_rate=self.drop_rate, dtype=self.dtype, name="head")(
            x, train
        )


register("r3d_18", VideoResNet, input_shape=(16, 112, 112, 3), default_num_classes=400, params=33_371_472)
