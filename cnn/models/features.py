"""Intermediate feature maps by stage name, for backbone use (detection, segmentation, linear probes).

``features(model, variables, images)`` runs a zoo model in evaluation mode and returns the output of
each of its stages, ``{stage: [N, H, W, C]}`` (``[N, T, H, W, C]`` for video; ViT's patch tokens as a
``[N, H/p, W/p, D]`` grid). A stage is the output of one of the model's modules, captured with Flax's
``capture_intermediates``, so the model files need no change. Each family's stages are its natural
ones (the outputs at each resolution, or every block where the twin lists every block) and equal its
twin's: torchvision's ``create_feature_extractor`` nodes, timm's ``features_only`` outputs
(``STAGES[family](model)`` gives ``(stage, our module, twin node)``; docs/models.md lists them).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import jax
from flax import linen as nn

from cnn.models import alexnet, convnext, densenet, efficientnet, inception, mobilenet, resnet, squeezenet, video, vgg, vit
from cnn.models.efficientnet import round_repeats
from cnn.models.torch_twins import mobilenet_v1_groups

Stage = Tuple[str, str, str]  # (stage name, our module path, the twin's node)


def _resnet(model) -> List[Stage]:
    stages = [("stem", "stem", "relu")]
    return stages + [(f"stage{s}", f"stage{s}_block{n}", f"layer{s}") for s, n in enumerate(model.stage_sizes, start=1)]


def _vgg(model) -> List[Stage]:
    stages, conv, position, group = [], 0, 0, 1
    for i, item in enumerate(model.layers):
        if item == "M":
            position += 1
            continue
        conv += 1
        position += 3 if model.batch_norm else 2  # conv, [BatchNorm], ReLU
        if i + 1 == len(model.layers) or model.layers[i + 1] == "M":  # the last conv before a pool
            stages.append((f"stage{group}", f"conv{conv}", f"features.{position - 1}"))
            group += 1
    return stages


def _alexnet(model) -> List[Stage]:
    return [(f"conv{k}", f"conv{k}", f"features.{node}") for k, node in zip(range(1, 6), (1, 4, 7, 9, 11))]


def _googlenet(model) -> List[Stage]:
    return [(name, name, name) for name in ("conv1", "conv3", "inception3b", "inception4e", "inception5b")]


def _inception_v3(model) -> List[Stage]:
    return [(name, name, name) for name in ("Conv2d_2b_3x3", "Conv2d_4a_3x3", "Mixed_5d", "Mixed_6e", "Mixed_7c")]


def _densenet(model) -> List[Stage]:
    blocks = [(f"block{b}", f"block{b}", f"features.denseblock{b}") for b in range(1, len(model.block_sizes) + 1)]
    return [("stem", "stem", "features.relu0")] + blocks


def _mobilenet_v1(model) -> List[Stage]:  # timm's feature stages: its block groups
    positions = mobilenet_v1_groups([stride for _, stride in mobilenet.V1_LAYERS])
    last = {group: layer for layer, (group, _) in enumerate(positions, start=1)}
    return [(f"stage{g + 1}", f"layer{layer}", f"blocks.{g}") for g, layer in last.items()]


def _mobilenet_v2(model) -> List[Stage]:
    blocks = sum(repeats for _, _, repeats, _ in model.stages)
    return ([("stem", "stem", "features.0")] + [(f"block{i}", f"block{i}", f"features.{i}") for i in range(1, blocks + 1)]
            + [("last_conv", "last_conv", f"features.{blocks + 1}")])


def _mobilenet_v3(model) -> List[Stage]:
    blocks = len(model.blocks)
    return ([("stem", "stem", "features.0")] + [(f"block{i}", f"block{i}", f"features.{i}") for i in range(1, blocks + 1)]
            + [("last_conv", "last_conv", f"features.{blocks + 1}")])


def _efficientnet(model) -> List[Stage]:
    stages = [("stem", "stem", "features.0")]
    for s, stage in enumerate(model.stages, start=1):
        stages.append((f"stage{s}", f"stage{s}_block{round_repeats(stage[5], model.depth)}", f"features.{s}"))
    return stages + [("last_conv", "last_conv", f"features.{len(model.stages) + 1}")]


def _convnext(model) -> List[Stage]:
    stages = [(f"stage{s}", f"stage{s}_block{depth}", f"features.{2 * s - 1}") for s, depth in enumerate(model.depths, 1)]
    return [("stem", "stem_norm", "features.0")] + stages


def _squeezenet(model) -> List[Stage]:
    stages, position, fire = [("stem", "stem", "features.1")], 2, 1
    for item in model.layers:
        if item != "M":
            fire += 1
            stages.append((f"fire{fire}", f"fire{fire}", f"features.{position}"))
        position += 1
    return stages


def _video_resnet(model) -> List[Stage]:
    stages = [("stem", "stem", "stem")]
    return stages + [(f"stage{s}", f"stage{s}_block{n}", f"layer{s}") for s, n in enumerate(model.stage_sizes, start=1)]


def _vit(model) -> List[Stage]:
    return [(f"block{i}", f"block{i}", f"blocks.{i - 1}") for i in range(1, model.depth + 1)]


STAGES: Dict[type, Callable[[Any], List[Stage]]] = {
    resnet.ResNet: _resnet, vgg.VGG: _vgg, alexnet.AlexNet: _alexnet, inception.GoogLeNet: _googlenet,
    inception.InceptionV3: _inception_v3, densenet.DenseNet: _densenet, mobilenet.MobileNetV1: _mobilenet_v1,
    mobilenet.MobileNetV2: _mobilenet_v2, mobilenet.MobileNetV3: _mobilenet_v3,
    efficientnet.EfficientNet: _efficientnet, convnext.ConvNeXt: _convnext, squeezenet.SqueezeNet: _squeezenet,
    video.VideoResNet: _video_resnet, vit.VisionTransformer: _vit,
}


def stage_table(model: nn.Module) -> List[Stage]:
    """``[(stage, our module path, the twin's node)]`` of ``model``, in network order."""
    if type(model) not in STAGES:
        known = ", ".join(sorted(cls.__name__ for cls in STAGES))
        raise ValueError(f"no feature stages for a {type(model).__name__}; families with stages: {known}")
    return STAGES[type(model)](model)


def feature_stages(model: nn.Module) -> Tuple[str, ...]:
    """The stage names ``features`` returns for ``model``, in network order."""
    return tuple(stage for stage, _, _ in stage_table(model))


def features(model: nn.Module, variables: Any, images: jax.Array, *,
             stages: Optional[Sequence[str]] = None) -> Dict[str, jax.Array]:
    """``{stage: feature map}`` of ``model`` on ``images`` in evaluation mode (every stage, or those named).

    Maps are channels-last: ``[N, H, W, C]`` (``[N, T, H, W, C]`` for video); a ViT block's tokens
    without the class token, as a ``[N, H/p, W/p, D]`` grid (timm's ``features_only``). Jit it with the
    model closed over: ``jax.jit(lambda v, x: features(model, v, x))``.
    """
    table = stage_table(model)
    known = [stage for stage, _, _ in table]
    wanted = known if stages is None else list(stages)
    unknown = [stage for stage in wanted if stage not in known]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown} of {type(model).__name__}; its stages: {', '.join(known)}")
    modules = {module: stage for stage, module, _ in table if stage in wanted}

    def capture(module: nn.Module, method: str) -> bool:
        return method == "__call__" and "/".join(module.path) in modules

    _, state = model.apply(variables, images, train=False, capture_intermediates=capture, mutable=["intermediates"])
    found: Dict[str, jax.Array] = {}
    for path, value in jax.tree_util.tree_flatten_with_path(state["intermediates"])[0]:
        names = [str(getattr(k, "key", getattr(k, "idx", k))) for k in path]
        module = "/".join(names[: names.index("__call__")])
        if module in modules:
            found[modules[module]] = value
    if isinstance(model, vit.VisionTransformer):  # tokens -> grid of patches, class token dropped
        rows, cols = images.shape[1] // model.patch_size, images.shape[2] // model.patch_size
        found = {stage: tokens[:, 1:].reshape(tokens.shape[0], rows, cols, -1) for stage, tokens in found.items()}
    return {stage: found[stage] for stage in wanted}
