r"""Export a finished training run's best (or final) checkpoint to ONNX or StableHLO.

python -m experiments.export --workdir runs/mnist --format onnx [--output model.onnx] [--checkpoint best|final]

The file computes ``images uint8 [N, H, W, C] -> logits float32 [N, classes]`` with the run's evaluation
preprocessing inside, for any batch size N. docs/deploy.md runs it with ONNX Runtime.
"""

from __future__ import annotations

import argparse
import sys

from cnn.export.runs import CHECKPOINTS, FORMATS, export_run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="the run's workdir (config.json, checkpoints/, metrics.jsonl)")
    parser.add_argument("--format", required=True, choices=sorted(FORMATS))
    parser.add_argument("--output", default="", help="the file to write (default: WORKDIR/model_CHECKPOINT_stepN.EXT)")
    parser.add_argument("--checkpoint", default="best", choices=CHECKPOINTS)
    args = parser.parse_args(argv)
    try:
        path = export_run(args.workdir, format=args.format, output=args.output or None, checkpoint=args.checkpoint)
    except (FileNotFoundError, ValueError, NotImplementedError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
