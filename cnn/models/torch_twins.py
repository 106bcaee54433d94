"""The zoo's torchvision and timm twins (``TWINS``) and each family's key table (see ``cnn.models.torch_keys``).

Every table was written against the twin's real class (``tests/models/test_torch_twins.py`` checks every
key and shape of every twin at full size, and the logits of each family); where the twin differs from our
default model, ``Twin.overrides`` sets the fields that make ours equal to it.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Dict, List, Sequence, Set, Tuple

from cnn.layers.activations import relu6
from cnn.models import alexnet, convnext, densenet, efficientnet, inception, mobilenet, resnet, squeezenet, video, vgg, vit
from cnn.models.torch_keys import (
    BATCH_NORM, CONV, LAYER_NORM, LAYER_SCALE, LINEAR, SE_CONV, VIT_TOKENS, Rule, Twin, flattened_linear, unit,
)


# ----------------------------------------------------------------------------- family tables


def _has(modules: Set[str], prefix: str) -> bool:
    return any(m == prefix or m.startswith(prefix + "/") for m in modules)


def resnet_rules(model, modules):
    block = lambda s, b: f"layer{s}.{b - 1}"  # noqa: E731
    return [
        *unit("stem", "", conv="conv1", norm="bn1"),
        Rule(r"stage(\d+)_block(\d+)/conv(\d)/conv", lambda s, b, c: f"{block(s, b)}.conv{c}", CONV),
        Rule(r"stage(\d+)_block(\d+)/conv(\d)/norm", lambda s, b, c: f"{block(s, b)}.bn{c}", BATCH_NORM),
        *unit(r"stage(\d+)_block(\d+)/shortcut", lambda s, b: f"{block(s, b)}.downsample"),
        Rule("head/fc", "fc", LINEAR),
    ]


def vgg_rules(model, modules):
    index, position, count = {}, 0, 0
    for item in model.layers:  # torchvision's `features`: conv, [BatchNorm], ReLU for a conv; one MaxPool for "M"
        if item == "M":
            position += 1
            continue
        count += 1
        index[count] = position
        position += 3 if model.batch_norm else 2
    rules = [Rule(r"conv(\d+)/conv", lambda k: f"features.{index[k]}", CONV),
             Rule(r"conv(\d+)/norm", lambda k: f"features.{index[k] + 1}", BATCH_NORM)]
    if model.pool_size is not None:
        rules += [Rule("head/hidden0", "classifier.0", flattened_linear(model.pool_size, model.pool_size)),
                  Rule("head/hidden1", "classifier.3", LINEAR), Rule("head/fc", "classifier.6", LINEAR)]
    return rules


def alexnet_rules(model, modules):
    features = {1: 0, 2: 3, 3: 6, 4: 8, 5: 10}
    return [Rule(r"conv(\d)/conv", lambda k: f"features.{features[k]}", CONV),
            Rule("fc1", "classifier.1", flattened_linear(6, 6)), Rule("fc2", "classifier.4", LINEAR),
            Rule("fc3", "classifier.6", LINEAR)]


GOOGLENET_BRANCHES = {"branch1x1": "branch1", "branch3x3_reduce": "branch2.0", "branch3x3": "branch2.1",
                      "branch5x5_reduce": "branch3.0", "branch5x5": "branch3.1", "pool_proj": "branch4.1"}


def googlenet_rules(model, modules):
    return [
        *unit(r"conv(\d)", lambda n: f"conv{n}", conv="conv", norm="bn"),
        *unit(r"inception(\w+)/(\w+)", lambda key, b: f"inception{key}.{GOOGLENET_BRANCHES[b]}", conv="conv", norm="bn"),
        *unit(r"aux(\d)/conv", lambda n: f"aux{n}.conv", conv="conv", norm="bn"),
        Rule(r"aux(\d)/fc1", lambda n: f"aux{n}.fc1", flattened_linear(4, 4)),
        Rule(r"aux(\d)/fc2", lambda n: f"aux{n}.fc2", LINEAR),
        Rule("head/fc", "fc", LINEAR),
    ]


def inception_v3_rules(model, modules):
    return [*unit(r"(Conv2d_\w+|Mixed_\w+/\w+|AuxLogits/conv\d)", lambda p: p.replace("/", "."), conv="conv", norm="bn"),
            Rule("AuxLogits/fc", "AuxLogits.fc", LINEAR), Rule("head/fc", "fc", LINEAR)]


def densenet_rules(model, modules):
    layer = lambda b, i: f"features.denseblock{b}.denselayer{i}"  # noqa: E731
    return [
        *unit("stem", "features", conv="conv0", norm="norm0"),
        *unit(r"block(\d+)/layer(\d+)/bottleneck", layer, conv="conv1", norm="norm1"),
        *unit(r"block(\d+)/layer(\d+)/conv", layer, conv="conv2", norm="norm2"),
        *unit(r"transition(\d+)/unit", lambda t: f"features.transition{t}", conv="conv", norm="norm"),
        Rule("final_norm", "features.norm5", BATCH_NORM),
        Rule("head/fc", "classifier", LINEAR),
    ]


def _inverted_residual(block: str, torch_block: str, modules: Set[str], se_name: Tuple[str, str]) -> List[Rule]:
    """torchvision's inverted residual ``Sequential``: [expand], depthwise, [squeeze-excite], project (numbered in order)."""
    parts = [p for p in ("expand", "depthwise", "se", "project") if _has(modules, f"{block}/{p}")]
    rules = []
    for index, part in enumerate(parts):
        if part == "se":
            rules += [Rule(f"{block}/se/reduce", f"{torch_block}.{index}.{se_name[0]}", SE_CONV),
                      Rule(f"{block}/se/expand", f"{torch_block}.{index}.{se_name[1]}", SE_CONV)]
        else:
            rules += unit(f"{block}/{part}", f"{torch_block}.{index}")
    return rules


def _blocks(modules: Set[str], pattern: str) -> List[Tuple[str, Tuple[int, ...]]]:
    """Our block modules matching ``pattern`` (e.g. ``block(\\d+)``) and their numbers, in order."""
    found = {m.split("/")[0] for m in modules if re.fullmatch(pattern, m.split("/")[0])}
    return sorted(((b, tuple(int(g) for g in re.fullmatch(pattern, b).groups())) for b in found), key=lambda x: x[1])


def mobilenet_v2_rules(model, modules):
    blocks = _blocks(modules, r"block(\d+)")
    rules = unit("stem", "features.0") + unit("last_conv", f"features.{len(blocks) + 1}")
    for block, (i,) in blocks:
        torch_block = f"features.{i}.conv"
        # torchvision: the projection is a bare conv and BatchNorm in the block's Sequential, not a unit.
        parts = [p for p in ("expand", "depthwise") if _has(modules, f"{block}/{p}")]
        for index, part in enumerate(parts):
            rules += unit(f"{block}/{part}", f"{torch_block}.{index}")
        rules += [Rule(f"{block}/project/conv", f"{torch_block}.{len(parts)}", CONV),
                  Rule(f"{block}/project/norm", f"{torch_block}.{len(parts) + 1}", BATCH_NORM)]
    return rules + [Rule("head/fc", "classifier.1", LINEAR)]


def mobilenet_v3_rules(model, modules):
    blocks = _blocks(modules, r"block(\d+)")
    rules = unit("stem", "features.0") + unit("last_conv", f"features.{len(blocks) + 1}")
    for block, (i,) in blocks:
        rules += _inverted_residual(block, f"features.{i}.block", modules, ("fc1", "fc2"))
    return rules + [Rule("head/hidden0", "classifier.0", LINEAR), Rule("head/fc", "classifier.3", LINEAR)]


def efficientnet_rules(model, modules):
    blocks = _blocks(modules, r"stage(\d+)_block(\d+)")
    stages = len({numbers[0] for _, numbers in blocks})
    rules = unit("stem", "features.0") + unit("last_conv", f"features.{stages + 1}")
    for block, (s, b) in blocks:
        rules += _inverted_residual(block, f"features.{s}.{b - 1}.block", modules, ("fc1", "fc2"))
    return rules + [Rule("head/fc", "classifier.1", LINEAR)]


def convnext_rules(model, modules):
    block = lambda s, b: f"features.{2 * s - 1}.{b - 1}"  # noqa: E731
    return [
        Rule("stem", "features.0.0", CONV), Rule("stem_norm", "features.0.1", LAYER_NORM),
        Rule(r"downsample(\d+)/norm", lambda d: f"features.{2 * d}.0", LAYER_NORM),
        Rule(r"downsample(\d+)/conv", lambda d: f"features.{2 * d}.1", CONV),
        Rule(r"stage(\d+)_block(\d+)", block, LAYER_SCALE),
        Rule(r"stage(\d+)_block(\d+)/depthwise", lambda s, b: f"{block(s, b)}.block.0", CONV),
        Rule(r"stage(\d+)_block(\d+)/norm", lambda s, b: f"{block(s, b)}.block.2", LAYER_NORM),
        Rule(r"stage(\d+)_block(\d+)/pointwise1", lambda s, b: f"{block(s, b)}.block.3", LINEAR),
        Rule(r"stage(\d+)_block(\d+)/pointwise2", lambda s, b: f"{block(s, b)}.block.5", LINEAR),
        Rule("head_norm", "classifier.0", LAYER_NORM), Rule("fc", "classifier.2", LINEAR),
    ]


def squeezenet_rules(model, modules):
    index, position, count = {}, 2, 1  # features.0 is the stem conv, features.1 its ReLU; fires are fire2, fire3, ...
    for item in model.layers:
        if item != "M":
            count += 1
            index[count] = position
        position += 1
    return [Rule("stem/conv", "features.0", CONV),
            Rule(r"fire(\d+)/(\w+)/conv", lambda k, part: f"features.{index[k]}.{part}", CONV),
            Rule("classifier", "classifier.1", CONV)]


def video_resnet_rules(model, modules):
    block = lambda s, b: f"layer{s}.{b - 1}"  # noqa: E731
    return [*unit("stem", "stem"),
            *unit(r"stage(\d+)_block(\d+)/conv(\d)", lambda s, b, c: f"{block(s, b)}.conv{c}"),
            *unit(r"stage(\d+)_block(\d+)/shortcut", lambda s, b: f"{block(s, b)}.downsample"),
            Rule("head/fc", "fc", LINEAR)]


def vit_rules(model, modules):
    block = lambda i: f"blocks.{i - 1}"  # noqa: E731
    return [
        Rule("", "", VIT_TOKENS), Rule("patch_embed/proj", "patch_embed.proj", CONV),
        Rule(r"block(\d+)/norm(\d)", lambda i, n: f"{block(i)}.norm{n}", LAYER_NORM),
        Rule(r"block(\d+)/attn/(qkv|proj)", lambda i, p: f"{block(i)}.attn.{p}", LINEAR),
        Rule(r"block(\d+)/mlp/(fc\d)", lambda i, p: f"{block(i)}.mlp.{p}", LINEAR),
        Rule("norm", "norm", LAYER_NORM), Rule("head", "head", LINEAR),
    ]


def mobilenet_v1_groups(strides: Sequence[int]) -> List[Tuple[int, int]]:
    """timm's ``blocks.{group}.{index}`` of each separable layer: a new group at the first layer and at every stride 2."""
    positions, group, index = [], -1, 0
    for i, stride in enumerate(strides):
        if i == 0 or stride == 2:
            group, index = group + 1, 0
        positions.append((group, index))
        index += 1
    return positions


def timm_mobilenet_v1_rules(model, modules):
    positions = mobilenet_v1_groups([stride for _, stride in mobilenet.V1_LAYERS])
    block = lambda i: "blocks.{}.{}".format(*positions[i - 1])  # noqa: E731
    return [*unit("stem", "", conv="conv_stem", norm="bn1"),
            *unit(r"layer(\d+)/depthwise/depthwise", block, conv="conv_dw", norm="bn1"),
            *unit(r"layer(\d+)/pointwise", block, conv="conv_pw", norm="bn2"),
            Rule("head/fc", "classifier", LINEAR)]


# ----------------------------------------------------------------------------- twins


def _aux_heads(key: str) -> Callable[[Set[str]], Dict[str, Any]]:
    """Builds the model with auxiliary heads exactly when the checkpoint holds them (``key``)."""
    return lambda keys: {"aux_logits": key in keys}


def _add(names: Sequence[str], library: str, family: type, rules, classifier: str, first_conv: str,
         twin_name: str = "", **fields) -> None:
    for name in names:
        TWINS[name] = Twin(library, twin_name or name, family, rules, classifier, first_conv, **fields)


TWINS: Dict[str, Twin] = {}
_add(("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d", "resnext101_32x8d",
      "wide_resnet50_2", "wide_resnet101_2"), "torchvision", resnet.ResNet, resnet_rules, "fc.weight", "conv1.weight")
_add([f"vgg{depth}{bn}" for depth in vgg.VGG_LAYERS for bn in ("", "_bn")], "torchvision", vgg.VGG, vgg_rules,
     "classifier.6.weight", "features.0.weight")
_add(("alexnet",), "torchvision", alexnet.AlexNet, alexnet_rules, "classifier.6.weight", "features.0.weight")
_add(("googlenet",), "torchvision", inception.GoogLeNet, googlenet_rules, "fc.weight", "conv1.conv.weight",
     kwargs={"aux_logits": True, "init_weights": False}, from_keys=_aux_heads("aux1.fc2.weight"))
_add(("inception_v3",), "torchvision", inception.InceptionV3, inception_v3_rules, "fc.weight",
     "Conv2d_1a_3x3.conv.weight", kwargs={"aux_logits": True, "init_weights": False},
     from_keys=_aux_heads("AuxLogits.fc.weight"))
_add(("densenet121", "densenet169", "densenet201"), "torchvision", densenet.DenseNet, densenet_rules,
     "classifier.weight", "features.conv0.weight")
_add(("mobilenet_v2",), "torchvision", mobilenet.MobileNetV2, mobilenet_v2_rules, "classifier.1.weight",
     "features.0.0.weight")
_add(("mobilenet_v3_small", "mobilenet_v3_large"), "torchvision", mobilenet.MobileNetV3, mobilenet_v3_rules,
     "classifier.3.weight", "features.0.0.weight")
_add([f"efficientnet_{variant}" for variant in efficientnet.SCALING], "torchvision", efficientnet.EfficientNet,
     efficientnet_rules, "classifier.1.weight", "features.0.0.weight")
_add(("convnext_tiny", "convnext_small"), "torchvision", convnext.ConvNeXt, convnext_rules, "classifier.2.weight",
     "features.0.0.weight")
_add(("squeezenet1_1",), "torchvision", squeezenet.SqueezeNet, squeezenet_rules, "classifier.1.weight",
     "features.0.weight")
_add(("r3d_18",), "torchvision", video.VideoResNet, video_resnet_rules, "fc.weight", "stem.0.weight")
_add(("vit_tiny_patch16_224", "vit_small_patch16_224"), "timm", vit.VisionTransformer, vit_rules, "head.weight",
     "patch_embed.proj.weight")
_add(("mobilenet_v1",), "timm", mobilenet.MobileNetV1, timm_mobilenet_v1_rules, "classifier.weight", "conv_stem.weight",
     twin_name="mobilenetv1_100", overrides={"act": relu6})


def twin(name: str) -> Twin:
    """The twin of zoo model ``name``; a ``ValueError`` listing the models that have one otherwise."""
    if name not in TWINS:
        raise ValueError(f"model {name!r} has no torchvision or timm twin; models with one: {', '.join(sorted(TWINS))}")
    return TWINS[name]
