r"""The model zoo as a markdown table: every registered model with its input, smallest input side, classes,
parameters and multiply-adds (``cnn.analysis.summary``), for docs/models.md.

python -m experiments.zoo_table > /tmp/zoo.md

Nothing is allocated (shapes and counts come from tracing), so the whole zoo takes a few minutes on 2 cores.
"""

import argparse
import sys

import cnn.models
from cnn.analysis import summary

FAMILIES = {  # model name prefix -> the reference whose architecture (and counts) it follows
    "simple_cnn": "the seed's Keras network", "lenet5": "LeCun et al. 1998", "alexnet": "torchvision",
    "vgg16_cifar": "kuangliu/pytorch-cifar", "vgg": "torchvision", "resnet18_cifar": "kuangliu/pytorch-cifar",
    "resnet50_cifar": "kuangliu/pytorch-cifar", "preact_resnet18_cifar": "kuangliu/pytorch-cifar",
    "preact": "He et al. 2016 (identity mappings)", "resnet": "torchvision", "resnext": "torchvision",
    "wide_resnet": "torchvision", "googlenet": "torchvision", "inception": "torchvision",
    "densenet121_cifar": "kuangliu/pytorch-cifar", "densenet": "torchvision", "mobilenet_v1": "timm (Howard et al. 2017)",
    "mobilenet_v2_cifar": "kuangliu/pytorch-cifar", "mobilenet": "torchvision", "efficientnet": "torchvision",
    "convnext": "torchvision", "squeezenet": "torchvision", "vit": "timm", "r3d": "torchvision (video)",
    "cnn1d": "ours",
}


def reference(name: str) -> str:
    if name.endswith("_cifar") and name.startswith("resnet") and name not in FAMILIES:
        return "He et al. 2016, section 4.2"
    return next(ref for prefix, ref in FAMILIES.items() if name.startswith(prefix))


def main(argv) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="", help="comma-separated names (default: every registered model)")
    args = parser.parse_args(argv)
    names = args.models.split(",") if args.models else cnn.models.names()
    print("| name | follows | input | smallest side | classes | params | multiply-adds (G) |")
    print("|---|---|---|---:|---:|---:|---:|")
    for name in names:
        entry = cnn.models.entry(name)
        result = summary(cnn.models.create(name, num_classes=entry.default_num_classes), entry.input_shape)
        assert result.params == entry.params, (name, result.params, entry.params)
        shape = "x".join(map(str, entry.input_shape))
        print(f"| `{name}` | {reference(name)} | {shape} | {entry.min_size} | {entry.default_num_classes} | "
              f"{entry.params:,} | {result.macs / 1e9:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
